// Package fanout is the edge's buddy lists: one per room that a user of the
// edge is in, and none of any other room. A room is fed by the state
// stream's republished changes of that room alone (a core NATS
// subscription, from the room's first local subscriber to its last) on top
// of a snapshot read when it opens, and fans every change out to the
// room's subscribers through one shared, append-only feed. A subscriber
// gets a snapshot and its place in the feed under one lock, so it gets
// every later change, in order, and none before. The package knows nothing
// of sockets: a subscriber is a Sub, read by whoever writes its frames.
package fanout

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/state"
)

// Hub is the edge's rooms: a room is open while a subscriber is in it.
type Hub struct {
	nc        *nats.Conn
	store     *state.Store
	metrics   *metrics.Metrics
	log       *slog.Logger
	feedBytes int
	running   atomic.Bool

	mu    sync.Mutex
	rooms map[string]*room

	// Rooms to read again, each queued once, and never read twice at once
	// (an older snapshot loaded after a newer one would lose records).
	// A worker reads rooms until none is queued, then waits on wake,
	// which holds a wake-up for each worker at most.
	syncMu  sync.Mutex
	queue   []syncRequest
	queued  map[*room]bool
	reading map[*room]bool
	again   map[*room]string
	wake    chan struct{}
}

type syncRequest struct {
	room   *room
	reason string
}

// syncWorkers bounds the rooms read at once: after a reconnect every room
// is read again, a few at a time.
const syncWorkers = 4

// watchEvery is how often the hub looks for what may have cost a room a
// change without a gap to show it: a reconnect to NATS, or messages a
// room's subscription dropped.
const watchEvery = 250 * time.Millisecond

// Attachment is which connection serves a user, as the state says.
type Attachment struct {
	Room       string
	Edge, Conn string
	Connected  bool
}

// New returns a hub reading rooms from store and their changes from nc.
// Each room's feed keeps feedBytes of frames: a subscriber further behind
// than that is too slow (Sub.Read reports it).
func New(nc *nats.Conn, store *state.Store, m *metrics.Metrics, log *slog.Logger, feedBytes int) *Hub {
	return &Hub{nc: nc, store: store, metrics: m, log: log, feedBytes: feedBytes,
		rooms: map[string]*room{}, queued: map[*room]bool{}, reading: map[*room]bool{}, again: map[*room]string{},
		wake: make(chan struct{}, syncWorkers)}
}

// Subscribe adds a subscriber for user uid in room name, opening the room
// if it is the edge's first subscriber there, and returns it with the
// snapshot it starts from: every change after it is in the feed from the
// Sub's start, none before. wake is told of every frame appended for the
// subscriber (Waker). It waits, within ctx, for a room just opened to be
// read.
func (h *Hub) Subscribe(ctx context.Context, name, uid string, wake Waker) (*Sub, Snapshot, error) {
	r, err := h.open(name)
	if err != nil {
		return nil, Snapshot{}, err
	}
	select {
	case <-r.ready:
	case <-ctx.Done():
		h.release(r)
		return nil, Snapshot{}, fmt.Errorf("fanout: room %s not read in time: %w", name, ctx.Err())
	}
	s, snap := r.subscribe(uid, wake)
	return s, snap, nil
}

// Unsubscribe removes s: nothing more is appended for it. The room closes
// with its last subscriber, and its changes stop reaching the edge.
func (h *Hub) Unsubscribe(s *Sub) {
	s.room.unsubscribe(s)
	h.release(s.room)
}

// open returns room name, opened: subscribed to its changes, then read.
func (h *Hub) open(name string) (*room, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r := h.rooms[name]; r != nil {
		r.refs++
		return r, nil
	}
	r := newRoom(name, h.metrics, h.feedBytes)
	r.resync = func(reason string) { h.requestSync(r, reason) }
	// Subscribed first: whatever is stored after the snapshot's read
	// begins reaches the room, held until the snapshot is in.
	sub, err := h.nc.Subscribe(state.RoomSubject(name), func(m *nats.Msg) {
		c, err := state.ParseRepublished(m)
		if err != nil {
			h.log.Warn("ignoring a message on a room's subject", "room", name, "err", err)
			return
		}
		h.metrics.RoomChanges.Inc()
		r.receive(c)
	})
	if err != nil {
		return nil, fmt.Errorf("fanout: subscribe to room %s: %w", name, err)
	}
	r.sub, r.refs = sub, 1
	h.rooms[name] = r
	h.metrics.RoomsWatched.Inc() // the process's: an all-in-one's edges add up
	h.requestSync(r, "open")
	return r, nil
}

// release drops a hold on r, and closes it with the last.
func (h *Hub) release(r *room) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.refs--; r.refs > 0 {
		return
	}
	if h.rooms[r.name] == r {
		delete(h.rooms, r.name)
	}
	if err := r.sub.Unsubscribe(); err != nil && !h.nc.IsClosed() {
		h.log.Warn("unsubscribing from a room failed", "room", r.name, "err", err)
	}
	r.close()
	h.metrics.RoomsWatched.Dec()
}

