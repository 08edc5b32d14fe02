package system_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/cmd/buddytok/allinone"
	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/opentok"
	"github.com/buddytok/buddytok/pkg/opentok/opentoktest"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/requestid"
	"github.com/buddytok/buddytok/services/tokens/tokens"
	"github.com/buddytok/buddytok/test/kit"
)

const (
	otKey    = "46001234"
	otSecret = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
)

// syncBuffer collects log output written from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// logLine returns the JSON log line of service whose message is msg.
func logLine(t *testing.T, logs, service, msg string) map[string]any {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["service"] == service && m["msg"] == msg {
			return m
		}
	}
	t.Fatalf("no %s log line %q in:\n%s", service, msg, logs)
	return nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func openTokProvider(t *testing.T, cfg opentok.Config) tokens.Provider {
	t.Helper()
	c, err := opentok.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tokens.NewOpenTok(c)
}

// recordNATS keeps every message that crosses the NATS server.
func recordNATS(t *testing.T, sys *allinone.System) func() [][]byte {
	t.Helper()
	nc, err := sys.Connect("test-record")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var mu sync.Mutex
	var msgs [][]byte
	if _, err := nc.Subscribe(">", func(m *nats.Msg) {
		var b bytes.Buffer
		b.WriteString(m.Subject)
		for k, vs := range m.Header {
			b.WriteString(k + ":" + strings.Join(vs, ","))
		}
		b.Write(m.Data)
		mu.Lock()
		msgs = append(msgs, b.Bytes())
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() [][]byte {
		_ = nc.Flush()
		mu.Lock()
		defer mu.Unlock()
		return append([][]byte(nil), msgs...)
	}
}

func TestOpenTokChat(t *testing.T) {
	t.Parallel()
	for _, typ := range []opentok.TokenType{opentok.TokenT1, opentok.TokenJWT} {
		t.Run(string(typ), func(t *testing.T) {
			t.Parallel()
			srv := opentoktest.NewServer(otKey, otSecret)
			defer srv.Close()
			srv.FailNext(1) // the first create fails with 500; the retry succeeds
			var logs syncBuffer
			w := kit.Start(t, replicated, kit.Settings{
				Grace: 5 * time.Second, Logs: &logs,
				Video: openTokProvider(t, opentok.Config{APIKey: otKey, APISecret: otSecret, APIURL: srv.URL, TokenType: typ}),
			})
			natsSeen := recordNATS(t, w.Sys)
			ann, bob, cy := w.Join("Ann"), w.Join("Bob \"B\" Doe"), w.Join("Cy")
			for _, c := range []*client.Client{ann, bob, cy} {
				c.RecordFrames()
			}
			w.Sees(kit.ID(cy), protocol.StateAvailable, ann, bob)
			if ann.View().Mode != protocol.ModeOpenTok {
				t.Fatalf("welcome mode %q", ann.View().Mode)
			}
			ctx, cancel := w.WaitCtx()
			defer cancel()
			_, chat := w.Chat(ann, bob)
			if chat.Mode != protocol.ModeOpenTok || srv.Sessions() != 1 {
				t.Fatalf("chat %+v, %d sessions created", chat, srv.Sessions())
			}
			var session string
			tokensSeen := map[string]bool{}
			for _, p := range []struct {
				c    *client.Client
				name string
			}{{ann, "Ann"}, {bob, `Bob "B" Doe`}} {
				cred, err := p.c.Credentials(ctx, chat.ID)
				if err != nil {
					t.Fatal(err)
				}
				if cred.Mode != protocol.ModeOpenTok || cred.APIKey != otKey || cred.Token == "" {
					t.Fatalf("credentials %+v", cred)
				}
				if session == "" {
					session = cred.SessionID
				}
				if cred.SessionID != session || opentok.ValidateSessionOwner(session, otKey) != nil {
					t.Fatalf("session %q, want the same valid new session for both", cred.SessionID)
				}
				tokensSeen[cred.Token] = true
				fields := verifyToken(t, typ, cred.Token)
				var data map[string]string
				if err := json.Unmarshal([]byte(fields["connection_data"]), &data); err != nil || data["name"] != p.name {
					t.Fatalf("connection_data %q, want the name %q", fields["connection_data"], p.name)
				}
				if fields["session_id"] != session || fields["role"] != "publisher" {
					t.Fatalf("token fields %v", fields)
				}
			}
			if len(tokensSeen) != 2 {
				t.Fatal("both parties got the same token")
			}
			_, err := cy.Credentials(ctx, chat.ID)
			kit.MustCode(t, err, protocol.CodeNotParty) // tokens only for the two parties

			// Nothing the system emitted during the flow carries the secret:
			// not a frame, a NATS message, a log line or an HTTP answer.
			resp, err := http.Get(w.Sys.EdgeURLs[0] + "/api/users")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			emitted := map[string][][]byte{"NATS": natsSeen(), "HTTP": {body}, "logs": {[]byte(logs.String())}}
			for _, c := range []*client.Client{ann, bob, cy} {
				emitted["WebSocket"] = append(emitted["WebSocket"], c.Frames()...)
			}
			for where, msgs := range emitted {
				if len(msgs) == 0 {
					t.Fatalf("nothing recorded from %s: the scan would prove nothing", where)
				}
				for _, m := range msgs {
					if bytes.Contains(bytes.ToLower(m), []byte(otSecret)) {
						t.Fatalf("the API secret appears in %s: %.200s", where, m)
					}
				}
			}
		})
	}
}

// verifyToken checks a client token's signature under the secret and
// returns its fields.
func verifyToken(t *testing.T, typ opentok.TokenType, token string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if typ == opentok.TokenT1 {
		t1, err := opentoktest.DecodeT1(token, otSecret)
		if err != nil || t1.PartnerID != otKey {
			t.Fatalf("T1 token does not verify: %v (%+v)", err, t1)
		}
		for k := range t1.Data {
			out[k] = t1.Data.Get(k)
		}
		return out
	}
	claims, err := opentok.VerifyHS256(otSecret, token)
	if err != nil || claims["iss"] != otKey || claims["exp"] == nil {
		t.Fatalf("JWT does not verify: %v (%v)", err, claims)
	}
	for k, v := range claims {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}

// When OpenTok refuses or cannot be reached, the accept fails cleanly: the
// accepter gets video_failed, both are told the invitation failed and are
// available again, and no half-made chat is left.
func TestOpenTokFailureFailsAcceptCleanly(t *testing.T) {
	t.Parallel()
	closedURL := opentoktest.RefusedURL(t)
	tests := []struct {
		name  string
		setup func(*opentoktest.Server) opentok.Config
	}{
		{"bad credentials (403)", func(s *opentoktest.Server) opentok.Config {
			return opentok.Config{APIKey: otKey, APISecret: "ffffffffffffffffffffffffffffffffffffffff", APIURL: s.URL}
		}},
		{"connection refused", func(*opentoktest.Server) opentok.Config {
			return opentok.Config{APIKey: otKey, APISecret: otSecret, APIURL: closedURL, Retries: 1}
		}},
		{"timeout", func(s *opentoktest.Server) opentok.Config {
			s.Delay(3 * time.Second)
			return opentok.Config{APIKey: otKey, APISecret: otSecret, APIURL: s.URL, Timeout: 200 * time.Millisecond, Retries: 1}
		}},
		{"always 500", func(s *opentoktest.Server) opentok.Config {
			s.FailNext(1000)
			return opentok.Config{APIKey: otKey, APISecret: otSecret, APIURL: s.URL}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := opentoktest.NewServer(otKey, otSecret)
			defer srv.Close()
			var logs syncBuffer
			w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: 5 * time.Second, Logs: &logs, Video: openTokProvider(t, tc.setup(srv))})
			st := w.Store()
			ann, bob := w.Join("Ann"), w.Join("Bob")
			w.Sees(kit.ID(bob), protocol.StateAvailable, ann)
			ctx, cancel := w.WaitCtx()
			defer cancel()
			inv := w.Invite(ann, bob)
			_, err := bob.Accept(ctx, inv.ID)
			kit.MustCode(t, err, protocol.CodeVideoFailed)
			if pe := protocol.AsError(err); !strings.Contains(pe.Message, "OpenTok") {
				t.Fatalf("message %q does not say why", pe.Message)
			}
			for _, c := range []*client.Client{ann, bob} {
				w.Event(c, "told the chat failed", kit.IsEnded(inv.ID, protocol.ReasonFailed))
				w.WaitView(c, "available, no chat", func(v client.View) bool {
					return v.Chat == nil && v.Outgoing == nil && len(v.Incoming) == 0 &&
						v.Users[kit.ID(ann)].State == protocol.StateAvailable && v.Users[kit.ID(bob)].State == protocol.StateAvailable
				})
			}
			snap := w.MustInvariants(st)
			if len(snap.Chats) != 0 || len(snap.Invitations) != 0 {
				t.Fatalf("half-made state left: %d chats, %d invitations", len(snap.Chats), len(snap.Invitations))
			}
			// The accept's request ID went from the edge through invites
			// to tokens: both services' lines about it name it.
			tokensLine := logLine(t, logs.String(), "tokens", "video session failed")
			invitesLine := logLine(t, logs.String(), "invites", "video session failed; ending the invitation")
			if id := tokensLine[requestid.Attr]; id == nil || id != invitesLine[requestid.Attr] {
				t.Errorf("request IDs: tokens %v, invites %v; want the same one", id, invitesLine[requestid.Attr])
			}
		})
	}
}

// A request may take longer than the silence an edge allows a socket (a
// slow video provider, a service restarting): the socket must outlive it,
// since the client's pongs are only read once the request is answered.
func TestSlowRequestKeepsTheSocket(t *testing.T) {
	t.Parallel()
	srv := opentoktest.NewServer(otKey, otSecret)
	defer srv.Close()
	const ping = 300 * time.Millisecond // silence allowed: 2 × ping + 5 s
	srv.Delay(2*ping + 5*time.Second + time.Second)
	video := openTokProvider(t, opentok.Config{APIKey: otKey, APISecret: otSecret, APIURL: srv.URL, Timeout: time.Minute})
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: 5 * time.Second, Video: video, Ping: ping})
	ann, bob := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(bob), protocol.StateAvailable, ann)
	inv := w.Invite(ann, bob)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	if _, err := bob.Accept(ctx, inv.ID); err != nil {
		t.Fatalf("slow accept: %v", err)
	}
	// Another request on the same socket proves it is still open.
	w.WaitView(bob, "in the chat", func(v client.View) bool { return v.Chat != nil })
	if _, err := bob.Credentials(ctx, bob.View().Chat.ID); err != nil {
		t.Fatalf("after the slow accept: %v", err)
	}
}
