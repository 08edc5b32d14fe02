package edge

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/requestid"
	"github.com/buddytok/buddytok/pkg/state"
	"github.com/buddytok/buddytok/services/edge/fanout"
	"github.com/buddytok/buddytok/services/edge/session"
)

// The edge reconciles its open sockets with the state, so that neither can
// drift from the other for long, whatever was lost on the way (a lease
// that lapsed while the edge was cut off or paused, a disconnect report or
// a join reply that never arrived):
//
//   - a socket whose user the state detached from it (the lease lapsed) is
//     attached again, once the edge holds its lease again;
//   - a socket whose user no longer exists is closed with 1001 and
//     session_lost, so the page reconnects (and, its user gone, starts
//     over); one whose user another connection now serves is closed as
//     superseded;
//   - a user the state says this edge serves through a connection it no
//     longer has (a ghost) is reported disconnected, so it leaves after
//     the grace period.
//
// It runs every ReconcileEvery, and at once when the lease is renewed
// after a lapse. Acting on a mismatch other than a detach needs it twice
// in a row and confirmed by a fresh read, because the buddy-list watcher
// may lag a join or resume that has just committed.

// maxAttaches bounds the attach requests one pass has in flight.
const maxAttaches = 32

// reconciler is the state of the reconcile loop (one goroutine).
type reconciler struct {
	e *Edge
	// suspects are the mismatches seen in the previous pass: socket
	// connection IDs and ghost users, by connection ID.
	suspects map[string]bool
}

func (e *Edge) reconcileUntilDone(ctx context.Context) {
	r := &reconciler{e: e, suspects: map[string]bool{}}
	t := time.NewTicker(e.cfg.ReconcileEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.kick:
		}
		r.pass(ctx)
	}
}

// kickReconcile asks for a pass now (the lease was renewed after a lapse).
func (e *Edge) kickReconcile() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

func (r *reconciler) pass(ctx context.Context) {
	e := r.e
	local := e.localConns()
	// After a lapse every socket of the edge needs an attach, all within
	// the grace period: they run side by side, a bounded number at once.
	var attaches sync.WaitGroup
	defer attaches.Wait()
	slots := make(chan struct{}, maxAttaches)
	seen := map[string]bool{}
	for connID, c := range local {
		u, joined := c.JoinedUser()
		if !joined {
			continue
		}
		uid := u.ID
		a, ok := e.hub.Attachment(u.Room, uid)
		switch {
		case ok && a.Edge == e.id && a.Conn == connID && a.Connected:
			continue
		case ok && a.Edge == e.id && a.Conn == connID:
			// Detached while the socket stayed open: no doubt about it.
			// While the lease is not renewed, presence would detach the
			// user again at once: attach once it is (renewLease asks for a
			// pass then).
			if e.leaseHeld() {
				slots <- struct{}{}
				attaches.Add(1)
				go func() {
					defer attaches.Done()
					e.attach(ctx, c, uid)
					<-slots
				}()
			}
			continue
		}
		seen[connID] = true
		if r.suspects[connID] {
			e.settle(ctx, c, uid)
		}
	}
	for connID, u := range e.forgetEnded() {
		e.settleEnded(ctx, connID, u)
	}
	type ghost struct {
		uid string
		a   fanout.Attachment
	}
	var ghosts []ghost
	e.hub.EachAttachment(func(uid string, a fanout.Attachment) {
		if a.Edge != e.id || !a.Connected {
			return
		}
		if _, ok := local[a.Conn]; !ok {
			ghosts = append(ghosts, ghost{uid, a})
		}
	})
	for _, g := range ghosts {
		seen[g.a.Conn] = true
		if r.suspects[g.a.Conn] {
			e.exorcise(ctx, g.a.Room, g.uid, g.a.Conn)
		}
	}
	r.suspects = seen
}

// leaseHeld reports whether the last lease renewal succeeded.
func (e *Edge) leaseHeld() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leaseOK
}

// localConns returns the open sockets by connection ID.
func (e *Edge) localConns() map[string]*session.Session {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]*session.Session, len(e.clients))
	for c := range e.clients {
		out[c.ID()] = c
	}
	return out
}

func (e *Edge) hasConn(connID string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for c := range e.clients {
		if c.ID() == connID {
			return true
		}
	}
	return false
}

