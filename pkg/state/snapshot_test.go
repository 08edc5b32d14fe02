package state_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// Writers keep moving groups of keys together in atomic batches; every
// snapshot taken meanwhile must show each group in step. Wide batches take
// the server long enough to store that snapshots often begin, or reach the
// end of the stream, in the middle of one.
func TestSnapshotIsConsistentUnderWrites(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		groups, width int
		nodes         int // a cluster of that many, the stream on every node
	}{
		{"many pairs", 6, 2, 1},
		{"wide batches", 2, 150, 1},
		{"many pairs on a cluster", 6, 2, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var st *state.Store
			if tt.nodes > 1 {
				st = mustClusterStore(t, tt.nodes)
			} else {
				st = mustStore(t)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			key := func(g, k int) string { return fmt.Sprintf("g%d-%d", g, k) }
			var wg sync.WaitGroup
			for g := range tt.groups {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						err := state.Retry(ctx, func(ctx context.Context) error {
							var txn state.Txn
							var n int64
							for k := range tt.width {
								u, rev, err := st.GetUser(ctx, lobby, key(g, k))
								if err != nil && !errors.Is(err, state.ErrNotFound) {
									return err
								}
								n = max(n, u.JoinedAt)
								txn.Put(state.UserKey(lobby, key(g, k)), rev, state.User{ID: key(g, k), JoinedAt: n + 1, State: protocol.StateAvailable})
							}
							return st.Commit(ctx, &txn)
						})
						if err != nil && ctx.Err() == nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			// A cluster is three servers on the same two cores as the rest
			// of the suite: fewer snapshots keep its writers' load short.
			snapshots := 100
			if tt.nodes > 1 {
				snapshots = 20
			}
			for range snapshots {
				snap, err := st.Snapshot(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for g := range tt.groups {
					first := snap.Users[key(g, 0)].JoinedAt
					for k := range tt.width {
						if u := snap.Users[key(g, k)]; u.JoinedAt != first {
							t.Fatalf("snapshot at %d: group %d out of step: %s at %d, %s at %d", snap.Sequence, g, key(g, 0), first, key(g, k), u.JoinedAt)
						}
					}
				}
			}
			cancel()
			wg.Wait()
		})
	}
}

// A stream can end inside a batch for good: PurgeDeleted removes, in the
// end, every message of a deleted key, and so can take a batch's last message (and
// with it the commit mark) while the batch's first ones stay. A snapshot
// must not wait for the rest of such a batch.
func TestSnapshotOfAStreamEndingInAPurgedBatch(t *testing.T) {
	t.Parallel()
	st := mustStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var both state.Txn
	both.Put(state.UserKey(lobby, "kept"), 0, state.User{ID: "kept", Name: "K"})
	both.Put(state.UserKey(lobby, "gone"), 0, state.User{ID: "gone", Name: "G"})
	if err := st.Commit(ctx, &both); err != nil {
		t.Fatal(err)
	}
	_, rev, err := st.GetUser(ctx, lobby, "gone")
	if err != nil {
		t.Fatal(err)
	}
	var del state.Txn
	del.Delete(state.UserKey(lobby, "gone"), rev)
	if err := st.Commit(ctx, &del); err != nil {
		t.Fatal(err)
	}
	// Rolled up, then the marker removed: nothing of "gone" is left.
	for range 2 {
		if n, err := st.PurgeDeleted(ctx, -time.Second); err != nil || n != 1 {
			t.Fatalf("purge: n=%d err=%v", n, err)
		}
	}
	snap, err := st.Snapshot(ctx)
	if err != nil {
		t.Fatalf("snapshot of a stream ending in a purged batch: %v", err)
	}
	if len(snap.Users) != 1 || snap.Users["kept"].Name != "K" {
		t.Fatalf("snapshot users = %+v, want only kept", snap.Users)
	}
}

// PurgeDeleted rolls the revisions of a deleted key up into a purge marker,
// its delete included. A snapshot reading while a purge goes on may have read a key's
// last put and then find its delete gone: the key was deleted all the same
// and must not appear.
func TestSnapshotWhilePurging(t *testing.T) {
	t.Parallel()
	st := mustStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const keys = 100
	write := func(round int, del bool) {
		for lo := 0; lo < keys; lo += 100 {
			var txn state.Txn
			for i := lo; i < lo+100; i++ {
				id := fmt.Sprintf("r%d-k%03d", round, i)
				if del {
					_, rev, err := st.GetUser(ctx, lobby, id)
					if err != nil {
						t.Fatal(err)
					}
					txn.Delete(state.UserKey(lobby, id), rev)
					continue
				}
				txn.Put(state.UserKey(lobby, id), 0, state.User{ID: id, State: protocol.StateAvailable})
			}
			if err := st.Commit(ctx, &txn); err != nil {
				t.Fatal(err)
			}
		}
	}
	var live state.Txn
	live.Put(state.UserKey(lobby, "live"), 0, state.User{ID: "live", State: protocol.StateAvailable})
	if err := st.Commit(ctx, &live); err != nil {
		t.Fatal(err)
	}
	for round := range 4 {
		// Every put first, every delete after: a snapshot spends most of its
		// read between a key's put and its delete.
		write(round, false)
		write(round, true)
		purged := make(chan error, 1)
		go func() {
			_, err := st.PurgeDeleted(ctx, -time.Second)
			purged <- err
		}()
		for {
			snap, err := st.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(snap.Users) != 1 {
				t.Fatalf("round %d: snapshot at %d shows %d users, want only the live one", round, snap.Sequence, len(snap.Users))
			}
			select {
			case err := <-purged:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Millisecond): // each snapshot leaves a consumer behind for a while
				continue
			}
			break
		}
	}
}

// A snapshot removes the consumer it read with: a process that snapshots
// often (the tests' invariant checkers) once left them behind until the
// stream reached the server's limit of consumers, and then no consumer at
// all could be made on it.
func TestSnapshotLeavesNoConsumer(t *testing.T) {
	t.Parallel()
	st := mustStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var txn state.Txn
	txn.Put(state.UserKey(lobby, "u"), 0, state.User{ID: "u", Name: "U"})
	if err := st.Commit(ctx, &txn); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := st.Snapshot(ctx); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := st.JetStream().Stream(ctx, "KV_"+state.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	si, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := si.State.Consumers; n != 0 {
		t.Fatalf("%d consumers left on the state stream after 5 snapshots, want 0", n)
	}
}
