package system_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/test/kit"
)

// Every bad frame gets an error frame with a clear code, and changes
// nothing: the state is the same afterwards and the connection still works.
func TestBadInput(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: 5 * time.Second})
	st := w.Store()
	a, b := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(b), protocol.StateAvailable, a)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	inv := w.Invite(a, b)
	w.WaitView(b, "incoming", func(v client.View) bool { return len(v.Incoming) == 1 })
	before := w.MustInvariants(st)

	raw := []struct {
		name  string
		mt    int
		frame string
		code  protocol.Code
	}{
		{"not JSON", websocket.TextMessage, `{"type":"invite",`, protocol.CodeBadJSON},
		{"JSON but not an object", websocket.TextMessage, `["invite"]`, protocol.CodeBadJSON},
		{"binary frame", websocket.BinaryMessage, `{"type":"ping"}`, protocol.CodeBadJSON},
		{"unknown type", websocket.TextMessage, `{"type":"teleport"}`, protocol.CodeUnknownType},
		{"no type", websocket.TextMessage, `{}`, protocol.CodeUnknownType},
		{"long ref", websocket.TextMessage, `{"type":"ping","ref":"` + strings.Repeat("r", 100) + `"}`, protocol.CodeBadRequest},
		{"join twice", websocket.TextMessage, `{"type":"join","name":"Again"}`, protocol.CodeAlreadyJoined},
		{"invite a bad ID", websocket.TextMessage, `{"type":"invite","to":"../../etc"}`, protocol.CodeBadRequest},
		{"invite nobody", websocket.TextMessage, `{"type":"invite"}`, protocol.CodeBadRequest},
		{"signal that is not an object", websocket.TextMessage, `{"type":"signal","chat":"abc","data":"hi"}`, protocol.CodeBadRequest},
		{"someone else's invitation", websocket.TextMessage, `{"type":"cancel","invitation":"` + inv.ID + `"}`, protocol.CodeNotParty},
	}
	for _, tc := range raw {
		t.Run(tc.name, func(t *testing.T) {
			if err := b.WriteRaw(tc.mt, []byte(tc.frame)); err != nil {
				t.Fatal(err)
			}
			f := w.Event(b, "error frame", func(f protocol.ServerFrame) bool { return f.Type == protocol.TypeError })
			if f.Code != tc.code || f.Message == "" {
				t.Fatalf("got %s %q, want code %s with a message", f.Code, f.Message, tc.code)
			}
		})
	}

	names := []struct {
		name, value string
	}{
		{"empty", ""},
		{"blank", "   \t "},
		{"too long", strings.Repeat("é", protocol.MaxNameRunes+1)},
		{"control character", "Ann\x07"},
		{"newline", "Ann\nBob"},
		{"invalid UTF-8", "Ann\xff"},
		{"zero-width space", "Ann\u200b"},
		{"right-to-left override", "\u202eAnn"},
		{"only a Hangul filler", "\u3164"},
		{"only blank Braille", "\u2800"},
	}
	for _, tc := range names {
		t.Run("name "+tc.name, func(t *testing.T) {
			c := w.Dial()
			_, err := c.Join(ctx, tc.value)
			kit.MustCode(t, err, protocol.CodeInvalidName)
			// The connection stays usable: a valid join works after.
			if _, err := c.Join(ctx, "Fixed"); err != nil {
				t.Fatalf("join after a refused name: %v", err)
			}
			_ = c.Close()
		})
	}
	t.Run("before join", func(t *testing.T) {
		c := w.Dial()
		_, err := c.Invite(ctx, kit.ID(a))
		kit.MustCode(t, err, protocol.CodeNotJoined)
		_, err = c.Resume(ctx, "nosuchuser", "short")
		kit.MustCode(t, err, protocol.CodeResumeFailed)
	})

	// Still connected and nothing changed.
	if _, err := b.Request(ctx, protocol.ClientFrame{Type: protocol.TypePing}); err != nil {
		t.Fatalf("ping after bad frames: %v", err)
	}
	after := w.MustInvariants(st)
	for uid, u := range before.Users {
		if after.Users[uid].State != u.State || after.Users[uid].Outgoing != u.Outgoing || len(after.Users[uid].Incoming) != len(u.Incoming) {
			t.Fatalf("user %s changed: %+v -> %+v", uid, u, after.Users[uid])
		}
	}
	if len(after.Invitations) != 1 || len(after.Chats) != 0 {
		t.Fatalf("invitations/chats changed: %d/%d", len(after.Invitations), len(after.Chats))
	}
}

