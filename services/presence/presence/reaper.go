package presence

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/requestid"
	"github.com/buddytok/buddytok/pkg/retry"
	"github.com/buddytok/buddytok/pkg/state"
)

// Deleted records are purged for good purgeAfter their deletion, checked
// every purgeEvery.
const (
	purgeEvery = time.Minute
	purgeAfter = 2 * time.Minute
)

// reaper keeps a cache, rebuilt from two KV watchers, of every user and
// every live edge lease. On each sweep it detaches users whose edge lost its
// lease and asks the invites service to remove users whose grace period ran
// out. Every replica runs one; compare-and-set makes duplicates harmless.
//
// A lease's expiry reaches the lease watcher as a marker that lives only
// as long as a lease. A replica cut off from NATS across that moment (its
// watcher then resumes after the marker) would never learn it, and the
// dead edge's users would stay listed for good; so every lease TTL the
// reaper also reads the lease of each edge it believes alive (checkLeases).
type reaper struct {
	users      map[string]state.User
	detached   map[string]time.Time // server time each detached user was first seen detached
	clock      serverClock
	edges      map[string]uint64 // live edges: the revision of the lease last seen
	leasesSeen bool              // the lease watcher delivered its initial values
	checks     chan []leaseCheck // the outcome of a checkLeases under way
	checking   bool
	edgeGone   map[string]time.Time // edges first seen without a lease
	inflight   map[string]bool      // users with a detach or leave under way
	finished   chan string          // user IDs whose detach or leave is over
	slots      chan struct{}        // bounds the actions under way
}

// maxActions bounds the detaches and leaves one replica runs at once, so
// that a dead edge with thousands of users is handled in parallel but
// without flooding the other services.
const maxActions = 32

// purgeUntilDone removes, every purgeEvery until ctx ends, the records
// deleted more than purgeAfter ago. It runs apart from the reaper: a purge
// of thousands of keys is one request each, and the reaper's sweeps must
// not wait behind it.
func (s *Service) purgeUntilDone(ctx context.Context) {
	tick := time.NewTicker(purgeEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n, err := s.store.PurgeDeleted(ctx, purgeAfter)
		s.metrics.ReaperActions.WithLabelValues("purge", metrics.OK).Add(float64(n))
		if err != nil && ctx.Err() == nil {
			s.metrics.ReaperActions.WithLabelValues("purge", metrics.Failed).Inc()
			s.log.Warn("purging deleted records failed; the rest waits for the next round", "purged", n, "err", err)
		} else if n > 0 {
			s.log.Debug("purged deleted records", "count", n)
		}
	}
}

// reapUntilDone runs the reaper until ctx ends, restarting it (with fresh
// watchers and caches) if it fails.
func (s *Service) reapUntilDone(ctx context.Context) error {
	return retry.Do(ctx, retry.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second}, func(ctx context.Context) error {
		err := s.reap(ctx)
		if ctx.Err() == nil {
			s.log.Warn("reaper restarting", "err", err)
		}
		return err
	})
}

func (s *Service) reap(ctx context.Context) error {
	uw, err := s.store.KV().Watch(ctx, state.AllUsers)
	if err != nil {
		return fmt.Errorf("presence: watch users: %w", err)
	}
	defer func() { _ = uw.Stop() }()
	lw, err := s.leases.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("presence: watch leases: %w", err)
	}
	defer func() { _ = lw.Stop() }()

	s.rooms.reset()
	r := &reaper{
		users: map[string]state.User{}, detached: map[string]time.Time{}, edges: map[string]uint64{}, edgeGone: map[string]time.Time{},
		inflight: map[string]bool{}, finished: make(chan string, maxActions), slots: make(chan struct{}, maxActions),
		checks: make(chan []leaseCheck, 1),
	}
	var actions sync.WaitGroup
	defer actions.Wait()
	tick := time.NewTicker(s.cfg.SweepEvery)
	defer tick.Stop()
	recheck := time.NewTicker(s.cfg.LeaseTTL)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-uw.Updates():
			if !ok {
				return cmp.Or(ctx.Err(), errors.New("presence: user watcher closed"))
			}
			r.applyUser(e, s.rooms)
		case e, ok := <-lw.Updates():
			if !ok {
				return cmp.Or(ctx.Err(), errors.New("presence: lease watcher closed"))
			}
			r.applyLease(e)
		case id := <-r.finished:
			delete(r.inflight, id)
		case <-tick.C:
			s.sweep(ctx, r, &actions)
		case <-recheck.C:
			s.checkLeases(ctx, r, &actions)
		case checked := <-r.checks:
			r.checking = false
			s.applyChecks(r, checked)
		}
	}
}

