package edge

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/retry"
)

// leaseValue is what a lease holds: when it was written, for operators
// reading the bucket (its TTL, not its value, decides).
func leaseValue() []byte { return []byte(time.Now().UTC().Format(time.RFC3339Nano)) }

// firstLeaseFor bounds how long a starting edge tries to store its first
// lease before it gives up (and exits, for its supervisor to start it
// again).
const firstLeaseFor = time.Minute

// firstLease stores the edge's lease before it serves anyone, and returns
// its revision. On a NATS cluster the lease bucket's stream may not answer
// for a moment (just created, or electing a leader, as the edge starts
// with the others or a node restarts): the put is tried again, each try
// bounded, until it lands, firstLeaseFor has passed, or ctx ends.
func (e *Edge) firstLease(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, firstLeaseFor)
	defer cancel()
	var rev uint64
	err := retry.Do(ctx, retry.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second}, func(ctx context.Context) error {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		var err error
		rev, err = e.leases.Put(pctx, e.id, leaseValue())
		if err != nil && ctx.Err() == nil {
			e.log.Warn("first lease not stored yet; trying again", "err", err)
		}
		return err
	})
	return rev, err
}

// renewLease keeps the edge's lease (at revision rev) alive until ctx
// ends. Each renewal expects the revision of the last: if the lease was
// removed meanwhile (it expired while NATS was away or the process was
// paused, and presence detached this edge's users), the renewal makes a new
// one and asks for a reconcile pass at once, to attach the users again
// within their grace period. So does a renewal after failed ones.
func (e *Edge) renewLease(ctx context.Context, rev uint64) {
	t := time.NewTicker(e.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		val := leaseValue()
		// A renewal that has not been answered by the next one is lost
		// (its request went out on a connection that died): waiting for
		// it longer would only hide a lapse.
		rctx, cancel := context.WithTimeout(ctx, e.cfg.LeaseTTL/3)
		next, err := e.leases.Update(rctx, e.id, val, rev)
		lost := errors.Is(err, jetstream.ErrKeyRevisionMismatch)
		if lost {
			next, err = e.leases.Put(rctx, e.id, val)
		}
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				e.log.Warn("lease renewal failed", "err", err)
			}
		} else {
			rev = next
		}
		e.mu.Lock()
		lapsed := err == nil && (lost || !e.leaseOK)
		e.leaseOK = err == nil
		e.mu.Unlock()
		if lapsed {
			e.log.Warn("lease renewed after a lapse; reconciling sockets with the state", "lost", lost)
			e.kickReconcile()
		}
	}
}
