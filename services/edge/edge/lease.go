package edge

import (
	"context"
	"time"

	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/retry"
)

// The edge's lease is written by presence, under the ID the edge's lease
// secret names (protocol.EdgeID): the edge role may not write the lease
// bucket, so a leaked edge credential cannot keep another edge's lease
// alive nor end it.

// firstLeaseFor bounds how long a starting edge tries to store its first
// lease before it gives up (and exits, for its supervisor to start it
// again).
const firstLeaseFor = time.Minute

// storeLease asks presence to store, renew (rev > 0) or release the
// edge's lease.
func (e *Edge) storeLease(ctx context.Context, rev uint64, release bool) (protocol.LeaseReply, error) {
	var reply protocol.LeaseReply
	err := natsrpc.Call(ctx, e.nc, protocol.SubjectPresenceLease, protocol.LeaseRequest{Secret: e.secret, Revision: rev, Release: release}, &reply)
	return reply, err
}

// firstLease stores the edge's lease before it serves anyone, and returns
// its revision. Presence may not answer yet (starting with the edge, or
// its stream electing a leader on a NATS cluster): the request is tried
// again, each try bounded, until it lands, firstLeaseFor has passed, or
// ctx ends.
func (e *Edge) firstLease(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, firstLeaseFor)
	defer cancel()
	var rev uint64
	err := retry.Do(ctx, retry.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second}, func(ctx context.Context) error {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		reply, err := e.storeLease(pctx, 0, false)
		if err != nil && ctx.Err() == nil {
			e.log.Warn("first lease not stored yet; trying again", "err", err)
		}
		rev = reply.Revision
		return err
	})
	return rev, err
}

// renewLease keeps the edge's lease (at revision rev) alive until ctx
// ends. Each renewal expects the revision of the last: if the lease was
// removed meanwhile (it expired while NATS was away or the process was
// paused, and presence detached this edge's users), presence makes a new
// one and the edge asks for a reconcile pass at once, to attach the users
// again within their grace period. So does a renewal after failed ones.
func (e *Edge) renewLease(ctx context.Context, rev uint64) {
	t := time.NewTicker(e.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		reply, err := e.renew(ctx, rev)
		if err != nil {
			if ctx.Err() == nil {
				e.log.Warn("lease renewal failed", "err", err)
			}
		} else {
			rev = reply.Revision
		}
		e.mu.Lock()
		lapsed := err == nil && (reply.Lost || !e.leaseOK)
		e.leaseOK = err == nil
		e.mu.Unlock()
		if lapsed {
			e.log.Warn("lease renewed after a lapse; reconciling sockets with the state", "lost", reply.Lost)
			e.kickReconcile()
		}
	}
}

// renew asks for one renewal, within a third of the lease's TTL: one not
// answered by the next is lost (it went out on a connection that died),
// and waiting longer would only hide a lapse. It asks in attempts of a
// ninth each: an attempt taken by a presence replica that is paused is
// never answered, and the next one is likely to reach another replica.
func (e *Edge) renew(ctx context.Context, rev uint64) (protocol.LeaseReply, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.LeaseTTL/3)
	defer cancel()
	var reply protocol.LeaseReply
	err := retry.Do(ctx, retry.Policy{Initial: time.Millisecond, Max: 10 * time.Millisecond}, func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, e.cfg.LeaseTTL/9)
		defer cancel()
		var err error
		reply, err = e.storeLease(actx, rev, false)
		return err
	})
	return reply, err
}

// releaseLease asks presence to remove the edge's lease as it shuts down,
// so that presence detaches whatever users are left at once rather than
// after the lease's TTL.
func (e *Edge) releaseLease() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := e.storeLease(ctx, 0, true); err != nil {
		e.log.Warn("lease release failed; it expires on its own", "err", err)
	}
}
