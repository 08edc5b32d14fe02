package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LeaseBucket holds one key per live edge replica. Its entries expire
// LeaseTTL after their last Put, and expiry is visible to watchers (limit
// markers), which is how presence learns that an edge died.
const LeaseBucket = "buddytok_edges"

// Lease is the value of an edge's lease. The bucket's TTL, not the value,
// decides whether the edge is alive: the value is for operators reading the
// bucket, and for telling a renewal tried twice from a renewal after a
// lapse (Restores).
type Lease struct {
	RenewedAt time.Time `json:"renewed_at"`
	// Restores is the revision the edge's renewal named when it found the
	// lease gone and stored this one in its place; 0 for a lease stored or
	// renewed in time. A later attempt of that same renewal (its first
	// reply lost) names that revision too, and learns of the lapse from it.
	Restores uint64 `json:"restores,omitempty"`
}

// DefaultLeaseTTL is the lease TTL of a deployment whose first process
// did not set EDGE_LEASE_TTL.
const DefaultLeaseTTL = 3 * time.Second

// ErrSettingMismatch: a process was configured with a shared setting that
// differs from the one the deployment's buckets already carry. Starting
// anyway would make processes disagree (leases lapsing between renewals,
// replicas that are not there), so the process refuses to start.
var ErrSettingMismatch = errors.New("shared setting differs from the deployment's")

// OpenLeases creates or opens the edge lease bucket and returns it with
// the deployment's lease TTL: how long an edge may go without renewing
// before it counts as dead. The bucket carries the TTL, so every process
// uses the same one: ttl 0 takes the bucket's (DefaultLeaseTTL for a new
// bucket); any other ttl must equal it, or the error wraps
// ErrSettingMismatch.
func OpenLeases(ctx context.Context, nc *nats.Conn, ttl time.Duration, opts Options) (jetstream.KeyValue, time.Duration, error) {
	var kv jetstream.KeyValue
	var have time.Duration
	err := retryJetStream(ctx, func(ctx context.Context) error {
		var err error
		kv, have, err = openLeases(ctx, nc, ttl, opts)
		return err
	})
	return kv, have, err
}

func openLeases(ctx context.Context, nc *nats.Conn, ttl time.Duration, opts Options) (jetstream.KeyValue, time.Duration, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, 0, fmt.Errorf("state: jetstream: %w", err)
	}
	want := ttl
	if want == 0 {
		want = DefaultLeaseTTL
	}
	kv, err := openOrCreate(ctx, js, jetstream.KeyValueConfig{
		Bucket:         LeaseBucket,
		Description:    "BuddyTok edge leases",
		History:        1,
		TTL:            want,
		LimitMarkerTTL: want,
		Storage:        jetstream.FileStorage,
		Replicas:       max(opts.Replicas, 1),
	}, opts)
	if err != nil {
		return nil, 0, err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("state: bucket %s: %w", LeaseBucket, err)
	}
	have := st.TTL()
	if ttl != 0 && ttl != have {
		return nil, 0, fmt.Errorf("state: EDGE_LEASE_TTL is %s here but the deployment's leases (bucket %s) use %s: set it to %s or leave it unset: %w",
			ttl, LeaseBucket, have, have, ErrSettingMismatch)
	}
	return kv, have, nil
}
