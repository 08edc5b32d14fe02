package edge

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

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
		val := []byte(time.Now().UTC().Format(time.RFC3339Nano))
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
