package presence_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
	"github.com/buddytok/buddytok/services/invites/invites"
	"github.com/buddytok/buddytok/services/presence/presence"
)

// The edge these tests play, holding its lease while a test runs: its
// lease secret, and the ID that names.
var (
	edgeSecret = protocol.NewSecret()
	edgeID     = protocol.EdgeID(edgeSecret)
)

// rig is a presence replica and an invites replica (which removes users
// once their grace period ends) on an embedded NATS with the roles' users.
// The test plays an edge: it holds edgeID's lease and makes the edge's
// requests, as the edge role.
type rig struct {
	t     *testing.T
	ctx   context.Context
	edge  *nats.Conn
	store *state.Store
}

func newRig(t *testing.T, grace time.Duration) *rig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	roles := natstest.StartRoles(t)
	cfg := presence.Config{Grace: grace, LeaseTTL: time.Second, SweepEvery: 20 * time.Millisecond}
	natstest.Run(t, natstest.NewReplica(t, roles, presence.Program, cfg), natstest.NewReplica(t, roles, invites.Program, invites.Config{}))
	edge := roles.As(permissions.Edge)
	holdLease(ctx, t, edge, edgeSecret)
	store, err := state.Open(ctx, roles.Admin(), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, ctx: ctx, edge: edge, store: store}
}

// holdLease keeps the lease of the edge whose secret is secret alive until
// ctx ends, as a running edge does: presence stores and renews it.
func holdLease(ctx context.Context, t testing.TB, edge *nats.Conn, secret string) {
	t.Helper()
	var lease protocol.LeaseReply
	if err := natsrpc.Call(ctx, edge, protocol.SubjectPresenceLease, protocol.LeaseRequest{Secret: secret}, &lease); err != nil {
		t.Fatal(err)
	}
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				var next protocol.LeaseReply
				if natsrpc.Call(ctx, edge, protocol.SubjectPresenceLease, protocol.LeaseRequest{Secret: secret, Revision: lease.Revision}, &next) == nil {
					lease = next
				}
			}
		}
	}()
}

func (r *rig) call(subject string, req, resp any) error {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	return natsrpc.Call(ctx, r.edge, subject, req, resp)
}

// joined is a user the rig joined, with what proves it.
type joined struct {
	id, secret, conn string
}

func (r *rig) join(name, edge string) joined {
	r.t.Helper()
	u := joined{id: protocol.NewID(), secret: protocol.NewSecret(), conn: protocol.NewID()}
	var reply protocol.JoinReply
	if err := r.call(protocol.SubjectPresenceJoin, protocol.JoinRequest{Room: protocol.Lobby, UserID: u.id, Name: name, Edge: edge, Conn: u.conn, Secret: u.secret}, &reply); err != nil {
		r.t.Fatalf("join %s: %v", name, err)
	}
	if reply.User.ID != u.id || reply.User.Name != name || reply.User.State != protocol.StateAvailable {
		r.t.Fatalf("join %s: %+v", name, reply.User)
	}
	return u
}

