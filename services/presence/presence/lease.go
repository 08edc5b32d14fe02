package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// lease stores, renews or releases the lease of the edge whose secret the
// request holds, under the ID that secret names: the edge role may not
// write the lease bucket, so an edge credential reaches no other edge's
// lease. A renewal expects the revision the edge last stored; if that
// lease lapsed meanwhile (it expired, and this edge's users may have been
// detached), a new one is stored and the reply says so, for the edge to
// attach its users again.
func (s *Service) lease(ctx context.Context, req protocol.LeaseRequest) (protocol.LeaseReply, error) {
	id := protocol.EdgeID(req.Secret)
	if req.Release {
		if err := s.leases.Delete(ctx, id); err != nil {
			return protocol.LeaseReply{}, fmt.Errorf("presence: release lease of edge %s: %w", id, err)
		}
		return protocol.LeaseReply{}, nil
	}
	if req.Revision == 0 {
		rev, err := s.leases.Put(ctx, id, leaseValue(0))
		if err != nil {
			return protocol.LeaseReply{}, fmt.Errorf("presence: store lease of edge %s: %w", id, err)
		}
		return protocol.LeaseReply{Revision: rev}, nil
	}
	rev, err := s.leases.Update(ctx, id, leaseValue(0), req.Revision)
	if err == nil {
		return protocol.LeaseReply{Revision: rev}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return protocol.LeaseReply{}, fmt.Errorf("presence: renew lease of edge %s: %w", id, err)
	}
	// Two attempts of one renewal may both find it moved: the one that
	// loses reads it again.
	for range 3 {
		reply, err := s.renewMoved(ctx, id, req.Revision)
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return reply, err
		}
	}
	return protocol.LeaseReply{}, protocol.Errorf(protocol.CodeConflict, "the lease of edge %s keeps moving; try again", id)
}

// renewMoved renews a lease that is no longer at the revision the edge
// named. Either it lapsed (it expired, or was removed), or an earlier
// attempt of this same renewal was stored and its reply never reached the
// edge: an edge retries a renewal that a busy presence answers late, and
// only that edge's renewals write its lease. Only a lapse is lost: taking
// a late reply for one would have the edge attach all its users again.
func (s *Service) renewMoved(ctx context.Context, id string, named uint64) (protocol.LeaseReply, error) {
	e, err := s.leases.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		rev, err := s.leases.Put(ctx, id, leaseValue(named))
		if err != nil {
			return protocol.LeaseReply{}, fmt.Errorf("presence: store lapsed lease of edge %s: %w", id, err)
		}
		return protocol.LeaseReply{Revision: rev, Lost: true}, nil
	}
	if err != nil {
		return protocol.LeaseReply{}, fmt.Errorf("presence: read moved lease of edge %s: %w", id, err)
	}
	var cur state.Lease
	_ = json.Unmarshal(e.Value(), &cur) // a value in another form restores nothing
	lost := cur.Restores == named
	restores := uint64(0)
	if lost {
		restores = named // a third attempt still learns of the lapse
	}
	rev, err := s.leases.Update(ctx, id, leaseValue(restores), e.Revision())
	if err != nil {
		return protocol.LeaseReply{}, fmt.Errorf("presence: renew moved lease of edge %s: %w", id, err)
	}
	return protocol.LeaseReply{Revision: rev, Lost: lost}, nil
}

// leaseValue is a lease renewed now, restoring the revision restores (0:
// renewed in time).
func leaseValue(restores uint64) []byte {
	data, _ := json.Marshal(state.Lease{RenewedAt: time.Now().UTC(), Restores: restores}) // a time and a number: never fails
	return data
}
