package edge

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
	"github.com/buddytok/buddytok/services/presence/presence"
)

// startEdge runs an edge, connected as the edge role, on a fresh embedded
// NATS with presence behind it (which stores edges' leases), until the
// test ends or stop is called (which returns Run's error). nc is an admin
// connection, for checks.
func startEdge(t *testing.T, cfg Config) (e *Edge, nc *nats.Conn, stop func() error) {
	t.Helper()
	roles := natstest.StartRoles(t)
	natstest.Run(t, natstest.NewReplica(t, roles, presence.Program, presence.Config{LeaseTTL: cfg.LeaseTTL}))
	nc = roles.Admin()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg.Listen = "127.0.0.1:0"
	e, err := New(ctx, roles.As(permissions.Edge), cfg, slog.New(slog.DiscardHandler), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	runCtx, end := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(runCtx) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		end()
		return <-done
	}
	t.Cleanup(func() { _ = stop() })
	return e, nc, stop
}

func get(t *testing.T, e *Edge, path string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+e.Addr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitReady waits until the edge's /readyz answers 200: NATS connected,
// the buddy list read, the lease held.
func waitReady(t *testing.T, e *Edge) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, body := get(t, e, "/readyz", nil)
		if status == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %s", status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An edge holds its lease while it runs, is ready once it has read the
// state, and drops its lease when it stops: presence then knows at once
// that none of its users is served any more.
func TestLeaseLifetime(t *testing.T) {
	t.Parallel()
	e, nc, stop := startEdge(t, Config{LeaseTTL: 2 * time.Second})
	waitReady(t, e)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	leases, err := js.KeyValue(ctx, state.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	first, err := leases.Get(ctx, e.ID())
	if err != nil {
		t.Fatalf("the running edge's lease: %v", err)
	}
	// Renewed every third of the TTL: a later revision comes.
	for deadline := time.Now().Add(5 * time.Second); ; {
		cur, err := leases.Get(ctx, e.ID())
		if err == nil && cur.Revision() > first.Revision() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lease was not renewed (revision %d): %v", first.Revision(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := leases.Get(ctx, e.ID()); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the stopped edge's lease: %v, want it gone", err)
	}
}

// The edge's routes: its health, an empty user list, the page with its
// security headers, no metrics, and the upgrade gate's refusals before any
// upgrade.
func TestRoutes(t *testing.T) {
	t.Parallel()
	e, _, _ := startEdge(t, Config{LeaseTTL: 2 * time.Second, AllowedOrigins: []string{"https://app.example"}})
	waitReady(t, e)
	tests := []struct {
		name     string
		path     string
		header   http.Header
		status   int
		contains string
	}{
		{"health", "/healthz", nil, http.StatusOK, "ok"},
		{"ready", "/readyz", nil, http.StatusOK, `"lease":true`},
		{"no users yet", "/api/users", nil, http.StatusOK, "[]"},
		{"the page", "/", nil, http.StatusOK, "<html"},
		{"no metrics on the users' port (OPS_ADDR serves them)", "/metrics", nil, http.StatusNotFound, ""},
		{"/ws without an upgrade", "/ws", nil, http.StatusUpgradeRequired, ""},
		{"an upgrade from another site", "/ws", http.Header{
			"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
			"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Origin": {"https://evil.example"},
		}, http.StatusForbidden, string(protocol.CodeOriginRefused)},
	}
	for _, tc := range tests {
		status, body := get(t, e, tc.path, tc.header)
		if status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s: GET %s = %d %.80q, want %d with %q", tc.name, tc.path, status, body, tc.status, tc.contains)
		}
	}
	resp, err := http.Get("http://" + e.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, h := range []string{"Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("the page has no %s header", h)
		}
	}
}

// A WebSocket upgrade's 101 carries none of the page's security headers
// (fasthttp keeps them for the socket's life), and a refused upgrade's
// JSON is still not to be sniffed.
func TestUpgradeHeaders(t *testing.T) {
	t.Parallel()
	e, _, _ := startEdge(t, Config{LeaseTTL: 2 * time.Second, AllowedOrigins: []string{"https://app.example"}})
	waitReady(t, e)
	upgrade := func(origin string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+e.Addr().String()+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
			"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Origin": {origin}}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	ok := upgrade("https://app.example")
	if ok.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s, want 101", ok.Status)
	}
	for _, h := range []string{"Content-Security-Policy", "Permissions-Policy", "X-Frame-Options"} {
		if v := ok.Header.Get(h); v != "" {
			t.Errorf("the 101 carries %s: %q", h, v)
		}
	}
	refused := upgrade("https://evil.example")
	if refused.StatusCode != http.StatusForbidden || refused.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("a refused upgrade: %s with X-Content-Type-Options %q, want 403 with nosniff",
			refused.Status, refused.Header.Get("X-Content-Type-Options"))
	}
}

// An open socket is closed with 1001 server_shutdown when the edge stops,
// and Run returns once it has ended.
func TestShutdownClosesSockets(t *testing.T) {
	t.Parallel()
	e, _, stop := startEdge(t, Config{LeaseTTL: 2 * time.Second})
	waitReady(t, e)
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+e.Addr().String()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	// A ping answered: the edge has taken the socket.
	if err := ws.WriteJSON(protocol.ClientFrame{Type: protocol.TypePing, Ref: "p"}); err != nil {
		t.Fatal(err)
	}
	var pong protocol.ServerFrame
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, data, err := ws.ReadMessage(); err != nil || json.Unmarshal(data, &pong) != nil || pong.Type != protocol.TypePong {
		t.Fatalf("ping: %s %v", data, err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	_, _, err = ws.ReadMessage()
	ce, ok := errors.AsType[*websocket.CloseError](err)
	if !ok || ce.Code != websocket.CloseGoingAway || ce.Text != string(protocol.CodeServerShutdown) {
		t.Fatalf("read after the edge stopped: %v, want close 1001 server_shutdown", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
