//go:build unix

package session

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/services/edge/fanout"
)

// A welcome's list is the room's: sockets welcomed with it hold no copy of
// it, even while their clients read nothing, and a socket whose client
// reads nothing of its welcome is closed welcomeStall after its buffers
// fill, well before the write timeout. (Issue #23: 64 sockets that never
// read held two copies each of a 659 KB list, until the 10 s timeout.)
//
// Not parallel: it measures the heap.
func TestWelcomeListIsSharedAndAStalledSocketIsClosed(t *testing.T) {
	const (
		sockets      = 64
		writeTimeout = 10 * time.Second
		// What a socket may hold: its send queue's limit. The test's
		// clients, in this process too, are counted with their sockets.
		budget = protocol.SendQueueBytes
	)
	list := append(append([]byte("["), bytes.Repeat([]byte(`{"id":"abcdefghijklmnop","name":"a buddy","state":"available"},`), 32<<10)...), '{', '}', ']')
	ended := make(chan time.Duration, sockets)
	url := serveSessions(t, func(c *Session) {
		c.srv.Config.WriteTimeout, c.srv.Config.JoinTimeout, c.srv.Config.PingEvery = writeTimeout, time.Hour, time.Hour
		if tcp, ok := c.ws.UnderlyingConn().(*net.TCPConn); ok {
			_ = tcp.SetWriteBuffer(16 << 10)
		}
		welcomed := time.Now()
		c.box.welcome(fanout.Parts{Head: []byte(`{"type":"welcome","users":`), Shared: list, Tail: []byte("}")}, nil)
		c.Serve()
		ended <- time.Since(welcomed)
	})
	// Clients that read nothing, with small receive buffers: the welcome
	// cannot be taken by the kernels alone.
	dialer := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
		}}
		return d.DialContext(ctx, network, addr)
	}}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range sockets {
		ws, _, err := dialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
	}
	// Every writer is now blocked on its socket, holding what it holds.
	time.Sleep(500 * time.Millisecond)
	var during runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&during)
	grew := int64(during.HeapInuse) - int64(before.HeapInuse)
	t.Logf("%d sockets that read nothing of a %d KiB welcome: the heap grew %d KiB, %.1f KiB a socket", sockets, len(list)>>10, grew>>10, float64(grew)/sockets/1024)
	if grew > sockets*budget {
		t.Errorf("%d sockets that read nothing of a %d KiB welcome hold %d KiB of heap: %d KiB each, over the %d KiB budget",
			sockets, len(list)>>10, grew>>10, grew/sockets>>10, budget>>10)
	}
	for range sockets {
		select {
		case d := <-ended:
			if d > writeTimeout/2 {
				t.Fatalf("a socket that read nothing of its welcome was closed after %s, with a write timeout of %s", d.Round(time.Millisecond), writeTimeout)
			}
		case <-time.After(2 * writeTimeout):
			t.Fatal("a socket that read nothing of its welcome was never closed")
		}
	}
}