// serverClock estimates the NATS server's current time from the time
// stamps the server puts on stored entries, advanced by this process's
// monotonic clock since the latest one arrived. Grace periods are measured
// on it, so replicas whose wall clocks disagree still agree on when a grace
// period ends.
type serverClock struct {
	latest time.Time // the newest server time stamp seen
	seenAt time.Time // when it arrived (monotonic)
}

func (c *serverClock) observe(stamp time.Time) {
	if stamp.After(c.latest) {
		c.latest, c.seenAt = stamp, time.Now()
	}
}

func (c *serverClock) now() time.Time {
	if c.latest.IsZero() {
		return time.Now()
	}
	return c.latest.Add(time.Since(c.seenAt))
}

func (r *reaper) applyUser(e jetstream.KeyValueEntry, rooms *roomIndex) {
	if e == nil {
		rooms.markSynced()
		return
	}
	r.clock.observe(e.Created())
	k, ok := state.ParseKey(e.Key())
	if !ok {
		return
	}
	id := k.ID
	rooms.saw(k.Room, id, e.Revision(), e.Operation() == jetstream.KeyValuePut)
	if e.Operation() != jetstream.KeyValuePut {
		delete(r.users, id)
		delete(r.detached, id)
		return
	}
	var u state.User
	if err := json.Unmarshal(e.Value(), &u); err != nil {
		return
	}
	u.Room = k.Room // where the record is kept, which its actions name
	prev, known := r.users[id]
	switch {
	case u.Connected:
		delete(r.detached, id)
	case !known || prev.Connected || prev.Conn != u.Conn || r.detached[id].IsZero():
		// The grace period starts at the server's time stamp of the first
		// revision seen detached (for a user first seen already detached,
		// a little later than the detach: never earlier).
		r.detached[id] = e.Created()
	}
	r.users[id] = u
}

func (r *reaper) applyLease(e jetstream.KeyValueEntry) {
	if e == nil {
		r.leasesSeen = true
		return
	}
	r.clock.observe(e.Created())
	if e.Operation() == jetstream.KeyValuePut {
		r.edges[e.Key()] = e.Revision()
		delete(r.edgeGone, e.Key())
		return
	}
	delete(r.edges, e.Key())
}

// leaseCheck is what checkLeases found of one edge's lease: whether it
// still exists, as read after the watcher had delivered revision seen.
type leaseCheck struct {
	edge  string
	seen  uint64
	alive bool
}

// leaseCheckTimeout bounds one read of an edge's lease.
const leaseCheckTimeout = 2 * time.Second

// checkLeases reads, apart from the reaper's loop, the lease of every edge
// the reaper believes alive; applyChecks then forgets those whose lease is
// gone. One check runs at a time.
func (s *Service) checkLeases(ctx context.Context, r *reaper, actions *sync.WaitGroup) {
	if r.checking || !r.leasesSeen || len(r.edges) == 0 {
		return
	}
	asked := make([]leaseCheck, 0, len(r.edges))
	for edge, rev := range r.edges {
		asked = append(asked, leaseCheck{edge: edge, seen: rev, alive: true})
	}
	r.checking = true
	actions.Add(1)
	go func() {
		defer actions.Done()
		for i, c := range asked {
			gctx, cancel := context.WithTimeout(ctx, leaseCheckTimeout)
			e, err := s.leases.Get(gctx, c.edge)
			cancel()
			switch {
			case err == nil:
				asked[i].alive = e.Operation() == jetstream.KeyValuePut
			case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
				asked[i].alive = false
			}
			// Any other error tells nothing: the edge stays alive until
			// a later check or the watcher says otherwise.
		}
		select {
		case r.checks <- asked:
		case <-ctx.Done():
		}
	}()
}

