package session

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/services/edge/admission"
)

// testSession is a session of ws on a server with the default limits and
// nothing behind it.
func testSession(ws *websocket.Conn) *Session {
	srv := NewServer(Deps{
		Log: slog.New(slog.DiscardHandler), Metrics: metrics.New(), Gate: admission.New(admission.Limits{}),
		Config: Config{SendQueueBytes: protocol.SendQueueBytes, FramesPerSecond: protocol.FramesPerSecond, FrameBurst: protocol.FrameBurst},
	})
	return srv.New(ws, netip.Prefix{}, nil)
}

// serveSessions starts a server that makes each socket upgraded there a
// test session and hands it to serve, and returns the URL to dial.
func serveSessions(t *testing.T, serve func(c *Session)) string {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer ws.Close()
		serve(testSession(ws))
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// Every frame a browser may send has its handler, and no handler waits for
// a frame the decoder never passes.
func TestEveryClientFrameHasAHandler(t *testing.T) {
	t.Parallel()
	for _, k := range protocol.ClientFrames {
		if handlers[k.Type] == nil {
			t.Errorf("no handler for the client frame %q", k.Type)
		}
	}
	for typ := range handlers {
		if _, ok := protocol.ClientFrameKindOf(typ); !ok {
			t.Errorf("a handler for %q, which is not a client frame", typ)
		}
	}
}

// A connection closed while frames of its own wait in its outbox gets them
// before the close frame: the refusal that explains a rate_limited close
// reaches the client whichever the writer noticed first, the frames or the
// close. A slow consumer's frames are dropped: it is closed for not
// reading them.
func TestClosingWritesTheLastFramesFirst(t *testing.T) {
	t.Parallel()
	refusal := []byte(`{"type":"error","ref":"p61","code":"rate_limited"}`)
	tests := []struct {
		name   string
		code   int
		reason protocol.Code
		want   []string
	}{
		{"rate limited", websocket.ClosePolicyViolation, protocol.CodeRateLimited, []string{`{"type":"pong","ref":"p60"}`, string(refusal)}},
		{"frame too large", websocket.CloseMessageTooBig, protocol.CodeFrameTooLarge, []string{`{"type":"pong","ref":"p60"}`, string(refusal)}},
		{"server shutdown", websocket.CloseGoingAway, protocol.CodeServerShutdown, []string{`{"type":"pong","ref":"p60"}`, string(refusal)}},
		{"slow consumer", websocket.ClosePolicyViolation, protocol.CodeSlowConsumer, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			done := make(chan struct{})
			url := serveSessions(t, func(c *Session) {
				defer close(done)
				c.send([]byte(`{"type":"pong","ref":"p60"}`))
				c.send(refusal)
				c.Close(tt.code, string(tt.reason))
				c.closing() // as the writer does on seeing quit
			})
			ws, _, err := websocket.DefaultDialer.Dial(url, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			var got []string
			for {
				_, data, err := ws.ReadMessage()
				if ce, ok := errors.AsType[*websocket.CloseError](err); ok {
					if ce.Code != tt.code || ce.Text != string(tt.reason) {
						t.Errorf("closed %d %q, want %d %q", ce.Code, ce.Text, tt.code, tt.reason)
					}
					break
				}
				if err != nil {
					t.Fatalf("after %q: %v", got, err)
				}
				got = append(got, string(data))
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("frames before the close:\n%q\nwant\n%q", got, tt.want)
			}
			<-done
		})
	}
}

// A socket with nothing to write keeps no writer goroutine, and yet its
// keepalive pings go out and its client's pings are answered: the writer
// runs when there is something to send, and only then.
func TestIdleSocketsKeepNoWriter(t *testing.T) {
	t.Parallel()
	const sockets = 20
	url := serveSessions(t, func(c *Session) {
		c.srv.Config.PingEvery, c.srv.Config.WriteTimeout = 300*time.Millisecond, 10*time.Second
		c.srv.Config.JoinTimeout = time.Hour
		c.Serve()
	})
	pinged := make(chan struct{}, sockets)
	pongs := make([]chan struct{}, sockets)
	conns := make([]*websocket.Conn, sockets)
	pingAndWait := func(i int) {
		t.Helper()
		if err := conns[i].WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(5*time.Second)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-pongs[i]:
		case <-time.After(10 * time.Second):
			t.Fatal("the client's ping was not answered")
		}
	}
	for i := range sockets {
		ws, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		first := true
		ws.SetPingHandler(func(data string) error {
			if first {
				first = false
				pinged <- struct{}{}
			}
			return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
		})
		conns[i], pongs[i] = ws, make(chan struct{}, 1)
		ws.SetPongHandler(func(string) error { pongs[i] <- struct{}{}; return nil })
		go func() { // the client reads, as a browser does
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
		pingAndWait(i)
	}
	for range sockets {
		select {
		case <-pinged:
		case <-time.After(10 * time.Second):
			t.Fatal("a socket was not pinged")
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := goroutinesIn("session.(*Session).runWriter")
		if n < sockets/2 {
			break // the few left run a ping now
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writer goroutines for %d idle sockets", n, sockets)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range sockets { // and a writer starts again when needed
		pingAndWait(i)
	}
}

// goroutinesIn counts the goroutines whose stack holds fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}
