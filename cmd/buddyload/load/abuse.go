package load

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// Abuse is what the abusers of a run met.
type Abuse struct {
	Sockets int // WebSockets they opened
	Refused int // upgrades the server refused
	// Closes counts how the server ended their sockets, by close code and
	// reason ("1008 rate_limited"); "open" are those still open at the end.
	Closes map[string]int
}

func (a *Abuse) String() string {
	if a == nil {
		return "none"
	}
	return fmt.Sprintf("sockets=%d refused=%d closes=%v", a.Sockets, a.Refused, a.Closes)
}

// abuseKinds are what the abusers do, abuser i the (i mod 5)-th:
//   - flood: sends pings as fast as the socket takes them;
//   - huge: sends a frame of 1 MiB;
//   - garbage: sends 50 frames a second that are not JSON;
//   - idle: never joins, and answers the server's pings;
//   - slow: joins and never reads.
//
// Each opens a new socket when the server ends its last one.
var abuseKinds = []string{"flood", "huge", "garbage", "idle", "slow"}

// abuse runs n abusers against url until ctx ends.
func abuse(ctx context.Context, url string, n int) *Abuse {
	a := &Abuse{Closes: map[string]int{}}
	var mu sync.Mutex
	note := func(sockets, refused int, close string) {
		mu.Lock()
		defer mu.Unlock()
		a.Sockets += sockets
		a.Refused += refused
		if close != "" {
			a.Closes[close]++
		}
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			kind := abuseKinds[i%len(abuseKinds)]
			for ctx.Err() == nil {
				ws, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
				if err != nil {
					if ctx.Err() == nil {
						note(0, 1, "")
						time.Sleep(100 * time.Millisecond) // refused: try again soon, not in a spin
					}
					continue
				}
				note(1, 0, "")
				note(0, 0, abuseOnce(ctx, ws, kind, i))
			}
		})
	}
	wg.Wait()
	return a
}

// abuseOnce plays kind on ws until the server ends it or ctx ends, and
// says how it ended.
func abuseOnce(ctx context.Context, ws *websocket.Conn, kind string, i int) string {
	ended := make(chan error, 1)
	go func() {
		for {
			if kind == "slow" {
				// Never reads: the socket ends when the server closes it
				// (the read side is not drained, so watch the writes).
				<-ctx.Done()
				ended <- ctx.Err()
				return
			}
			if _, _, err := ws.NextReader(); err != nil {
				ended <- err
				return
			}
		}
	}()
	stop := context.AfterFunc(ctx, func() { _ = ws.Close() })
	defer stop()
	defer ws.Close()
	write := func(data []byte) error { return ws.WriteMessage(websocket.TextMessage, data) }
	switch kind {
	case "flood":
		ping := []byte(`{"type":"` + protocol.TypePing + `"}`)
		for write(ping) == nil {
		}
	case "huge":
		_ = write([]byte(`{"type":"join","name":"` + strings.Repeat("x", 1<<20) + `"}`))
	case "garbage":
		t := time.NewTicker(20 * time.Millisecond)
		for write([]byte("not json {")) == nil {
			<-t.C
		}
		t.Stop()
	case "slow":
		_ = write([]byte(fmt.Sprintf(`{"type":"join","ref":"1","name":"slow reader %d"}`, i)))
	}
	select {
	case err := <-ended:
		return closeOf(ctx, err)
	case <-ctx.Done():
		return "open"
	}
}

// closeOf names how a socket ended: its close code and reason, "open" if
// the run ended it.
func closeOf(ctx context.Context, err error) string {
	if ce, ok := errors.AsType[*websocket.CloseError](err); ok {
		return strings.TrimSpace(fmt.Sprintf("%d %s", ce.Code, ce.Text))
	}
	if ctx.Err() != nil {
		return "open"
	}
	return "dropped"
}
