package state_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/state"
)

// A write guarded by a group of keys commits only while the group's newest
// revision is the one it expects: a change to any key of the group refuses
// it, telling the group's revision; a change elsewhere does not. Writes
// after the guarded one commit with it or not at all. This is how joins
// count a room's users exactly (presence, room_full), several at once.
func TestPutInGroup(t *testing.T) {
	t.Parallel()
	onOneAndThreeNodes(t, func(t *testing.T, ctx context.Context, nc *nats.Conn, st *state.Store) {
		put := func(room, id string, groupRev uint64) error {
			var txn state.Txn
			txn.PutInGroup(state.UserKey(room, id), state.RoomUsers(room), groupRev, state.User{ID: id, Room: room})
			return st.Commit(ctx, &txn)
		}
		if err := put("red", "ann", 0); err != nil {
			t.Fatalf("first of an empty group: %v", err)
		}
		_, annRev, err := st.GetUser(ctx, "red", "ann")
		if err != nil {
			t.Fatal(err)
		}
		if err := put("blue", "bob", 0); err != nil {
			t.Fatalf("first of another group: %v", err)
		}
		err = put("red", "cat", 0)
		if last, ok := state.ConflictLast(err); !errors.Is(err, state.ErrConflict) || !ok || last != annRev {
			t.Fatalf("a stale group revision: %v (told %d, %t); want a conflict telling %d", err, last, ok, annRev)
		}
		if err := put("red", "cat", annRev); err != nil {
			t.Fatalf("at the group's revision, though another group changed since: %v", err)
		}
		_, catRev, err := st.GetUser(ctx, "red", "cat")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := st.GroupLast(ctx, state.RoomUsers("red")); err != nil || got != catRev {
			t.Fatalf("red's newest revision: %d, %v; want cat's %d", got, err, catRev)
		}
		if got, err := st.GroupLast(ctx, state.RoomUsers("green")); err != nil || got != 0 {
			t.Fatalf("an empty group's newest revision: %d, %v; want 0", got, err)
		}
		// New members written with the guarded one commit with it, or
		// not at all.
		members := func(groupRev uint64, ids ...string) error {
			var txn state.Txn
			txn.PutInGroup(state.UserKey("red", ids[0]), state.RoomUsers("red"), groupRev, state.User{ID: ids[0], Room: "red"})
			for _, id := range ids[1:] {
				txn.Put(state.UserKey("red", id), 0, state.User{ID: id, Room: "red"})
			}
			return st.Commit(ctx, &txn)
		}
		if err := members(annRev, "dan", "eve"); !errors.Is(err, state.ErrConflict) {
			t.Fatalf("a stale group revision, with two more: %v, want a conflict", err)
		}
		for _, id := range []string{"dan", "eve"} {
			if _, _, err := st.GetUser(ctx, "red", id); !errors.Is(err, state.ErrNotFound) {
				t.Fatalf("%s of a refused group write: %v, want not stored", id, err)
			}
		}
		if err := members(catRev, "dan", "eve", "fay"); err != nil {
			t.Fatalf("three at the group's revision: %v", err)
		}
		_, fayRev, err := st.GetUser(ctx, "red", "fay")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := st.GroupLast(ctx, state.RoomUsers("red")); err != nil || got != fayRev {
			t.Fatalf("red's newest revision: %d, %v; want the last written, fay's %d", got, err, fayRev)
		}
		var late state.Txn
		late.Put(state.UserKey("red", "gus"), 0, state.User{ID: "gus"})
		late.PutInGroup(state.UserKey("red", "hal"), state.RoomUsers("red"), fayRev, state.User{ID: "hal"})
		if err := st.Commit(ctx, &late); err == nil || errors.Is(err, state.ErrConflict) {
			t.Fatalf("a group write after another write: %v, want refused as a mistake", err)
		}
	})
}
