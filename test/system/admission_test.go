package system_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/services/edge/admission"
	"github.com/buddytok/buddytok/test/kit"
)

// upgrade opens a WebSocket to the world's first edge as the browser at
// forwardedFor (through a trusted proxy, if the edge trusts loopback), and
// returns the socket, or the status and error code of the refusal.
func upgrade(t *testing.T, w *kit.World, forwardedFor string) (*websocket.Conn, int, protocol.Code) {
	t.Helper()
	ctx, cancel := w.WaitCtx()
	defer cancel()
	h := http.Header{}
	if forwardedFor != "" {
		h.Set("X-Forwarded-For", forwardedFor)
	}
	url := "ws" + strings.TrimPrefix(w.Sys.EdgeURLs[0], "http") + "/ws"
	ws, resp, err := websocket.DefaultDialer.DialContext(ctx, url, h)
	if err == nil {
		t.Cleanup(func() { _ = ws.Close() })
		// The edge counts a connection once its handler runs, a moment
		// after the upgrade: a ping answered means it has. (One that came
		// in between is refused then, with a close instead of a 429.)
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping","ref":"admitted"}`)); err != nil {
			t.Fatal(err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(kit.WaitFor))
		if _, _, err := ws.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return nil, http.StatusSwitchingProtocols, protocol.Code(ce.Text)
			}
			t.Fatalf("waiting for the edge to take the connection: %v", err)
		}
		_ = ws.SetReadDeadline(time.Time{})
		return ws, http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Code protocol.Code `json:"code"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("a refusal (%d %s) without Retry-After", resp.StatusCode, body.Code)
	}
	return nil, resp.StatusCode, body.Code
}

// Connections per client address: the address over its limit gets a few
// connections on probation (they may only resume a user:
// TestReturningUserGetsPastAFullAddress), then is refused before the
// upgrade (429 too_many_connections); one that left makes room, and other
// addresses, counted by what the trusted proxy forwarded, are not
// affected.
func TestConnectionsPerAddress(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second, Admission: &admission.Limits{
		ConnsPerAddr: 3, JoinRatePerAddr: -1, TrustedProxies: loopback,
	}})
	var held []*websocket.Conn
	for range 3 {
		ws, status, code := upgrade(t, w, "198.51.100.1")
		if ws == nil {
			t.Fatalf("connection within the limit refused: %d %s", status, code)
		}
		held = append(held, ws)
	}
	for i := range 8 {
		if ws, status, code := upgrade(t, w, "198.51.100.1"); ws == nil {
			t.Fatalf("connection %d over the limit, on probation, refused: %d %s", i+1, status, code)
		}
	}
	if _, status, code := upgrade(t, w, "198.51.100.1"); status != http.StatusTooManyRequests || code != protocol.CodeTooManyConns {
		t.Fatalf("a connection past the probation places: %d %s, want 429 %s", status, code, protocol.CodeTooManyConns)
	}
	if ws, status, code := upgrade(t, w, "198.51.100.2"); ws == nil {
		t.Fatalf("another address refused: %d %s", status, code)
	}
	// A connection that ends frees its place (the edge counts it gone
	// once its handler has returned).
	_ = held[0].Close()
	deadline := time.Now().Add(kit.WaitFor)
	for {
		ws, status, code := upgrade(t, w, "198.51.100.1")
		if ws != nil {
			break
		}
		if status != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("after one left: %d %s", status, code)
		}
		time.Sleep(20 * time.Millisecond) // waiting for the edge to see the close
	}
	// Everyone else is served: a user joins and sees another.
	a, b := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(b), protocol.StateAvailable, a)
}

// Without a trusted proxy, X-Forwarded-For is not believed: every
// connection counts for the peer.
func TestForwardedForIgnoredWithoutTrustedProxy(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second, Admission: &admission.Limits{ConnsPerAddr: 2, JoinRatePerAddr: -1}})
	// Two connections, then the places on probation (TestConnectionsPerAddress),
	// each under another forged address: all count for loopback.
	for i := range 2 + 8 {
		upgrade(t, w, fmt.Sprintf("198.51.100.%d", i+1))
	}
	if _, status, code := upgrade(t, w, "198.51.100.99"); status != http.StatusTooManyRequests || code != protocol.CodeTooManyConns {
		t.Fatalf("a connection from loopback under yet another forged address: %d %s, want 429", status, code)
	}
}

// A full edge refuses a new connection with 503 edge_full before the
// upgrade, so that a load balancer can take it elsewhere.
func TestEdgeFull(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second, Admission: &admission.Limits{
		ConnsPerAddr: -1, JoinRatePerAddr: -1, MaxSockets: 2,
	}})
	a, b := w.Join("Ann"), w.Join("Bob")
	if _, status, code := upgrade(t, w, ""); status != http.StatusServiceUnavailable || code != protocol.CodeEdgeFull {
		t.Fatalf("third socket on a full edge: %d %s, want 503 %s", status, code, protocol.CodeEdgeFull)
	}
	w.Invite(a, b)
	w.Sees(kit.ID(a), protocol.StateInviting, b)
}

// Joins per address: a burst is let through, more are refused with
// rate_limited (nothing is stored for them), and the connection may join
// once the limit allows it.
func TestJoinsPerAddress(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second, Admission: &admission.Limits{
		ConnsPerAddr: -1, JoinRatePerAddr: 2, JoinBurstPerAddr: 3,
	}})
	ctx, cancel := w.WaitCtx()
	defer cancel()
	st := w.Store()
	for i := range 3 {
		if _, err := w.Dial().Join(ctx, "User"+string(rune('A'+i))); err != nil {
			t.Fatalf("join %d within the burst: %v", i, err)
		}
	}
	late := w.Dial()
	_, err := late.Join(ctx, "Late")
	kit.MustCode(t, err, protocol.CodeRateLimited)
	if snap := w.MustInvariants(st); len(snap.Users) != 3 {
		t.Fatalf("%d users stored, want the 3 let in", len(snap.Users))
	}
	deadline := time.Now().Add(kit.WaitFor)
	for {
		if _, err = late.Join(ctx, "Late"); err == nil {
			break
		}
		if protocol.CodeOf(err) != protocol.CodeRateLimited || time.Now().After(deadline) {
			t.Fatalf("join once the limit allows: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // the limit refills at 2 a second
	}
}

// Failed resumes from one address are throttled: after a burst of them the
// next is refused with rate_limited without asking presence, while a
// resume with the right secret from another connection still works.
func TestFailedResumesThrottled(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: 30 * time.Second, Admission: &admission.Limits{
		ConnsPerAddr: -1, JoinRatePerAddr: -1, TrustedProxies: loopback,
	}})
	ctx, cancel := w.WaitCtx()
	defer cancel()
	ann := w.Join("Ann")
	welcome := ann.View()
	guesser := dialFrom(t, w, "198.51.100.9")
	var refused protocol.Code
	for i := range 20 {
		_, err := guesser.Resume(ctx, welcome.Me.ID, protocol.NewSecret())
		if code := protocol.CodeOf(err); code != protocol.CodeResumeFailed {
			refused = code
			if i < 5 {
				t.Fatalf("resume %d refused with %s before a burst of failures", i, code)
			}
			break
		}
	}
	if refused != protocol.CodeRateLimited {
		t.Fatalf("20 wrong secrets, never throttled (last code %q)", refused)
	}
	// Another address is not throttled, and the right secret resumes.
	other := dialFrom(t, w, "198.51.100.10")
	if _, err := other.Resume(ctx, welcome.Me.ID, protocol.NewSecret()); protocol.CodeOf(err) != protocol.CodeResumeFailed {
		t.Fatalf("a wrong secret from another address: %v, want resume_failed", err)
	}
	if _, err := dialFrom(t, w, "198.51.100.11").Resume(ctx, welcome.Me.ID, welcome.Secret); err != nil {
		t.Fatalf("the right secret: %v", err)
	}
	// The guesser's address is still throttled, but the right secret from
	// it resumes: the guesser's failures do not lock out a victim behind
	// the same address (a NAT), who would otherwise lose its session.
	if _, err := dialFrom(t, w, "198.51.100.9").Resume(ctx, welcome.Me.ID, protocol.NewSecret()); protocol.CodeOf(err) != protocol.CodeRateLimited {
		t.Fatalf("a wrong secret from the guesser's address: %v, want rate_limited", err)
	}
	if _, err := dialFrom(t, w, "198.51.100.9").Resume(ctx, welcome.Me.ID, welcome.Secret); err != nil {
		t.Fatalf("the right secret from the guesser's address: %v, want it resumed", err)
	}
}

// loopback trusts the test's own connections as a proxy's.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// dialFrom opens a tab on the world's first edge as the browser at addr,
// behind a proxy the edge trusts.
func dialFrom(t *testing.T, w *kit.World, addr string) *client.Client {
	t.Helper()
	ctx, cancel := w.WaitCtx()
	defer cancel()
	c, err := client.DialHeader(ctx, w.Sys.EdgeURLs[0], http.Header{"X-Forwarded-For": {addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// A socket the edge closed for abuse (a flood over the rate limit, a frame
// over the read limit) cuts its address off for a while: its next
// connections are refused before the upgrade (429 rate_limited, with a
// Retry-After), until the penalty is served; other addresses, and the
// address's sockets already open, are not affected.
func TestAbuserIsCutOff(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second, Admission: &admission.Limits{
		ConnsPerAddr: -1, JoinRatePerAddr: -1, TrustedProxies: loopback, PenaltyMax: time.Minute,
	}})
	neighbour, _, _ := upgrade(t, w, "198.51.100.1") // opened before the abuse
	for _, tc := range []struct {
		name  string
		abuse func(ws *websocket.Conn)
		code  int
		// closedFirst: the close reaches the abuser a moment before the
		// penalty is in place (the WebSocket library itself closes a
		// frame over the read limit, before the edge hears of it).
		closedFirst bool
	}{
		{"a flood", func(ws *websocket.Conn) {
			for ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)) == nil {
			}
		}, websocket.ClosePolicyViolation, false},
		{"a huge frame", func(ws *websocket.Conn) {
			_ = ws.WriteMessage(websocket.TextMessage, make([]byte, 2*protocol.MaxFrameBytes))
		}, websocket.CloseMessageTooBig, true},
	} {
		ws, status, code := upgrade(t, w, "198.51.100.1")
		if ws == nil {
			t.Fatalf("%s: the abuser's connection was refused before any abuse: %d %s", tc.name, status, code)
		}
		tc.abuse(ws)
		_ = ws.SetReadDeadline(time.Now().Add(kit.WaitFor))
		var err error
		for err == nil {
			_, _, err = ws.ReadMessage()
		}
		if ce, ok := errors.AsType[*websocket.CloseError](err); !ok || ce.Code != tc.code {
			t.Fatalf("%s: the socket ended with %v, want close %d", tc.name, err, tc.code)
		}
		refusedBy := time.Now().Add(kit.WaitFor)
		for {
			next, status, code := upgrade(t, w, "198.51.100.1")
			if next != nil && tc.closedFirst && time.Now().Before(refusedBy) {
				_ = next.Close()
				time.Sleep(10 * time.Millisecond) // the edge about to penalise the address
				continue
			}
			if status != http.StatusTooManyRequests || code != protocol.CodeRateLimited {
				t.Fatalf("%s: the abuser's next connection: %d %s, want 429 %s", tc.name, status, code, protocol.CodeRateLimited)
			}
			break
		}
		if ws, status, code := upgrade(t, w, "198.51.100.2"); ws == nil {
			t.Fatalf("%s: another address refused: %d %s", tc.name, status, code)
		}
		// The first penalty is a second: then the address may connect.
		deadline := time.Now().Add(kit.WaitFor)
		for {
			if ws, _, _ := upgrade(t, w, "198.51.100.1"); ws != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the address is still refused", tc.name)
			}
			time.Sleep(100 * time.Millisecond) // serving the penalty
		}
	}
	if err := neighbour.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping","ref":"still"}`)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := neighbour.ReadMessage(); err != nil {
		t.Fatalf("a socket of the abuser's address opened before the abuse: %v", err)
	}
}

