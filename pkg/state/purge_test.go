package state_test

import (
	"context"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/state"
)

// Presence purges the records deleted long ago, with its role's
// permissions: a delete is rolled up into a purge marker, and a later round
// removes the marker itself (a stream purge of the key's subject). Without
// the permission for the second, every round after the first failed, and
// the markers stayed for good.
func TestPurgeDeletedAsPresence(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := state.Open(ctx, natstest.StartRoles(t).As(permissions.Presence), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var put state.Txn
	put.Put(state.UserKey(lobby, "ann"), 0, state.User{ID: "ann"})
	if err := st.Commit(ctx, &put); err != nil {
		t.Fatal(err)
	}
	_, rev, err := st.GetUser(ctx, lobby, "ann")
	if err != nil {
		t.Fatal(err)
	}
	var del state.Txn
	del.Delete(state.UserKey(lobby, "ann"), rev)
	if err := st.Commit(ctx, &del); err != nil {
		t.Fatal(err)
	}
	for round, want := range []int{1, 1, 0} { // the delete, then its marker, then nothing
		n, err := st.PurgeDeleted(ctx, 0)
		if err != nil || n != want {
			t.Fatalf("round %d: purged %d, %v; want %d", round+1, n, err, want)
		}
	}
}