// user reads a user's record; ok is false once the user has left.
func (r *rig) user(id string) (state.User, bool) {
	r.t.Helper()
	u, _, err := r.store.GetUser(r.ctx, protocol.Lobby, id)
	if errors.Is(err, state.ErrNotFound) {
		return u, false
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return u, true
}

// waitGone waits until the user has left, and returns when it saw it.
func (r *rig) waitGone(id string) time.Time {
	r.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, ok := r.user(id); !ok {
			return time.Now()
		}
		if time.Now().After(deadline) {
			u, _ := r.user(id)
			r.t.Fatalf("%s never left: %+v", id, u)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A join makes an available user attached to its connection; a user ID
// is never taken twice.
func TestJoin(t *testing.T) {
	t.Parallel()
	r := newRig(t, time.Minute)
	ann := r.join("Ann", edgeID)
	u, ok := r.user(ann.id)
	if !ok || !u.Connected || u.Edge != edgeID || u.Conn != ann.conn || !u.Proves(ann.secret) || u.JoinedAt == 0 {
		t.Fatalf("record %+v", u)
	}
	err := r.call(protocol.SubjectPresenceJoin, protocol.JoinRequest{Room: protocol.Lobby, UserID: ann.id, Name: "Not Ann", Edge: edgeID, Conn: protocol.NewID(), Secret: protocol.NewSecret()}, nil)
	natstest.WantCode(t, err, protocol.CodeConflict)
}

// Resume, disconnect and attach each act only with the user's secret and
// on the user's own connection.
func TestProofAndRefusals(t *testing.T) {
	t.Parallel()
	r := newRig(t, time.Minute)
	ann := r.join("Ann", edgeID)
	wrong := protocol.NewSecret()
	tests := []struct {
		name    string
		subject string
		req     any
		code    protocol.Code
	}{
		{"resume with another secret", protocol.SubjectPresenceResume,
			protocol.ResumeRequest{Room: protocol.Lobby, UserID: ann.id, Secret: wrong, Edge: edgeID, Conn: protocol.NewID()}, protocol.CodeResumeFailed},
		{"resume someone unknown", protocol.SubjectPresenceResume,
			protocol.ResumeRequest{Room: protocol.Lobby, UserID: protocol.NewID(), Secret: ann.secret, Edge: edgeID, Conn: protocol.NewID()}, protocol.CodeResumeFailed},
		{"disconnect with another secret", protocol.SubjectPresenceDisconnect,
			protocol.DisconnectRequest{Room: protocol.Lobby, UserID: ann.id, Conn: ann.conn, Secret: wrong}, protocol.CodeForbidden},
		{"attach with another secret", protocol.SubjectPresenceAttach,
			protocol.AttachRequest{Room: protocol.Lobby, UserID: ann.id, Edge: edgeID, Conn: ann.conn, Secret: wrong}, protocol.CodeForbidden},
		{"attach another connection", protocol.SubjectPresenceAttach,
			protocol.AttachRequest{Room: protocol.Lobby, UserID: ann.id, Edge: edgeID, Conn: protocol.NewID(), Secret: ann.secret}, protocol.CodeSuperseded},
		{"attach someone who left", protocol.SubjectPresenceAttach,
			protocol.AttachRequest{Room: protocol.Lobby, UserID: protocol.NewID(), Edge: edgeID, Conn: ann.conn, Secret: ann.secret}, protocol.CodeNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			natstest.WantCode(t, r.call(tc.subject, tc.req, nil), tc.code)
		})
	}
	if u, _ := r.user(ann.id); !u.Connected || u.Conn != ann.conn {
		t.Fatalf("refused requests changed Ann: %+v", u)
	}
	// Detached while her connection stayed open (a lapsed lease), Ann is
	// attached again by her edge, with her proof.
	if err := r.call(protocol.SubjectPresenceDisconnect, protocol.DisconnectRequest{Room: protocol.Lobby, UserID: ann.id, Conn: ann.conn, Secret: ann.secret}, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.call(protocol.SubjectPresenceAttach, protocol.AttachRequest{Room: protocol.Lobby, UserID: ann.id, Edge: edgeID, Conn: ann.conn, Secret: ann.secret}, nil); err != nil {
		t.Fatalf("attach: %v", err)
	}
	if u, _ := r.user(ann.id); !u.Connected || u.DisconnectedAt != 0 {
		t.Fatalf("attached, yet %+v", u)
	}
}

// A disconnected user is kept, unchanged, for the grace period: a resume
// within it returns the same user, on the new connection, and tells the old
// one it was superseded; without one, the user leaves once it ends, not
// before.
func TestGracePeriod(t *testing.T) {
	t.Parallel()
	const grace = 500 * time.Millisecond
	r := newRig(t, grace)
	ann := r.join("Ann", edgeID)
	bob := r.join("Bob", edgeID)

	for _, u := range []joined{ann, bob} {
		if err := r.call(protocol.SubjectPresenceDisconnect, protocol.DisconnectRequest{Room: protocol.Lobby, UserID: u.id, Conn: u.conn, Secret: u.secret}, nil); err != nil {
			t.Fatalf("disconnect: %v", err)
		}
	}
	disconnected := time.Now()
	if u, ok := r.user(ann.id); !ok || u.Connected || u.DisconnectedAt == 0 {
		t.Fatalf("just disconnected: %+v, %v; want kept, detached", u, ok)
	}

	superseded, err := r.edge.SubscribeSync(protocol.EventSubject(protocol.Lobby, ann.id))
	if err != nil {
		t.Fatal(err)
	}
	newConn := protocol.NewID()
	var p protocol.Personal
	if err := r.call(protocol.SubjectPresenceResume, protocol.ResumeRequest{Room: protocol.Lobby, UserID: ann.id, Secret: ann.secret, Edge: edgeID, Conn: newConn}, &p); err != nil {
		t.Fatalf("resume within the grace period: %v", err)
	}
	if p.User.ID != ann.id || p.User.Name != "Ann" {
		t.Fatalf("resumed as %+v", p.User)
	}
	if u, _ := r.user(ann.id); !u.Connected || u.Conn != newConn || u.DisconnectedAt != 0 {
		t.Fatalf("resumed record %+v", u)
	}
	m, err := superseded.NextMsg(10 * time.Second)
	if err != nil || m.Header.Get(protocol.HeaderControl) != protocol.ControlSuperseded || string(m.Data) != newConn {
		t.Fatalf("the user's other connections were not told: %v %v", m, err)
	}

	gone := r.waitGone(bob.id)
	if early := grace - gone.Sub(disconnected); early > 50*time.Millisecond {
		t.Fatalf("Bob left %s before his grace period of %s ended", early, grace)
	}
	if _, ok := r.user(ann.id); !ok {
		t.Fatal("Ann resumed, yet left with Bob")
	}
}

// The users of an edge whose lease ends are detached, and leave once their
// grace period ends too.
func TestEdgeWithoutLease(t *testing.T) {
	t.Parallel()
	r := newRig(t, 300*time.Millisecond)
	ann := r.join("Ann", "deadedge")
	bob := r.join("Bob", "deadedge")
	deadline := time.Now().Add(15 * time.Second)
	for {
		u, ok := r.user(ann.id)
		if ok && !u.Connected {
			break
		}
		if !ok || time.Now().After(deadline) {
			t.Fatalf("Ann, on an edge without a lease: %+v %v; want detached", u, ok)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.waitGone(ann.id)
	r.waitGone(bob.id)
}