// requestSync asks for r to be read again.
func (h *Hub) requestSync(r *room, reason string) {
	h.syncMu.Lock()
	if h.reading[r] {
		h.again[r] = reason
	} else if !h.queued[r] {
		h.queued[r] = true
		h.queue = append(h.queue, syncRequest{r, reason})
	}
	h.syncMu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// nextSync takes the next room to read, if any.
func (h *Hub) nextSync() (syncRequest, bool) {
	h.syncMu.Lock()
	defer h.syncMu.Unlock()
	if len(h.queue) == 0 {
		return syncRequest{}, false
	}
	req := h.queue[0]
	h.queue = slices.Delete(h.queue, 0, 1)
	delete(h.queued, req.room)
	h.reading[req.room] = true
	return req, true
}

// syncDone ends a read of r, queueing it again if that was asked for
// meanwhile.
func (h *Hub) syncDone(r *room) {
	h.syncMu.Lock()
	delete(h.reading, r)
	reason, again := h.again[r]
	delete(h.again, r)
	h.syncMu.Unlock()
	if again {
		h.requestSync(r, reason)
	}
}

// Run reads the rooms that need it and watches for what may have cost a
// room a change, until ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	leader, err := h.nc.Subscribe(state.LeaderElectedSubject, func(*nats.Msg) { h.syncAll("leader") })
	if err != nil {
		return fmt.Errorf("fanout: watch the state stream's leader: %w", err)
	}
	defer func() { _ = leader.Unsubscribe() }()
	var workers sync.WaitGroup
	for range syncWorkers {
		workers.Go(func() { h.syncUntilDone(ctx) })
	}
	defer workers.Wait()
	h.running.Store(true)
	defer h.running.Store(false)
	tick := time.NewTicker(watchEvery)
	defer tick.Stop()
	reconnects := h.nc.Stats().Reconnects
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if n := h.nc.Stats().Reconnects; n != reconnects {
			// Whatever was republished while the connection was down
			// never came.
			reconnects = n
			h.syncAll("reconnect")
		}
		for _, r := range h.openRooms() {
			if r.droppedMore() {
				h.requestSync(r, "dropped")
			}
		}
	}
}

func (h *Hub) syncUntilDone(ctx context.Context) {
	for {
		req, ok := h.nextSync()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-h.wake:
				continue
			}
		}
		h.sync(ctx, req)
		h.syncDone(req.room)
	}
}

// sync reads a room and loads it. A read that fails (NATS is away) is
// tried again until it succeeds, the room closes or ctx ends.
func (h *Hub) sync(ctx context.Context, req syncRequest) {
	r := req.room
	if !r.beginSync() {
		return // closed
	}
	h.metrics.RoomSyncs.WithLabelValues(req.reason).Inc()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.life, cancel)()
	snap, err := h.store.ReadRoom(ctx, r.name)
	if err != nil {
		if ctx.Err() == nil {
			h.log.Warn("reading a room failed", "room", r.name, "err", err)
		}
		return
	}
	r.load(snap)
}

// syncAll asks for every open room to be read again.
func (h *Hub) syncAll(reason string) {
	for _, r := range h.openRooms() {
		h.requestSync(r, reason)
	}
}

func (h *Hub) openRooms() []*room {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*room, 0, len(h.rooms))
	for _, r := range h.rooms {
		out = append(out, r)
	}
	return out
}

// List returns room name's users in the page's order, encoded as a JSON
// array (not to be written to): the open room's, or else read now.
func (h *Hub) List(ctx context.Context, name string) ([]byte, error) {
	h.mu.Lock()
	r := h.rooms[name]
	h.mu.Unlock()
	if r != nil {
		select {
		case <-r.ready:
			return r.list(), nil
		default:
		}
	}
	snap, err := h.store.ReadRoom(ctx, name)
	if err != nil {
		return nil, err
	}
	once := newRoom(name, h.metrics, 0)
	defer once.close()
	once.load(snap)
	return once.list(), nil
}

// Attachment returns where uid is attached, as the records of room say,
// if the hub holds room open and uid is in it.
func (h *Hub) Attachment(room, uid string) (Attachment, bool) {
	h.mu.Lock()
	r := h.rooms[room]
	h.mu.Unlock()
	if r == nil {
		return Attachment{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.conns[uid]
	return a, ok
}

// EachAttachment calls fn with every user of every open room and where it
// is attached, under that room's lock: fn must be quick and must not call
// the hub. Nothing is copied, so that a pass over every user costs no
// memory.
func (h *Hub) EachAttachment(fn func(uid string, a Attachment)) {
	for _, r := range h.openRooms() {
		r.eachAttachment(fn)
	}
}

// Ready reports whether the hub runs: rooms can be opened and read.
func (h *Hub) Ready() bool { return h.running.Load() }
