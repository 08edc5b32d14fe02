package presence_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// Presence stores an edge's lease under the ID its secret names, and
// nowhere else: what an edge credential asks with one secret never
// reaches the lease of the edge holding another. A renewal of a lease that
// lapsed makes a new one and says so, and a renewal asked again after its
// reply was lost does not; a release removes it.
func TestLeaseFollowsTheSecret(t *testing.T) {
	t.Parallel()
	r := newRig(t, time.Minute)
	leases, err := r.store.JetStream().KeyValue(r.ctx, state.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	mine := protocol.NewSecret()
	lease := func(req protocol.LeaseRequest) protocol.LeaseReply {
		t.Helper()
		var reply protocol.LeaseReply
		if err := r.call(protocol.SubjectPresenceLease, req, &reply); err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		return reply
	}
	revision := func(id string) uint64 {
		t.Helper()
		e, err := leases.Get(r.ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return e.Revision()
	}
	victim := revision(edgeID) // the rig's edge, holding its lease
	if victim == 0 {
		t.Fatal("the rig's edge holds no lease")
	}

	first := lease(protocol.LeaseRequest{Secret: mine})
	if got := revision(protocol.EdgeID(mine)); first.Revision == 0 || got != first.Revision || first.Lost {
		t.Fatalf("stored: %+v, the bucket has revision %d", first, got)
	}
	renewed := lease(protocol.LeaseRequest{Secret: mine, Revision: first.Revision})
	if renewed.Revision <= first.Revision || renewed.Lost {
		t.Fatalf("renewed: %+v after %+v", renewed, first)
	}
	// The edge asks again when a busy presence answers late: the renewal
	// was stored, its reply lost. That is no lapse.
	again := lease(protocol.LeaseRequest{Secret: mine, Revision: first.Revision})
	if again.Lost || again.Revision <= renewed.Revision {
		t.Fatalf("a renewal asked again after its reply was lost: %+v, want renewed, not lost", again)
	}
	// The lease expires (it is gone): the next renewal stores a new one,
	// lost, and so does that renewal asked again.
	if err := leases.Delete(r.ctx, protocol.EdgeID(mine)); err != nil {
		t.Fatal(err)
	}
	back := lease(protocol.LeaseRequest{Secret: mine, Revision: again.Revision})
	if !back.Lost || back.Revision <= again.Revision {
		t.Fatalf("a renewal of a lease gone: %+v, want a new one, lost", back)
	}
	backAgain := lease(protocol.LeaseRequest{Secret: mine, Revision: again.Revision})
	if !backAgain.Lost || backAgain.Revision <= back.Revision {
		t.Fatalf("that renewal asked again: %+v, want lost too", backAgain)
	}
	if next := lease(protocol.LeaseRequest{Secret: mine, Revision: backAgain.Revision}); next.Lost {
		t.Fatalf("the renewal after: %+v, want not lost", next)
	}
	lease(protocol.LeaseRequest{Secret: mine, Release: true})
	if got := revision(protocol.EdgeID(mine)); got != 0 {
		t.Fatalf("released, the lease is still at revision %d", got)
	}
	if revision(edgeID) == 0 {
		t.Fatal("another edge's release removed the rig's edge's lease")
	}

	for _, tc := range []struct {
		name string
		req  protocol.LeaseRequest
	}{
		{"no secret", protocol.LeaseRequest{}},
		{"the victim's ID for a secret", protocol.LeaseRequest{Secret: edgeID, Release: true}},
		{"a secret not in shape", protocol.LeaseRequest{Secret: "x", Release: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			natstest.WantCode(t, r.call(protocol.SubjectPresenceLease, tc.req, nil), protocol.CodeForbidden)
		})
	}
	if revision(edgeID) == 0 {
		t.Fatal("the rig's edge's lease is gone")
	}
}
