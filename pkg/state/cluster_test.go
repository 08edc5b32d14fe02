package state_test

import (
	"context"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/state"
)

// mustClusterStore opens the state on an n-node cluster, replicated n times.
func mustClusterStore(tb testing.TB, n int) *state.Store {
	tb.Helper()
	nc := natstest.Cluster(tb, n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := state.Open(ctx, nc, state.Options{Replicas: n})
	if err != nil {
		tb.Fatal(err)
	}
	return st
}
