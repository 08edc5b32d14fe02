package presence

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// roomIndex is who is in each room, and the newest revision of any user
// record of the room, as the reaper's watcher of every user has seen them
// (docs/behaviour.md, Rooms). A join counts the room's users here and
// commits guarded by that revision (state.Txn.PutInGroup): if anyone of
// the room joined, changed or left since, NATS refuses the join, and it is
// tried again on a view that has caught up. So a room never holds more
// users than its limit, whichever replica takes each join.
type roomIndex struct {
	mu     sync.Mutex
	rooms  map[string]*roomUsers
	synced bool // the watcher's initial values are all in
}

type roomUsers struct {
	members map[string]bool
	last    uint64 // the newest revision of any user record of the room
}

func newRoomIndex() *roomIndex { return &roomIndex{rooms: map[string]*roomUsers{}} }

// reset empties the index for a watcher that starts again.
func (x *roomIndex) reset() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.rooms, x.synced = map[string]*roomUsers{}, false
}

// markSynced records that the watcher's initial values are all in.
func (x *roomIndex) markSynced() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.synced = true
}

// saw records a user record's revision: present (a put) or gone.
func (x *roomIndex) saw(room, id string, rev uint64, present bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.sawLocked(room, id, rev, present)
}

func (x *roomIndex) sawLocked(room, id string, rev uint64, present bool) {
	r := x.rooms[room]
	if r == nil {
		if !present {
			return // a room nobody is in needs no entry: its next join expects what NATS tells
		}
		r = &roomUsers{members: map[string]bool{}}
		x.rooms[room] = r
	}
	r.last = max(r.last, rev)
	if present {
		r.members[id] = true
		return
	}
	delete(r.members, id)
	if len(r.members) == 0 {
		delete(x.rooms, room)
	}
}

// joined records the joins this replica committed in one transaction whose
// last write is at revision rev, unless the watcher already brought them or
// anything later of the room (they may even have left since).
func (x *roomIndex) joined(room string, ids []string, rev uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if r := x.rooms[room]; r != nil && r.last >= rev {
		return
	}
	for _, id := range ids {
		x.sawLocked(room, id, rev, true)
	}
}

// view returns the room's users' count and the newest revision of the
// room's user records; ok is false until the index has been read whole.
func (x *roomIndex) view(room string) (users int, last uint64, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.synced {
		return 0, 0, false
	}
	r := x.rooms[room]
	if r == nil {
		return 0, 0, true
	}
	return len(r.members), r.last, true
}

// member reports whether id is one of room's users.
func (x *roomIndex) member(room, id string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	r := x.rooms[room]
	return r != nil && r.members[id]
}

// errIndexBehind asks a join to try again: the index has not been read
// whole yet, or has not caught up with the room.
var errIndexBehind = state.ErrConflict

// A room's joins commit in groups. Each commit is guarded by the room's
// newest revision, so commits of one room go one after another; joins that
// arrive while one is on its way wait in the room's queue, and once enough
// wait (groupJoinsFrom), the next commit takes them all. In a storm of joins into one room (a class
// opening its link, the lobby), the room then commits as many joins as
// arrive, not one per round trip to the stream.
type joinQueues struct {
	mu    sync.Mutex
	rooms map[string][]*pendingJoin // a room is here while its committer runs
}

// pendingJoin is a join waiting for its room's committer.
type pendingJoin struct {
	ctx  context.Context // the request's: a join whose request ended is not committed
	u    state.User
	done chan error // the join's outcome, once
}

// maxJoinsPerCommit bounds a commit's writes far below the server's batch
// limit (protocol.ServerBatchLimit).
const maxJoinsPerCommit = 100

// groupJoinsFrom is how many joins must wait before a commit carries more
// than one. A commit of several is an atomic batch, which a one-replica
// file stream stages in a file store of its own: in a lobby storm of 5,000
// joins at 200 a second, batching whatever waited cost 5 KiB of RSS a user
// and saved no time, since the queue was short. Joins wait a round trip
// each while the queue is short, and go in groups once it is not
// (docs/benchmarks.md, "Joins commit in groups").
const groupJoinsFrom = 8

// admit commits u as a new member of its room, within the room's limit
// (Config.limitFor), in a commit with whatever other joins of the room wait.
func (s *Service) admit(ctx context.Context, u state.User) error {
	p := &pendingJoin{ctx: ctx, u: u, done: make(chan error, 1)}
	s.joins.mu.Lock()
	queue, running := s.joins.rooms[u.Room]
	s.joins.rooms[u.Room] = append(queue, p)
	s.joins.mu.Unlock()
	if !running {
		go s.commitJoins(u.Room)
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		// Its commit may still carry it: the edge then reports the
		// connection ended, and the user leaves.
		return ctx.Err()
	}
}

// commitJoins commits the room's waiting joins, a group at a time, until
// none waits.
func (s *Service) commitJoins(room string) {
	for {
		s.joins.mu.Lock()
		queue := s.joins.rooms[room]
		if len(queue) == 0 {
			delete(s.joins.rooms, room)
			s.joins.mu.Unlock()
			return
		}
		n := 1
		if len(queue) >= groupJoinsFrom {
			n = min(len(queue), maxJoinsPerCommit)
		}
		group := queue[:n]
		s.joins.rooms[room] = queue[len(group):]
		s.joins.mu.Unlock()
		s.commitJoinGroup(room, group)
	}
}

