package state

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LeaseBucket holds one key per live edge replica. Its entries expire
// LeaseTTL after their last Put, and expiry is visible to watchers (limit
// markers), which is how presence learns that an edge died.
const LeaseBucket = "buddytok_edges"

// OpenLeases creates or opens the edge lease bucket. ttl is how long an edge
// may go without renewing before it counts as dead.
func OpenLeases(ctx context.Context, nc *nats.Conn, ttl time.Duration, opts Options) (jetstream.KeyValue, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("state: jetstream: %w", err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         LeaseBucket,
		Description:    "BuddyTok edge leases",
		History:        1,
		TTL:            ttl,
		LimitMarkerTTL: ttl,
		Storage:        jetstream.FileStorage,
		Replicas:       max(opts.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("state: open bucket %s: %w", LeaseBucket, err)
	}
	return kv, nil
}
