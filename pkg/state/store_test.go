package state_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// onOneAndThreeNodes runs test, in parallel, on a store of one server and
// on one of a three-node cluster whose streams are replicated three times.
func onOneAndThreeNodes(t *testing.T, test func(t *testing.T, ctx context.Context, nc *nats.Conn, st *state.Store)) {
	for _, tc := range []struct {
		name  string
		nodes int
	}{{"one server", 1}, {"three-node cluster", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			nc := natstest.Conn(t)
			if tc.nodes > 1 {
				nc = natstest.Cluster(t, tc.nodes)
			}
			st, err := state.Open(ctx, nc, state.Options{Replicas: tc.nodes})
			if err != nil {
				t.Fatal(err)
			}
			test(t, ctx, nc, st)
		})
	}
}

// lobby is the room of the records these tests write.
const lobby = protocol.Lobby

func mustStore(tb testing.TB) *state.Store {
	tb.Helper()
	return mustStoreIn(tb, "")
}

// mustStoreIn opens a store on a server storing in dir (see mustNATSIn).
func mustStoreIn(tb testing.TB, dir string) *state.Store {
	tb.Helper()
	nc := mustNATSIn(tb, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := state.Open(ctx, nc, state.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

func TestCommitIsAtomic(t *testing.T) {
	t.Parallel()
	st := mustStore(t)
	ctx := context.Background()

	a := state.User{ID: "a", Name: "A", State: protocol.StateAvailable}
	b := state.User{ID: "b", Name: "B", State: protocol.StateAvailable}
	var txn state.Txn
	txn.Put(state.UserKey(lobby, "a"), 0, a)
	txn.Put(state.UserKey(lobby, "b"), 0, b)
	if err := st.Commit(ctx, &txn); err != nil {
		t.Fatalf("create: %v", err)
	}
	_, revA, err := st.GetUser(ctx, lobby, "a")
	if err != nil {
		t.Fatal(err)
	}
	_, revB, _ := st.GetUser(ctx, lobby, "b")

	// Creating an existing key again must fail and change nothing.
	var again state.Txn
	again.Put(state.UserKey(lobby, "c"), 0, state.User{ID: "c"})
	again.Put(state.UserKey(lobby, "a"), 0, a)
	if err := st.Commit(ctx, &again); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("re-create: got %v, want ErrConflict", err)
	}
	if _, _, err := st.GetUser(ctx, lobby, "c"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("c was written by a refused batch: %v", err)
	}

	// A stale revision on one key refuses the whole batch.
	a.State = protocol.StateInviting
	var stale state.Txn
	stale.Put(state.UserKey(lobby, "a"), revA, a)
	stale.Delete(state.UserKey(lobby, "b"), revB+100)
	if err := st.Commit(ctx, &stale); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("stale: got %v, want ErrConflict", err)
	}
	if got, _, _ := st.GetUser(ctx, lobby, "a"); got.State != protocol.StateAvailable {
		t.Fatalf("a changed by a refused batch: %+v", got)
	}

	// Right revisions: the update and the delete both land.
	var ok state.Txn
	ok.Put(state.UserKey(lobby, "a"), revA, a)
	ok.Delete(state.UserKey(lobby, "b"), revB)
	if err := st.Commit(ctx, &ok); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if _, _, err := st.GetUser(ctx, lobby, "b"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("b not deleted: %v", err)
	}
	snap, err := st.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Users) != 1 || snap.Users["a"].State != protocol.StateInviting {
		t.Fatalf("snapshot = %+v", snap.Users)
	}
}

func TestTxnRejectsDoubleWrite(t *testing.T) {
	t.Parallel()
	st := mustStore(t)
	var txn state.Txn
	txn.Put(state.UserKey(lobby, "a"), 0, state.User{ID: "a"})
	txn.Delete(state.UserKey(lobby, "a"), 0)
	if err := st.Commit(context.Background(), &txn); err == nil {
		t.Fatal("double write committed")
	}
}

