package presence

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/protocol"
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
	// The value is for operators reading the bucket: the bucket's TTL, not
	// the value, decides.
	val := []byte(time.Now().UTC().Format(time.RFC3339Nano))
	lost := false
	if req.Revision != 0 {
		rev, err := s.leases.Update(ctx, id, val, req.Revision)
		if err == nil {
			return protocol.LeaseReply{Revision: rev}, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return protocol.LeaseReply{}, fmt.Errorf("presence: renew lease of edge %s: %w", id, err)
		}
		lost = true
	}
	rev, err := s.leases.Put(ctx, id, val)
	if err != nil {
		return protocol.LeaseReply{}, fmt.Errorf("presence: store lease of edge %s: %w", id, err)
	}
	return protocol.LeaseReply{Revision: rev, Lost: lost}, nil
}
