package session

import (
	"context"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// An edge keeps one subscription a room its users are in, hands each event
// to the connections of its user only (both tabs of a user while the
// second supersedes the first), and ends a room's subscription with its
// last connection.
func TestEventsOneSubscriptionARoom(t *testing.T) {
	t.Parallel()
	nc := natstest.Conn(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := NewEvents()
	go r.Run(ctx)

	ann, bob, cat := User{Room: "red", ID: "ann"}, User{Room: "red", ID: "bob"}, User{Room: "blue", ID: "cat"}
	annTab, annTab2, bobTab, catTab := testSession(nil), testSession(nil), testSession(nil), testSession(nil)
	for _, s := range []struct {
		u User
		c *Session
	}{{ann, annTab}, {ann, annTab2}, {bob, bobTab}, {cat, catTab}} {
		if err := r.subscribe(nc, s.u, s.c); err != nil {
			t.Fatal(err)
		}
	}
	if n := nc.NumSubscriptions(); n != 2 {
		t.Fatalf("%d subscriptions for the rooms red and blue, want 2", n)
	}

	event := []byte(`{"type":"invitation"}`)
	for _, u := range []User{ann, bob, cat} {
		if err := nc.Publish(protocol.EventSubject(u.Room, u.ID), event); err != nil {
			t.Fatal(err)
		}
	}
	// Events are relayed in order: once Cat's has arrived, every other has.
	deadline := time.Now().Add(5 * time.Second)
	for catTab.box.queued() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Cat's event did not arrive")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for name, c := range map[string]*Session{"Ann's tab": annTab, "Ann's second tab": annTab2, "Bob's tab": bobTab, "Cat's tab": catTab} {
		if got := c.box.queued(); got != len(event) {
			t.Errorf("%s holds %d bytes of events, want one event's %d", name, got, len(event))
		}
	}

	r.unsubscribe(ann, annTab)
	r.unsubscribe(ann, annTab2)
	if n := nc.NumSubscriptions(); n != 2 {
		t.Fatalf("%d subscriptions while Bob is still in red, want 2", n)
	}
	r.unsubscribe(bob, bobTab)
	if n := nc.NumSubscriptions(); n != 1 {
		t.Fatalf("%d subscriptions once red has nobody here, want 1", n)
	}
}