// attach asks presence to mark the user connected through c again.
func (e *Edge) attach(ctx context.Context, c *session.Session, uid string) {
	u, ok := c.JoinedAs(uid)
	if !ok {
		return // ended meanwhile, or serves another user
	}
	ctx, cancel := context.WithTimeout(requestid.With(ctx, requestid.New()), e.cfg.RequestTimeout)
	defer cancel()
	req := protocol.AttachRequest{Room: u.Room, UserID: uid, Edge: e.id, Conn: c.ID(), Secret: u.Secret}
	err := natsrpc.Call(ctx, e.nc, protocol.SubjectPresenceAttach, req, nil)
	switch protocol.CodeOf(err) {
	case protocol.CodeNotFound:
		e.closeLost(c, uid)
	case protocol.CodeSuperseded:
		c.Close(protocol.CloseSuperseded, string(protocol.CodeSuperseded))
	default:
		if err != nil {
			e.log.WarnContext(ctx, "attaching a user again failed; next pass retries", "user", uid, "err", err)
			return
		}
		e.log.InfoContext(ctx, "user attached again after a lapse", "user", uid, "conn", c.ID())
	}
}

// closeLost closes a socket whose user no longer exists: the page
// reconnects, and starts over when its resume is refused.
func (e *Edge) closeLost(c *session.Session, uid string) {
	e.log.Info("closing a socket whose user has left", "user", uid, "conn", c.ID())
	c.Close(websocket.CloseGoingAway, string(protocol.CodeSessionLost))
}

// settle acts on a socket whose user the state, read afresh, does not
// serve through it.
func (e *Edge) settle(ctx context.Context, c *session.Session, uid string) {
	joined, ok := c.JoinedAs(uid)
	if !ok {
		return // ended meanwhile
	}
	u, _, err := e.store.GetUser(ctx, joined.Room, uid)
	switch {
	case errors.Is(err, state.ErrNotFound):
		e.closeLost(c, uid)
	case err != nil:
		e.log.Warn("reconcile read failed; next pass retries", "user", uid, "err", err)
	case u.Edge != e.id || u.Conn != c.ID():
		c.Close(protocol.CloseSuperseded, string(protocol.CodeSuperseded))
	case !u.Connected:
		e.attach(ctx, c, uid)
	}
}

// exorcise reports disconnected a user the state says this edge serves
// through a connection it no longer has.
func (e *Edge) exorcise(ctx context.Context, room, uid, connID string) {
	u, _, err := e.store.GetUser(ctx, room, uid)
	if err != nil || u.Edge != e.id || u.Conn != connID || !u.Connected {
		return
	}
	// A connection is tracked before its join or resume is sent, and never
	// again once it has ended: if it is not tracked now, it is gone.
	if e.hasConn(connID) {
		return
	}
	e.mu.Lock()
	r, ok := e.ended[connID]
	e.mu.Unlock()
	switch {
	case ok && r.reporting:
		return // being reported
	case !ok || r.user.ID != uid:
		// Not a connection of this edge's life: it holds no proof for
		// the user.
		e.log.Warn("user attached to a connection this edge never served it on; left alone", "user", uid, "conn", connID)
		return
	}
	e.log.Warn("user attached to a connection that has ended; reporting it again", "user", uid, "conn", connID)
	e.reportDisconnect(r.user, connID)
}

// forgetEnded drops the ended connections that need no more reports: kept
// long enough, and their users no longer attached to them in the state. It
// returns those kept long enough whose users are in no room the edge holds
// open: the state must be read to tell.
func (e *Edge) forgetEnded() map[string]session.User {
	now := time.Now()
	due := map[string]session.User{}
	e.mu.Lock()
	for connID, r := range e.ended {
		if !r.reporting && !now.Before(r.keepUntil) {
			due[connID] = r.user
		}
	}
	e.mu.Unlock()
	// The hub is asked without e.mu held.
	unseen := map[string]session.User{}
	for connID, u := range due {
		a, ok := e.hub.Attachment(u.Room, u.ID)
		switch {
		case !ok:
			unseen[connID] = u
		case a.Edge != e.id || a.Conn != connID || !a.Connected:
			e.mu.Lock()
			if r, ok := e.ended[connID]; ok && !r.reporting {
				delete(e.ended, connID)
			}
			e.mu.Unlock()
		}
	}
	return unseen
}

// settleEnded reads the user of an ended connection, in a room the edge
// does not hold open: a user still attached to it (a join that committed
// after its disconnect was reported) is reported again, else the
// connection is forgotten.
func (e *Edge) settleEnded(ctx context.Context, connID string, u session.User) {
	rec, _, err := e.store.GetUser(ctx, u.Room, u.ID)
	switch {
	case err != nil && !errors.Is(err, state.ErrNotFound):
		e.log.Warn("reconcile read failed; next pass retries", "user", u.ID, "err", err)
	case err == nil && rec.Edge == e.id && rec.Conn == connID && rec.Connected:
		e.log.Warn("user attached to a connection that has ended; reporting it again", "user", u.ID, "conn", connID)
		e.reportDisconnect(u, connID)
	default:
		e.mu.Lock()
		if r, ok := e.ended[connID]; ok && !r.reporting {
			delete(e.ended, connID)
		}
		e.mu.Unlock()
	}
}