// commitJoinGroup commits one group of joins of room and answers each. The
// index may lag the room by a change or two: the commit is guarded by the
// revision the index has, and a refusal means a fresher view is needed. A
// room whose last change was purged away (its newest record was a departed
// user's, removed for good) tells its revision in the refusal; the next
// attempt expects that.
func (s *Service) commitJoinGroup(room string, group []*pendingJoin) {
	var live []*pendingJoin
	deadline := time.Time{}
	for _, p := range group {
		if err := p.ctx.Err(); err != nil {
			p.done <- err
			continue
		}
		live = append(live, p)
		d, ok := p.ctx.Deadline()
		if !ok {
			d = time.Now().Add(joinCommitFor)
		}
		if d.After(deadline) {
			deadline = d
		}
	}
	if len(live) == 0 {
		return
	}
	// The commit serves every join of the group: it runs until the last
	// of them gives up, with the first one's values (its request ID).
	ctx, cancel := context.WithDeadline(context.WithoutCancel(live[0].ctx), deadline)
	defer cancel()
	var told uint64 // what NATS said the room's newest revision is
	outcome := make([]error, len(live))
	err := state.Retry(ctx, func(ctx context.Context) error {
		clear(outcome)
		last, admitted, err := s.admitGroup(ctx, room, live, outcome)
		if err != nil || len(admitted) == 0 {
			return err
		}
		if told != 0 && told < last {
			last = told // the index's newest was purged since
		}
		var txn state.Txn
		ids := make([]string, len(admitted))
		for i, u := range admitted {
			ids[i] = u.ID
			if i == 0 {
				txn.PutInGroup(state.UserKey(room, u.ID), state.RoomUsers(room), last, u)
			} else {
				txn.Put(state.UserKey(room, u.ID), 0, u)
			}
		}
		seq, err := s.store.CommitAt(ctx, &txn)
		if err == nil {
			// Known here before the watcher brings them: the next
			// commit of the room expects it.
			s.rooms.joined(room, ids, seq)
		}
		if n, ok := state.ConflictLast(err); ok {
			told = n
		} else if errors.Is(err, state.ErrConflict) {
			told = 0
		}
		return err
	})
	for i, p := range live {
		p.done <- cmp.Or(err, outcome[i])
	}
}

// joinCommitFor bounds a commit of joins whose requests have no deadline.
const joinCommitFor = 10 * time.Second

// admitGroup decides, on the index's view of room, which joins of group
// are admitted: it returns the room's newest revision as the index has it
// and the users to write, and sets the outcome of each join refused. An
// error asks for the whole group to be tried again.
func (s *Service) admitGroup(ctx context.Context, room string, group []*pendingJoin, outcome []error) (uint64, []state.User, error) {
	users, last, ok := s.rooms.view(room)
	if !ok {
		return 0, nil, errIndexBehind
	}
	limit := s.cfg.limitFor(room) // 0: none
	var admitted []state.User
	full := false
	for i, p := range group {
		switch {
		case s.rooms.member(room, p.u.ID) || slices.ContainsFunc(admitted, func(u state.User) bool { return u.ID == p.u.ID }):
			outcome[i] = protocol.Errorf(protocol.CodeConflict, "user ID already taken; join again")
		case limit > 0 && users+len(admitted) >= limit:
			full = true
			outcome[i] = protocol.Errorf(protocol.CodeRoomFull, "this room is full (%d people); try again later, or make a new room", limit)
		default:
			admitted = append(admitted, p.u)
		}
	}
	if full {
		// Full as far as the index knows; it may not know yet of
		// someone who just left.
		newest, err := s.store.GroupLast(ctx, state.RoomUsers(room))
		if err != nil {
			return 0, nil, err
		}
		if newest > last {
			return 0, nil, errIndexBehind
		}
	}
	return last, admitted, nil
}

// sizes returns how many users each room has, once the index has been
// read whole.
func (x *roomIndex) sizes() ([]int, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.synced {
		return nil, false
	}
	out := make([]int, 0, len(x.rooms))
	for _, r := range x.rooms {
		out = append(out, len(r.members))
	}
	return out, true
}

// roomsCountEvery is how often presence reports the rooms' sizes.
const roomsCountEvery = time.Second

// countRoomsUntilDone reports the rooms' sizes (metrics.RoomSizes) every
// roomsCountEvery until ctx ends.
func (s *Service) countRoomsUntilDone(ctx context.Context) {
	tick := time.NewTicker(roomsCountEvery)
	defer tick.Stop()
	for {
		if sizes, ok := s.rooms.sizes(); ok {
			s.metrics.Rooms.Set(sizes)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// limitFor is room's member limit.
func (c Config) limitFor(room string) int {
	if room == protocol.Lobby {
		return c.LobbyMaxUsers
	}
	return c.RoomMaxUsers
}
