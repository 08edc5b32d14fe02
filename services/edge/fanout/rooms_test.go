package fanout

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// roomsWorld is a hub on a NATS server as the edge role, and a store as
// presence to change the rooms with.
type roomsWorld struct {
	t       *testing.T
	ctx     context.Context
	hub     *Hub
	metrics *metrics.Metrics
	writer  *state.Store
}

func newRoomsWorld(t *testing.T) *roomsWorld {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	roles := natstest.StartRoles(t)
	writer, err := state.Open(ctx, roles.As(permissions.Presence), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	nc := roles.As(permissions.Edge)
	store, err := state.Open(ctx, nc, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	hub := New(nc, store, m, slog.New(slog.DiscardHandler), protocol.SendQueueBytes)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = hub.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	return &roomsWorld{t: t, ctx: ctx, hub: hub, metrics: m, writer: writer}
}

// join puts a user in room.
func (w *roomsWorld) join(room, id string) {
	w.t.Helper()
	var txn state.Txn
	txn.Put(state.UserKey(room, id), 0, state.User{ID: id, Room: room, Name: id, State: protocol.StateAvailable})
	if err := w.writer.Commit(w.ctx, &txn); err != nil {
		w.t.Fatal(err)
	}
}

// leave removes a user from room.
func (w *roomsWorld) leave(room, id string) {
	w.t.Helper()
	_, rev, err := w.writer.GetUser(w.ctx, room, id)
	if err != nil {
		w.t.Fatal(err)
	}
	var txn state.Txn
	txn.Delete(state.UserKey(room, id), rev)
	if err := w.writer.Commit(w.ctx, &txn); err != nil {
		w.t.Fatal(err)
	}
}

func (w *roomsWorld) subscribe(room string) (*Sub, []string) {
	w.t.Helper()
	s, snap, err := w.hub.Subscribe(w.ctx, room, "", newTestWaker())
	if err != nil {
		w.t.Fatal(err)
	}
	s.Start()
	return s, names(w.t, snap.List)
}

func names(t *testing.T, list []byte) []string {
	t.Helper()
	var users []protocol.User
	if err := json.Unmarshal(list, &users); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, u := range users {
		out = append(out, u.ID)
	}
	return out
}

// until reads s's frames until it has seen the user frames of want, in
// order, failing after a while; it returns every frame's type and user.
func until(t *testing.T, s *Sub, want ...string) []string {
	t.Helper()
	var seen []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		frames, _, ok := s.Read(nil, 1<<20)
		if !ok {
			t.Fatal("fell behind the feed")
		}
		for _, data := range frames {
			var f protocol.ServerFrame
			if err := json.Unmarshal(data, &f); err != nil {
				t.Fatal(err)
			}
			switch f.Type {
			case protocol.TypeUser:
				seen = append(seen, f.User.ID)
			case protocol.TypeUserLeft:
				seen = append(seen, "-"+f.UserID)
			}
		}
		if len(seen) >= len(want) {
			if !slices.Equal(seen, want) {
				t.Fatalf("frames for %v, want %v", seen, want)
			}
			return seen
		}
		select {
		case <-s.wake.(*testWaker).ch:
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("frames for %v after 10 s, want %v", seen, want)
	return nil
}

// An edge holds a room open from its first subscriber to its last, sees
// only that room's users and changes, and receives nothing of a room it
// does not hold open: not on the room's list, not in its counters.
func TestHubReceivesOnlyItsRooms(t *testing.T) {
	t.Parallel()
	w := newRoomsWorld(t)
	w.join("red", "ann")
	w.join("blue", "bob")

	red, list := w.subscribe("red")
	if !slices.Equal(list, []string{"ann"}) {
		t.Fatalf("red's snapshot lists %v, want ann alone", list)
	}
	w.join("blue", "bea") // not held open: never reaches the edge
	w.join("red", "cat")
	until(t, red, "cat")
	if got := testutil.ToFloat64(w.metrics.RoomChanges); got != 1 {
		t.Fatalf("the edge received %v changes, want red's one", got)
	}
	if got := testutil.ToFloat64(w.metrics.RoomsWatched); got != 1 {
		t.Fatalf("%v rooms watched, want 1", got)
	}

	blue, list := w.subscribe("blue")
	if !slices.Equal(list, []string{"bea", "bob"}) {
		t.Fatalf("blue's snapshot lists %v, want bea and bob", list)
	}
	w.leave("blue", "bob")
	w.join("red", "dan")
	until(t, blue, "-bob")
	until(t, red, "dan")

	// Closing red: its changes stop reaching the edge.
	w.hub.Unsubscribe(red)
	if got := testutil.ToFloat64(w.metrics.RoomsWatched); got != 1 {
		t.Fatalf("%v rooms watched after red's last subscriber left, want 1", got)
	}
	before := testutil.ToFloat64(w.metrics.RoomChanges)
	w.join("red", "eve")
	w.join("blue", "bo2")
	until(t, blue, "bo2")
	if got := testutil.ToFloat64(w.metrics.RoomChanges); got != before+1 {
		t.Fatalf("the edge received %v changes after red closed, want blue's one", got-before)
	}
	// Opened again, red is read afresh.
	_, list = w.subscribe("red")
	if !slices.Equal(list, []string{"ann", "cat", "dan", "eve"}) {
		t.Fatalf("red opened again lists %v", list)
	}
	blueList, err := w.hub.List(w.ctx, "blue")
	if err != nil || !slices.Equal(names(t, blueList), []string{"bea", "bo2"}) {
		t.Fatalf("blue's list: %s, %v", blueList, err)
	}
	if list, err := w.hub.List(w.ctx, "green"); err != nil || string(list) != "[]" {
		t.Fatalf("an empty room's list: %s, %v", list, err)
	}
}

// A change that does not follow the revision the room holds for its key
// shows that one was missed: the room is read again, and its subscribers
// are told what they missed.
func TestHubReadsARoomAgainAfterAGap(t *testing.T) {
	t.Parallel()
	w := newRoomsWorld(t)
	w.join("red", "ann")
	red, _ := w.subscribe("red")
	w.hub.mu.Lock()
	r := w.hub.rooms["red"]
	w.hub.mu.Unlock()

	// Lost on the way: cat's join. Then a change of ann's that follows a
	// revision the room never saw.
	r.mu.Lock()
	r.syncing = true // hold what comes while the test sets the scene
	r.mu.Unlock()
	w.join("red", "cat")
	_, annRev, err := w.writer.GetUser(w.ctx, "red", "ann")
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.held, r.syncing = nil, false // cat's change is lost
	r.mu.Unlock()
	r.receive(state.Change{Key: state.Key{Room: "red", Kind: state.KindUser, ID: "ann"}, Seq: annRev + 100, Last: annRev + 50,
		Value: []byte(`{"id":"ann","room":"red","name":"ann","state":"available"}`)})
	until(t, red, "cat")
	if got := testutil.ToFloat64(w.metrics.RoomSyncs.WithLabelValues("gap")); got != 1 {
		t.Fatalf("%v reads after a gap, want 1", got)
	}
}
