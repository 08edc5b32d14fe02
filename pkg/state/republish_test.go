package state_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/state"
)

// Rooms are carried to the edges by the state stream's RePublish
// (docs/rooms.md), which relies on this: every record a transaction
// commits is republished on its room's subject, with its sequence and the
// previous sequence of its key, nothing of a transaction that was refused,
// and nothing of another room; on one server and on a three-node cluster
// alike.
func TestRepublishCarriesCommittedTransactionsOnly(t *testing.T) {
	t.Parallel()
	onOneAndThreeNodes(t, func(t *testing.T, ctx context.Context, nc *nats.Conn, st *state.Store) {
		sub, err := nc.SubscribeSync(state.RoomSubject(lobby))
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		next := func() state.Change {
			t.Helper()
			m, err := sub.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c, err := state.ParseRepublished(m)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}

		var first state.Txn // three records, one atomic batch, and one of another room
		for _, id := range []string{"ann", "bob", "cat"} {
			first.Put(state.UserKey(lobby, id), 0, state.User{ID: id, Room: lobby})
		}
		first.Put(state.UserKey("team", "tim"), 0, state.User{ID: "tim", Room: "team"})
		if err := st.Commit(ctx, &first); err != nil {
			t.Fatal(err)
		}
		got := map[string]state.Change{}
		for range 3 {
			c := next()
			got[c.ID] = c
		}
		_, annRev, err := st.GetUser(ctx, lobby, "ann")
		if err != nil {
			t.Fatal(err)
		}
		if ann := got["ann"]; ann.Seq != annRev || ann.Last != 0 || ann.Room != lobby || ann.Kind != state.KindUser || ann.Deleted || ann.Stored.IsZero() {
			t.Fatalf("ann republished as %+v, want sequence %d after none", ann, annRev)
		}

		var stale state.Txn // refused: ann moved since revision 0
		stale.Put(state.UserKey(lobby, "ann"), 0, state.User{ID: "ann", Name: "again"})
		stale.Put(state.UserKey(lobby, "dan"), 0, state.User{ID: "dan"})
		if err := st.Commit(ctx, &stale); !errors.Is(err, state.ErrConflict) {
			t.Fatalf("a stale transaction: %v, want a conflict", err)
		}
		var later state.Txn
		later.Put(state.UserKey(lobby, "ann"), annRev, state.User{ID: "ann", Name: "Ann"})
		later.Delete(state.UserKey(lobby, "bob"), got["bob"].Seq)
		if err := st.Commit(ctx, &later); err != nil {
			t.Fatal(err)
		}
		// The next republished records are the later transaction's:
		// nothing of the refused one, nor of the other room, came between.
		for range 2 {
			switch c := next(); c.ID {
			case "ann":
				if c.Last != annRev {
					t.Fatalf("ann's change names %d as the one before, want %d", c.Last, annRev)
				}
			case "bob":
				if !c.Deleted || c.Last != got["bob"].Seq {
					t.Fatalf("bob's delete republished as %+v", c)
				}
			default:
				t.Fatalf("republished %+v, of a refused transaction or another room", c)
			}
		}
		if m, err := sub.NextMsg(200 * time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("republished %v beyond the committed records of the room", m)
		}
	})
}
