package state_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/embeddednats"
	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/state"
)

func mustNATS(tb testing.TB) *nats.Conn {
	tb.Helper()
	return mustNATSIn(tb, "")
}

// mustNATSIn starts a server storing in dir (empty: a temporary store, on
// tmpfs where the machine has one) and connects to it.
func mustNATSIn(tb testing.TB, dir string) *nats.Conn {
	tb.Helper()
	return natstest.Connect(tb, natstest.Start(tb, embeddednats.Options{StoreDir: dir}))
}

// The lease TTL is the deployment's, carried by the lease bucket: a process
// that does not set it takes it, one that sets another is refused, so that
// no edge renews on a schedule presence does not expect.
func TestOpenLeasesSharesTheDeploymentsTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		first    time.Duration // the process that creates the bucket
		then     time.Duration // a later process
		want     time.Duration
		mismatch bool
	}{
		{name: "defaults", want: state.DefaultLeaseTTL},
		{name: "later process takes the deployment's", first: 2 * time.Second, want: 2 * time.Second},
		{name: "same setting", first: 2 * time.Second, then: 2 * time.Second, want: 2 * time.Second},
		{name: "different setting refused", first: 2 * time.Second, then: 5 * time.Second, mismatch: true},
		{name: "explicit default against an unset deployment", then: state.DefaultLeaseTTL, want: state.DefaultLeaseTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nc := mustNATS(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, _, err := state.OpenLeases(ctx, nc, tt.first, state.Options{}); err != nil {
				t.Fatal(err)
			}
			_, got, err := state.OpenLeases(ctx, nc, tt.then, state.Options{})
			if tt.mismatch {
				if !errors.Is(err, state.ErrSettingMismatch) {
					t.Fatalf("err = %v, want a setting mismatch", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("OpenLeases = %s, %v; want %s", got, err, tt.want)
			}
		})
	}
}

// KV_REPLICAS is chosen when the deployment's buckets are made: a process
// asking for another number is refused instead of silently ignored.
func TestOpenRefusesOtherReplicas(t *testing.T) {
	t.Parallel()
	nc := mustNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := state.Open(ctx, nc, state.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := state.Open(ctx, nc, state.Options{Replicas: 1}); err != nil {
		t.Fatalf("the deployment's own replicas: %v", err)
	}
	_, err := state.Open(ctx, nc, state.Options{Replicas: 3})
	if !errors.Is(err, state.ErrSettingMismatch) {
		t.Fatalf("err = %v, want a setting mismatch", err)
	}
	t.Log(err)
}
