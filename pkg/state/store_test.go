package state_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/embeddednats"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

func mustStore(tb testing.TB) *state.Store {
	tb.Helper()
	srv, err := embeddednats.Start(embeddednats.Options{StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
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
	txn.Put(state.UserKey("a"), 0, a)
	txn.Put(state.UserKey("b"), 0, b)
	if err := st.Commit(ctx, &txn); err != nil {
		t.Fatalf("create: %v", err)
	}
	_, revA, err := st.GetUser(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	_, revB, _ := st.GetUser(ctx, "b")

	// Creating an existing key again must fail and change nothing.
	var again state.Txn
	again.Put(state.UserKey("c"), 0, state.User{ID: "c"})
	again.Put(state.UserKey("a"), 0, a)
	if err := st.Commit(ctx, &again); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("re-create: got %v, want ErrConflict", err)
	}
	if _, _, err := st.GetUser(ctx, "c"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("c was written by a refused batch: %v", err)
	}

	// A stale revision on one key refuses the whole batch.
	a.State = protocol.StateInviting
	var stale state.Txn
	stale.Put(state.UserKey("a"), revA, a)
	stale.Delete(state.UserKey("b"), revB+100)
	if err := st.Commit(ctx, &stale); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("stale: got %v, want ErrConflict", err)
	}
	if got, _, _ := st.GetUser(ctx, "a"); got.State != protocol.StateAvailable {
		t.Fatalf("a changed by a refused batch: %+v", got)
	}

	// Right revisions: the update and the delete both land.
	var ok state.Txn
	ok.Put(state.UserKey("a"), revA, a)
	ok.Delete(state.UserKey("b"), revB)
	if err := st.Commit(ctx, &ok); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if _, _, err := st.GetUser(ctx, "b"); !errors.Is(err, state.ErrNotFound) {
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
	txn.Put(state.UserKey("a"), 0, state.User{ID: "a"})
	txn.Delete(state.UserKey("a"), 0)
	if err := st.Commit(context.Background(), &txn); err == nil {
		t.Fatal("double write committed")
	}
}

func TestPurgeDeletedRemovesOnlyOldTombstones(t *testing.T) {
	t.Parallel()
	st := mustStore(t)
	ctx := context.Background()
	var create state.Txn
	create.Put(state.UserKey("gone"), 0, state.User{ID: "gone"})
	create.Put(state.UserKey("kept"), 0, state.User{ID: "kept"})
	if err := st.Commit(ctx, &create); err != nil {
		t.Fatal(err)
	}
	_, rev, _ := st.GetUser(ctx, "gone")
	var del state.Txn
	del.Delete(state.UserKey("gone"), rev)
	if err := st.Commit(ctx, &del); err != nil {
		t.Fatal(err)
	}
	if n, err := st.PurgeDeleted(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("fresh tombstone purged: n=%d err=%v", n, err)
	}
	if n, err := st.PurgeDeleted(ctx, -time.Second); err != nil || n != 1 {
		t.Fatalf("old tombstone: n=%d err=%v, want 1 purged", n, err)
	}
	status, err := st.KV().Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if status.Values() != 1 {
		t.Fatalf("%d messages left in the bucket, want only the live key's", status.Values())
	}
	if _, _, err := st.GetUser(ctx, "kept"); err != nil {
		t.Fatal(err)
	}
}
