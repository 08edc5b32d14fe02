package system_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/test/kit"
)

// Readers of a room that keep up with what they must receive are never
// closed for another user's traffic. 100 clients read through small
// receive buffers while 50 inviters with the longest names invite and
// cancel one user, V, so that each sync to V carries every pending
// invitation, and V's page reconnects every 300 ms. None of the readers is
// closed (issue #23 item 2). TestOwnFramesDoNotPushOthersOutOfTheFeed shows
// the cause, one room's feed, at its root.
func TestReadersOutlastAnotherUsersSyncs(t *testing.T) {
	t.Parallel()
	const readers, inviters = 100, 50
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Minute})
	ctx, cancel := w.WaitCtx()
	defer cancel()
	v := w.Join("V")
	vID := kit.ID(v)

	url := "ws" + strings.TrimPrefix(w.Sys.EdgeURLs[0], "http") + "/ws"
	var mu sync.Mutex
	var ended []string
	for i := range readers {
		ws, _, err := smallReceiver.DialContext(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		join, _ := json.Marshal(protocol.ClientFrame{Type: protocol.TypeJoin, Name: fmt.Sprint("Reader ", i), Ref: "j"})
		if err := ws.WriteMessage(websocket.TextMessage, join); err != nil {
			t.Fatal(err)
		}
		// Reads everything, a message at a time, through a small buffer:
		// well within the list's traffic (about 200 changes a second),
		// far from V's syncs (every pending invitation, at each change).
		go func() {
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					mu.Lock()
					ended = append(ended, fmt.Sprintf("reader %d: %v", i, err))
					mu.Unlock()
					return
				}
				time.Sleep(200 * time.Microsecond)
			}
		}()
	}

	long := strings.Repeat("ẅ", 96)
	produce, stop := context.WithTimeout(ctx, 3*time.Second)
	defer stop()
	var producers sync.WaitGroup
	for i := range inviters {
		inviter := w.Join(fmt.Sprintf("%s %02d", long, i))
		producers.Add(1)
		go func(c *client.Client) {
			defer producers.Done()
			for produce.Err() == nil {
				inv, err := c.Invite(produce, vID)
				if err != nil {
					time.Sleep(20 * time.Millisecond) // rate limited, or V has too many pending
					continue
				}
				_ = c.Cancel(produce, inv.ID)
				time.Sleep(250 * time.Millisecond)
			}
		}(inviter)
	}
	// V's page reconnects again and again, each time a socket that the
	// syncs go to.
	secret := v.View().Secret
	for produce.Err() == nil {
		time.Sleep(300 * time.Millisecond)
		_ = v.Close()
		next, err := client.Dial(ctx, w.Sys.EdgeURLs[0])
		if err != nil {
			t.Fatal(err)
		}
		defer next.Close()
		if _, err := next.Resume(ctx, vID, secret); err != nil {
			t.Fatalf("V resumes: %v", err)
		}
		v = next
	}
	producers.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(ended) > 0 {
		t.Errorf("%d of %d readers were closed by another user's traffic; the first: %s", len(ended), readers, ended[0])
	}
}