// A frame above the limit is not read at all: the socket closes with 1009
// (message too big).
func TestHugeFrameClosesConnection(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second})
	c := w.Dial()
	_ = c.WriteRaw(websocket.TextMessage, []byte(strings.Repeat(" ", protocol.MaxFrameBytes+1)))
	ctx, cancel := w.WaitCtx()
	defer cancel()
	_, _ = c.WaitView(ctx, func(client.View) bool { return false })
	if code, closed := c.CloseCode(); !closed || code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d (closed %t), want %d", code, closed, websocket.CloseMessageTooBig)
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second})
	c := w.Dial()
	for i := range protocol.FrameBurst + 10 {
		frame := fmt.Sprintf(`{"type":"ping","ref":"p%d"}`, i)
		if err := c.WriteRaw(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	f := w.Event(c, "rate limit error", func(f protocol.ServerFrame) bool { return f.Type == protocol.TypeError })
	// The refusal answers the very frame it refuses.
	if f.Code != protocol.CodeRateLimited || f.Ref == "" {
		t.Fatalf("got %+v, want rate_limited answering a ref", f)
	}
}

// A socket that goes on sending far over its rate limit is closed (1008,
// rate_limited) after one refusal, not answered frame after frame; the
// users beside it notice nothing.
func TestRateLimitClosesAFlood(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second})
	a, b := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(b), protocol.StateAvailable, a)
	flood := w.Dial()
	flood.RecordFrames()
	const frames = 4 * protocol.FrameBurst
	var batch []byte
	for i := range frames {
		batch = fmt.Appendf(batch[:0], `{"type":"ping","ref":"p%d"}`, i)
		if err := flood.WriteRaw(websocket.TextMessage, batch); err != nil {
			break // closed under us: what the test waits for
		}
	}
	ctx, cancel := w.WaitCtx()
	defer cancel()
	_, _ = flood.WaitView(ctx, func(client.View) bool { return false })
	code, closed := flood.CloseCode()
	if !closed || code != websocket.ClosePolicyViolation {
		t.Fatalf("close code %d (closed %t), want %d", code, closed, websocket.ClosePolicyViolation)
	}
	var pongs, limited int
	for _, data := range flood.Frames() {
		var f protocol.ServerFrame
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatal(err)
		}
		switch {
		case f.Type == protocol.TypePong:
			pongs++
		case f.Type == protocol.TypeError && f.Code == protocol.CodeRateLimited:
			limited++
		}
	}
	if pongs > protocol.FrameBurst+protocol.FramesPerSecond || limited < 1 || pongs+limited >= frames {
		t.Fatalf("%d pongs and %d rate_limited errors for %d frames: the flood was answered", pongs, limited, frames)
	}
	// Everyone else is served as before.
	w.Invite(a, b)
	w.Sees(kit.ID(a), protocol.StateInviting, b)
}

// A socket that never joins is closed when its join deadline passes, even
// though it answers every ping.
func TestJoinDeadline(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second, JoinTimeout: time.Second, Ping: time.Second})
	idle := w.Dial()
	ctx, cancel := w.WaitCtx()
	defer cancel()
	_, _ = idle.WaitView(ctx, func(client.View) bool { return false })
	if code, closed := idle.CloseCode(); !closed || code != websocket.ClosePolicyViolation {
		t.Fatalf("close code %d (closed %t), want %d", code, closed, websocket.ClosePolicyViolation)
	}
	if reason := idle.CloseReason(); reason != string(protocol.CodeJoinTimeout) {
		t.Fatalf("close reason %q, want %q", reason, protocol.CodeJoinTimeout)
	}
	// A connection that joined in time stays, past the deadline.
	ann := w.Dial()
	if _, err := ann.Join(ctx, "Ann"); err != nil {
		t.Fatal(err)
	}
	done := w.Dial()
	_, _ = done.WaitView(ctx, func(client.View) bool { return false }) // one deadline later
	if _, closed := ann.CloseCode(); closed {
		t.Fatal("a joined connection was closed by the join deadline")
	}
	if _, err := ann.Request(ctx, protocol.ClientFrame{Type: protocol.TypePing}); err != nil {
		t.Fatalf("ping after the deadline: %v", err)
	}
}

// WebSockets from a foreign page are refused before the upgrade.
func TestForeignOriginRefused(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second})
	url := "ws" + strings.TrimPrefix(w.Sys.EdgeURLs[0], "http") + "/ws"
	ctx, cancel := context.WithTimeout(w.Ctx, kit.WaitFor)
	defer cancel()
	_, resp, err := websocket.DefaultDialer.DialContext(ctx, url, http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: err %v, response %+v", err, resp)
	}
	own, resp, err := websocket.DefaultDialer.DialContext(ctx, url, http.Header{"Origin": {w.Sys.EdgeURLs[0]}})
	if err != nil {
		t.Fatalf("own origin refused: %v (%+v)", err, resp)
	}
	_ = own.Close()
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second})
	for _, path := range []string{"/healthz", "/readyz", "/", "/app.js"} {
		deadline := time.Now().Add(kit.WaitFor)
		for {
			resp, err := http.Get(w.Sys.EdgeURLs[0] + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: status %d", path, resp.StatusCode)
			}
			time.Sleep(20 * time.Millisecond) // polling a readiness probe, as an orchestrator does
		}
	}
}

// Sockets that end just as their join deadline passes, or while a join is
// under way, leave the edge serving: the deadline never touches a socket
// whose connection has ended (once, it did, and the edge crashed).
func TestJoinDeadlineRacesTheSocketsEnd(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second, JoinTimeout: 20 * time.Millisecond})
	ctx, cancel := w.WaitCtx()
	defer cancel()
	done := make(chan struct{})
	for i := range 60 {
		go func() {
			defer func() { done <- struct{}{} }()
			c, err := client.Dial(ctx, w.Sys.EdgeURLs[0])
			if err != nil {
				return
			}
			if i%2 == 0 {
				go func() { _, _ = c.Join(ctx, "Racer") }()
			}
			time.Sleep(time.Duration(i%40) * time.Millisecond) // ends around the deadline
			if i%3 == 0 {
				_ = c.Drop()
			} else {
				_ = c.Close()
			}
		}()
	}
	for range 60 {
		<-done
	}
	time.Sleep(100 * time.Millisecond) // past every deadline armed
	ann := w.Dial()
	if _, err := ann.Join(ctx, "Ann"); err != nil {
		t.Fatalf("the edge after the race: %v", err)
	}
}