func TestPurgeDeletedRemovesOnlyOldTombstones(t *testing.T) {
	t.Parallel()
	st := mustStore(t)
	ctx := context.Background()
	var create state.Txn
	create.Put(state.UserKey(lobby, "gone"), 0, state.User{ID: "gone"})
	create.Put(state.UserKey(lobby, "kept"), 0, state.User{ID: "kept"})
	if err := st.Commit(ctx, &create); err != nil {
		t.Fatal(err)
	}
	_, rev, _ := st.GetUser(ctx, lobby, "gone")
	var del state.Txn
	del.Delete(state.UserKey(lobby, "gone"), rev)
	if err := st.Commit(ctx, &del); err != nil {
		t.Fatal(err)
	}
	if n, err := st.PurgeDeleted(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("fresh tombstone purged: n=%d err=%v", n, err)
	}
	// The first call rolls the old record up into a purge marker; the
	// next removes the marker.
	for _, step := range []struct {
		name string
		left uint64
	}{{"rolled up", 2}, {"marker removed", 1}} {
		if n, err := st.PurgeDeleted(ctx, -time.Second); err != nil || n != 1 {
			t.Fatalf("%s: n=%d err=%v, want 1", step.name, n, err)
		}
		status, err := st.KV().Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if status.Values() != step.left {
			t.Fatalf("%s: %d messages left in the bucket, want %d", step.name, status.Values(), step.left)
		}
	}
	if _, _, err := st.GetUser(ctx, lobby, "kept"); err != nil {
		t.Fatal(err)
	}
}

// A transaction of one write is a single guarded publish, not an atomic
// batch (see Commit), with exactly the same revision rules.
func TestSingleWriteCommit(t *testing.T) {
	t.Parallel()
	st := mustStore(t)
	ctx := context.Background()
	var create state.Txn
	create.Put(state.UserKey(lobby, "u"), 0, state.User{ID: "u", Name: "U"})
	if err := st.Commit(ctx, &create); err != nil {
		t.Fatal(err)
	}
	_, rev, err := st.GetUser(ctx, lobby, "u")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		write    func(*state.Txn)
		conflict bool
	}{
		{"create an existing key", func(x *state.Txn) { x.Put(state.UserKey(lobby, "u"), 0, state.User{ID: "u"}) }, true},
		{"update at a stale revision", func(x *state.Txn) { x.Put(state.UserKey(lobby, "u"), rev+7, state.User{ID: "u"}) }, true},
		{"delete at a stale revision", func(x *state.Txn) { x.Delete(state.UserKey(lobby, "u"), rev-1) }, true},
		{"update at the read revision", func(x *state.Txn) { x.Put(state.UserKey(lobby, "u"), rev, state.User{ID: "u", Name: "V"}) }, false},
		{"update at the old revision again", func(x *state.Txn) { x.Put(state.UserKey(lobby, "u"), rev, state.User{ID: "u", Name: "W"}) }, true},
	}
	for _, tt := range tests {
		var txn state.Txn
		tt.write(&txn)
		err := st.Commit(ctx, &txn)
		if tt.conflict != errors.Is(err, state.ErrConflict) || !tt.conflict && err != nil {
			t.Fatalf("%s: got %v, want conflict %v", tt.name, err, tt.conflict)
		}
	}
	if got, _, _ := st.GetUser(ctx, lobby, "u"); got.Name != "V" {
		t.Fatalf("name = %q, want only the good update (V) applied", got.Name)
	}
	e, err := st.KV().Get(ctx, state.UserKey(lobby, "u"))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := rawMessage(ctx, st, e.Revision())
	if err != nil {
		t.Fatal(err)
	}
	if id := msg.Header.Get("Nats-Batch-Id"); id != "" {
		t.Fatalf("a single write went as an atomic batch (%s)", id)
	}
}

func rawMessage(ctx context.Context, st *state.Store, seq uint64) (*jetstream.RawStreamMsg, error) {
	s, err := st.JetStream().Stream(ctx, "KV_"+state.Bucket)
	if err != nil {
		return nil, err
	}
	return s.GetMsg(ctx, seq)
}

