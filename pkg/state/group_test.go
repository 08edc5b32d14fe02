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
// it, telling the group's revision; a change elsewhere does not. This is
// how a join counts a room's users exactly (presence, room_full).
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
		var two state.Txn
		two.PutInGroup(state.UserKey("red", "dan"), state.RoomUsers("red"), 0, state.User{ID: "dan"})
		two.Put(state.UserKey("red", "eve"), 0, state.User{ID: "eve"})
		if err := st.Commit(ctx, &two); err == nil || errors.Is(err, state.ErrConflict) {
			t.Fatalf("a group write in a transaction of two: %v, want refused as a mistake", err)
		}
	})
}
