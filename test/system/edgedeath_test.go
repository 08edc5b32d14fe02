package system_test

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/cmd/buddytok/allinone"
	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/test/kit"
)

// Spec flow 9: when the edge serving a user dies, its lease expires, and
// after the grace period the user leaves every list; a chat they were in
// ends for the other side, an invitation to them ends for its inviter.
func TestEdgeDeathRemovesItsUsers(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, replicated, kit.Settings{Grace: 300 * time.Millisecond})
	// Tabs alternate between the edges: ann, cy on edge 0; bob, dee on edge 1.
	ann, bob, cy, dee := w.Join("Ann"), w.Join("Bob"), w.Join("Cy"), w.Join("Dee")
	w.Sees(kit.ID(dee), protocol.StateAvailable, ann, cy)
	_, chat := w.Chat(ann, bob)
	invDee := w.Invite(cy, dee)
	w.Sees(kit.ID(cy), protocol.StateInviting, ann)

	bobID, deeID := kit.ID(bob), kit.ID(dee)
	w.Sys.Kill(allinone.Edge, 1) // its NATS connection drops; nothing is reported

	w.Sees(bobID, "", ann, cy)
	w.Sees(deeID, "", ann, cy)
	w.Event(ann, "chat ended: Bob's edge died", func(f protocol.ServerFrame) bool {
		return f.Type == protocol.TypeChatEnded && f.Chat.ID == chat.ID && f.Reason == protocol.ReasonLeft
	})
	w.Event(cy, "invitation ended: Dee's edge died", kit.IsEnded(invDee.ID, protocol.ReasonLeft))
	for _, c := range []*client.Client{ann, cy} {
		w.WaitView(c, "available, alone with the other survivor", func(v client.View) bool {
			return len(v.Users) == 2 && v.Chat == nil && v.Outgoing == nil && v.Me.State == protocol.StateAvailable
		})
	}
	w.MustInvariants(w.Store())
}

// A replica restart must not cost a user their chat (docs/behaviour.md §2.9): an edge
// that stops closes its sockets with 1001, and a user who reconnects to
// another edge within the grace period is back in the same chat.
func TestEdgeRestartKeepsTheChat(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, replicated, kit.Settings{Grace: 5 * time.Second})
	bob, ann := w.Join("Bob"), w.Join("Ann") // Bob on edge 0, Ann on edge 1
	w.Sees(kit.ID(ann), protocol.StateAvailable, bob)
	_, chat := w.Chat(bob, ann)
	annView := w.WaitView(ann, "in the chat", func(v client.View) bool { return v.Chat != nil })

	if err := w.Sys.Stop(allinone.Edge, 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := w.WaitCtx()
	defer cancel()
	_, _ = ann.WaitView(ctx, func(client.View) bool { return false }) // returns once closed
	if code, closed := ann.CloseCode(); !closed || code != websocket.CloseGoingAway {
		t.Fatalf("Ann's socket: closed %t, code %d; want 1001", closed, code)
	}
	again, err := client.Dial(ctx, w.Sys.EdgeURLs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := again.Resume(ctx, annView.Me.ID, annView.Secret); err != nil {
		t.Fatal(err)
	}
	if v := again.View(); v.Chat == nil || v.Chat.ID != chat.ID || v.Me.State != protocol.StateChatting {
		t.Fatalf("after the restart: %+v", v)
	}
	w.Sees(annView.Me.ID, protocol.StateChatting, bob)
	if err := again.EndChat(ctx, chat.ID); err != nil {
		t.Fatal(err)
	}
	w.Sees(kit.ID(bob), protocol.StateAvailable, bob, again)
}

// An edge told to stop while presence is unreachable must still stop in
// bounded time: its disconnect reports give up with the shutdown (the
// lease it drops tells presence instead), they do not retry for a minute.
func TestEdgeStopsWhilePresenceIsUnreachable(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: 5 * time.Second, Shutdown: time.Second})
	w.Join("Ann")
	if err := w.Sys.Stop(allinone.Presence, 0); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- w.Sys.Stop(allinone.Edge, 0) }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(kit.WaitFor):
		t.Fatal("the edge did not stop: its disconnect report ignores the shutdown")
	}
}

// Sockets that arrive while an edge shuts down are closed with 1001 and
// server_shutdown, including those upgraded after the edge closed the
// sockets it had; none is left open. Sockets come and go all the time, so
// that upgrades are under way at every step of the shutdown: one counted
// after the edge began waiting for its sockets was a race a full run once
// found (this makes it possible under -race, not certain).
func TestUpgradesWhileTheEdgeStops(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second})
	url := "ws" + strings.TrimPrefix(w.Sys.EdgeURLs[0], "http") + "/ws"
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	closes := map[string]int{}
	shutdown := fmt.Sprintf("%d %s", websocket.CloseGoingAway, protocol.CodeServerShutdown)
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ws, _, err := websocket.DefaultDialer.Dial(url, nil)
				if err != nil {
					continue // refused: the edge no longer listens
				}
				// Open for a moment, then closed by this side, unless the
				// edge closes it first.
				_ = ws.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				how := "closed by the test"
				if _, _, err := ws.ReadMessage(); err != nil {
					if ce, ok := errors.AsType[*websocket.CloseError](err); ok {
						how = fmt.Sprintf("%d %s", ce.Code, ce.Text)
					} else if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
						how = "dropped: " + err.Error()
					}
				} else {
					how = "a frame came"
				}
				_ = ws.Close()
				mu.Lock()
				closes[how]++
				mu.Unlock()
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	if err := w.Sys.Stop(allinone.Edge, 0); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	t.Logf("sockets: %v", closes)
	for how, n := range closes {
		if how != shutdown && how != "closed by the test" {
			t.Errorf("%d sockets ended %q, want %q", n, how, shutdown)
		}
	}
}
