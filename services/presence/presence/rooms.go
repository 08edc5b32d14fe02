package presence

import (
	"context"
	"errors"
	"hash/fnv"
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

// joined records a join this replica committed at revision rev, unless
// the watcher already brought it or anything later of the room (the user
// may even have left since).
func (x *roomIndex) joined(room, id string, rev uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if r := x.rooms[room]; r == nil || r.last < rev {
		x.sawLocked(room, id, rev, true)
	}
}

// view returns the room's users' count, whether id is one of them, and the
// newest revision of the room's user records; ok is false until the index
// has been read whole.
func (x *roomIndex) view(room, id string) (users int, member bool, last uint64, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.synced {
		return 0, false, 0, false
	}
	r := x.rooms[room]
	if r == nil {
		return 0, false, 0, true
	}
	return len(r.members), r.members[id], r.last, true
}

// errIndexBehind asks a join to try again: the index has not been read
// whole yet, or has not caught up with the room.
var errIndexBehind = state.ErrConflict

// admit commits u as a new member of its room, within the room's limit
// (0: none). The index may lag the room by a change or two: the commit is
// guarded by the revision the index has, and a refusal means a fresher
// view is needed. A room whose last change was purged away (its newest
// record was a departed user's, removed for good) tells its revision in the
// refusal; the next attempt expects that.
func (s *Service) admit(ctx context.Context, u state.User, limit int) error {
	// This replica's joins of one room go one at a time, each seeing the
	// last one's revision (saw, below): a storm of joins into one room
	// would otherwise all expect the same revision, and all but one
	// start over, again and again.
	lock := &s.joinLocks[roomStripe(u.Room)]
	lock.Lock()
	defer lock.Unlock()
	var told uint64 // what NATS said the room's newest revision is
	return state.Retry(ctx, func(ctx context.Context) error {
		users, member, last, ok := s.rooms.view(u.Room, u.ID)
		switch {
		case !ok:
			return errIndexBehind
		case member:
			return protocol.Errorf(protocol.CodeConflict, "user ID already taken; join again")
		case limit > 0 && users >= limit:
			// Full as far as the index knows; it may not know yet of
			// someone who just left.
			newest, err := s.store.GroupLast(ctx, state.RoomUsers(u.Room))
			if err != nil {
				return err
			}
			if newest > last {
				return errIndexBehind
			}
			return protocol.Errorf(protocol.CodeRoomFull, "this room is full (%d people); try again later, or make a new room", limit)
		}
		if told != 0 && told < last {
			last = told // the index's newest was purged since
		}
		var txn state.Txn
		txn.PutInGroup(state.UserKey(u.Room, u.ID), state.RoomUsers(u.Room), last, u)
		seq, err := s.store.CommitAt(ctx, &txn)
		if err == nil {
			// Known here before the watcher brings it: the next join of
			// the room expects it.
			s.rooms.joined(u.Room, u.ID, seq)
		}
		if n, ok := state.ConflictLast(err); ok {
			told = n
		} else if errors.Is(err, state.ErrConflict) {
			told = 0
		}
		return err
	})
}

// joinStripes is how many locks a replica's joins are spread over by
// room: joins of rooms that share one wait for each other, briefly.
const joinStripes = 256

// roomStripe is room's join lock.
func roomStripe(room string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(room))
	return int(h.Sum32() % joinStripes)
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