// An address that holds all the connections it may (an abuser behind the
// same NAT or IPv6 /64 as its victim) does not keep a returning user from
// its session: a connection over the cap is let in on probation, and may
// resume a user whose secret it proves. It may not join: a newcomer there
// is refused, as every connection over the cap was before.
func TestReturningUserGetsPastAFullAddress(t *testing.T) {
	t.Parallel()
	const shared = "198.51.100.20"
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: 30 * time.Second, Admission: &admission.Limits{
		ConnsPerAddr: 4, JoinRatePerAddr: -1, TrustedProxies: loopback,
	}})
	ctx, cancel := w.WaitCtx()
	defer cancel()
	victim := dialFrom(t, w, shared)
	if _, err := victim.Join(ctx, "Victim"); err != nil {
		t.Fatal(err)
	}
	me := victim.View()
	_ = victim.Close() // a reload, a lost network: the page comes back
	for range 4 {      // meanwhile the abuser holds every connection the address may
		dialFrom(t, w, shared)
	}
	dial := func() *client.Client {
		t.Helper()
		c, err := client.DialHeader(ctx, w.Sys.EdgeURLs[0], http.Header{"X-Forwarded-For": {shared}})
		if err != nil {
			t.Fatalf("a connection over the address's cap: %v, want it let in on probation", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	back := dial()
	if _, err := back.Resume(ctx, me.Me.ID, me.Secret); err != nil {
		t.Fatalf("the victim's resume from the full address: %v", err)
	}
	if _, err := dial().Join(ctx, "Newcomer"); protocol.CodeOf(err) != protocol.CodeTooManyConns {
		t.Fatalf("a join over the address's cap: %v, want too_many_connections", err)
	}
}
