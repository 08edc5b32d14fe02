package fanout

import (
	"encoding/json"
	"slices"
	"sync/atomic"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// Waker is how a room tells a subscriber's writer that the feed holds
// frames for it. A writer need not wait on anything while it has nothing
// to write: it is told.
type Waker interface {
	// Own: a frame for this subscriber alone (its sync), to be queued
	// for it after its snapshot, counted against its own limit (not in
	// the feed, where it would count against everyone's window), and
	// written without being held back. Called with the room locked: it
	// must not call back into the hub.
	Own(frame []byte)
	// News: a frame for everyone, which a writer holding a batch back
	// leaves for the batch's end.
	News()
}

// Sub is one subscriber of the hub: a user's connection, reading the feed
// from its own place. It is read by one goroutine (its writer), which
// starts it once the snapshot it was subscribed with is on its way.
type Sub struct {
	room *room
	feed *feed
	user string
	wake Waker
	from uint64 // where the changes after the snapshot start

	// pos is the next frame to read: from until started. The writer
	// moves it; the room reads it to trim the feed of what every
	// subscriber has read.
	pos     atomic.Uint64
	started bool
}

// Start makes the Sub read from the first change after its snapshot. Its
// writer calls it once the snapshot (the welcome) is on its way: before
// that, the changes wait in the feed.
func (s *Sub) Start() {
	if !s.started {
		s.started = true // pos is from
	}
}

// Started reports whether Start was called.
func (s *Sub) Started() bool { return s.started }

// Read appends to frames the feed's frames for this subscriber after its
// place, until they hold max bytes or more, and moves on past them: more
// reports that frames were left for the next read. It reports !ok if the
// subscriber fell so far behind that frames it needs were dropped from the
// feed: it does not read fast enough, and must be let go. A Sub not yet
// started reads nothing.
func (s *Sub) Read(frames [][]byte, max int) (_ [][]byte, more, ok bool) {
	if !s.started {
		return frames, false, true
	}
	pos := s.pos.Load()
	frames, more, ok = s.feed.read(&pos, frames, max)
	s.pos.Store(pos)
	return frames, more, ok
}

// Pending reports whether a frame for everyone lies after the Sub's place;
// false until the Sub is started. A writer about to stop looks, so that no
// News told while it was busy is lost.
func (s *Sub) Pending() bool {
	return s.started && s.feed.pending(s.pos.Load())
}

// Snapshot is the list as a subscriber starts from it.
type Snapshot struct {
	// List is the online users, encoded as a JSON array in the page's
	// order; shared, never to be written to.
	List []byte
	// Revision is the state's revision the list is at.
	Revision uint64
	// Own is the subscriber's user's own invitations and chat at Revision,
	// if the hub holds the user's record.
	Own *protocol.Personal
}

// Parts is one encoded frame in three parts, to be written one after the
// other: what belongs to one socket (Head, Tail), and between them Shared,
// which is the room's: a welcome's list, encoded once at its revision and
// shared by every socket welcomed at it, never copied for one.
type Parts struct {
	Head, Shared, Tail []byte
}

// Len is the frame's length.
func (p Parts) Len() int { return len(p.Head) + len(p.Shared) + len(p.Tail) }

// Own is how many of the frame's bytes are the socket's alone.
func (p Parts) Own() int { return len(p.Head) + len(p.Tail) }

// Welcome encodes a welcome frame with the snapshot's list as its users:
// the list, already encoded, is not encoded again for every joining
// socket, nor copied into its frame.
func (s Snapshot) Welcome(frame protocol.ServerFrame) (Parts, error) {
	frame.Revision = s.Revision
	data, err := json.Marshal(frame)
	if err != nil {
		return Parts{}, err
	}
	return withUsers(data, s.List), nil
}

// withUsers adds the encoded list to an encoded frame as its "users",
// unless the list is empty (the field is omitted then, as when encoded).
func withUsers(frame, list []byte) Parts {
	if len(list) <= 2 { // []
		return Parts{Head: frame}
	}
	const key = `,"users":`
	return Parts{Head: slices.Concat(frame[:len(frame)-1], []byte(key)), Shared: list, Tail: closingBrace}
}

var closingBrace = []byte("}")
