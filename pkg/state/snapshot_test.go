package state_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// Writers keep moving pairs of keys together in atomic batches; every
// snapshot taken meanwhile must show each pair in step.
func TestSnapshotIsConsistentUnderWrites(t *testing.T) {
	t.Parallel()
	st := mustStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const pairs = 6
	var wg sync.WaitGroup
	for p := range pairs {
		a, b := fmt.Sprintf("a%d", p), fmt.Sprintf("b%d", p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				err := state.Retry(ctx, func(ctx context.Context) error {
					ua, ra, errA := st.GetUser(ctx, a)
					_, rb, errB := st.GetUser(ctx, b)
					if errA != nil && !errors.Is(errA, state.ErrNotFound) || errB != nil && !errors.Is(errB, state.ErrNotFound) {
						return errors.Join(errA, errB)
					}
					next := state.User{ID: a, Name: fmt.Sprint(ua.JoinedAt + 1), JoinedAt: ua.JoinedAt + 1, State: protocol.StateAvailable}
					var txn state.Txn
					txn.Put(state.UserKey(a), ra, next)
					next.ID = b
					txn.Put(state.UserKey(b), rb, next)
					return st.Commit(ctx, &txn)
				})
				if err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for range 200 {
		snap, err := st.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for p := range pairs {
			a, b := snap.Users[fmt.Sprintf("a%d", p)], snap.Users[fmt.Sprintf("b%d", p)]
			if a.Name != b.Name {
				t.Fatalf("snapshot at %d: pair %d out of step: %q vs %q", snap.Sequence, p, a.Name, b.Name)
			}
		}
	}
	cancel()
	wg.Wait()
}