// applyChecks forgets each edge whose lease a check found gone, unless the
// watcher delivered a newer lease of it meanwhile (a lease made again). Its
// users are then detached as for any edge without a lease.
func (s *Service) applyChecks(r *reaper, checked []leaseCheck) {
	for _, c := range checked {
		if rev, ok := r.edges[c.edge]; c.alive || !ok || rev != c.seen {
			continue
		}
		delete(r.edges, c.edge)
		s.metrics.ReaperActions.WithLabelValues("lease_gone", metrics.OK).Inc()
		s.log.Warn("an edge's lease is gone though its expiry never reached this replica (it was cut off from NATS?); its users will be detached", "edge", c.edge)
	}
}

func (s *Service) sweep(ctx context.Context, r *reaper, actions *sync.WaitGroup) {
	now := s.now()
	serverNow := r.clock.now()
	for id, u := range r.users {
		if r.inflight[id] {
			continue
		}
		var action func(context.Context)
		switch {
		case u.Connected && r.leasesSeen && r.edges[u.Edge] == 0:
			// An edge's lease may reach this replica a little after its
			// first user does: wait two sweeps before believing it is gone.
			since, seen := r.edgeGone[u.Edge]
			if !seen {
				r.edgeGone[u.Edge] = now
				continue
			}
			if now.Sub(since) < 2*s.cfg.SweepEvery {
				continue
			}
			action = s.detachAction(id, u.Room, u.Conn, u.Edge)
		case !u.Connected && serverNow.Sub(r.detached[id]) >= s.cfg.Grace:
			action = s.leaveAction(id, u.Room, u.Conn)
		default:
			continue
		}
		if !r.start(ctx, id, action, actions) {
			return // busy: the next sweep picks up the rest
		}
	}
}

// start runs action on user id in a goroutine of its own if a slot is
// free, and reports whether it did.
func (r *reaper) start(ctx context.Context, id string, action func(context.Context), actions *sync.WaitGroup) bool {
	select {
	case r.slots <- struct{}{}:
	default:
		return false
	}
	r.inflight[id] = true
	actions.Add(1)
	go func() {
		defer actions.Done()
		// Each action is a request of its own, logged as one.
		action(requestid.With(ctx, requestid.New()))
		<-r.slots
		select {
		case r.finished <- id:
		case <-ctx.Done():
		}
	}()
	return true
}

// detachAction and leaveAction are the sweep's actions on a user. They are
// made apart from the sweep's loop, which visits every user every sweep:
// a closure made in the loop would move each user it visits to the heap.
func (s *Service) detachAction(id, room, conn, edge string) func(context.Context) {
	return func(ctx context.Context) {
		err := s.detach(ctx, room, id, conn, nil)
		s.metrics.ReaperActions.WithLabelValues("detach", metrics.Outcome(err)).Inc()
		if err != nil {
			s.log.WarnContext(ctx, "detach after lease expiry failed", "user", id, "edge", edge, "err", err)
		}
	}
}

func (s *Service) leaveAction(id, room, conn string) func(context.Context) {
	return func(ctx context.Context) {
		err := natsrpc.Call(ctx, s.nc, protocol.SubjectInvitesLeave, protocol.LeaveRequest{Room: room, UserID: id, Conn: conn}, nil)
		switch code := protocol.CodeOf(err); {
		case err == nil, code == protocol.CodeConflict, code == protocol.CodeNotFound:
			// Done, or resumed or removed meanwhile.
			s.metrics.ReaperActions.WithLabelValues("leave", metrics.OK).Inc()
		default:
			s.metrics.ReaperActions.WithLabelValues("leave", metrics.Failed).Inc()
			s.log.WarnContext(ctx, "leave after grace failed; retrying next sweep", "user", id, "err", err)
		}
	}
}