// BenchmarkCommit measures a transition of one key (a guarded publish) and
// of two keys (an atomic batch), alone and with many committers at once,
// with the server's files on disk (as the buddytok command keeps them) and
// in a temporary store (tmpfs where the machine has one, as tests keep
// them). The batch's cost on disk, and that batches do not run in parallel
// on a single-replica file stream, are why Commit avoids batches where it
// can and why the invites service queues transitions of the same user.
//
// store=cluster3 is a three-node cluster in this process (its streams
// replicated three times, as a deployment's), where a transition's three
// keys are what an invitation writes.
func BenchmarkCommit(b *testing.B) {
	for _, store := range []string{"disk", "temporary", "cluster3"} {
		for _, keys := range []int{1, 2, 3} {
			for _, par := range []int{1, 16} {
				b.Run(fmt.Sprintf("store=%s/keys=%d/committers=%d", store, keys, par), func(b *testing.B) {
					benchCommit(b, store, keys, par)
				})
			}
		}
	}
}

func benchCommit(b *testing.B, store string, keys, par int) {
	ctx := context.Background()
	var st *state.Store
	switch store {
	case "cluster3":
		var err error
		if st, err = state.Open(ctx, natstest.Cluster(b, 3), state.Options{Replicas: 3}); err != nil {
			b.Fatal(err)
		}
	case "disk":
		st = mustStoreIn(b, b.TempDir())
	default:
		st = mustStoreIn(b, "")
	}
	b.ResetTimer() // a cluster takes seconds to start
	var n atomic.Int64
	b.SetParallelism(par)
	b.RunParallel(func(pb *testing.PB) {
		id := fmt.Sprint(n.Add(1))
		revs := make([]uint64, keys)
		for pb.Next() {
			var txn state.Txn
			for k := range keys {
				txn.Put(state.UserKey(lobby, fmt.Sprintf("%s-%d", id, k)), revs[k], state.User{ID: id})
			}
			if err := st.Commit(ctx, &txn); err != nil {
				b.Error(err)
				return
			}
			for k := range keys {
				_, rev, err := st.GetUser(ctx, lobby, fmt.Sprintf("%s-%d", id, k))
				if err != nil {
					b.Error(err)
					return
				}
				revs[k] = rev
			}
		}
	})
}

// BenchmarkGroupGuard is the cost of a write guarded by the newest revision
// of a room's user records (Txn.PutInGroup: a join, or any transition
// written as one message guarded by its room), against the same write
// guarded by its own key only, as the room grows: NATS finds a filter's
// newest revision by matching every subject of the room.
func BenchmarkGroupGuard(b *testing.B) {
	for _, users := range []int{100, 1000, 5000} {
		for _, guard := range []string{"key", "room"} {
			b.Run(fmt.Sprintf("users=%d/guard=%s", users, guard), func(b *testing.B) {
				benchGroupGuard(b, users, guard == "room")
			})
		}
	}
}

func benchGroupGuard(b *testing.B, users int, byRoom bool) {
	ctx := context.Background()
	st := mustStoreIn(b, b.TempDir())
	var last uint64
	for i := range users {
		var txn state.Txn
		txn.Put(state.UserKey(lobby, fmt.Sprintf("u%05d", i)), 0, state.User{ID: fmt.Sprint(i)})
		seq, err := st.CommitAt(ctx, &txn)
		if err != nil {
			b.Fatal(err)
		}
		last = seq
	}
	// One more user's record, written again and again: the room keeps its
	// size. Its own revision and the room's newest are then the same.
	key := state.UserKey(lobby, "n")
	var own uint64
	b.ResetTimer()
	for i := range b.N {
		var txn state.Txn
		if byRoom {
			txn.PutInGroup(key, state.RoomUsers(lobby), last, state.User{ID: fmt.Sprint(i)})
		} else {
			txn.Put(key, own, state.User{ID: fmt.Sprint(i)})
		}
		seq, err := st.CommitAt(ctx, &txn)
		if err != nil {
			b.Fatal(err)
		}
		last, own = seq, seq
	}
}
