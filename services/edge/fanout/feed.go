package fanout

import (
	"slices"
	"sync"
	"sync/atomic"
)

// feed is the hub's outgoing frames, shared by every subscriber: the hub
// appends each frame once, encoded, and each connection's writer reads on
// from its own position. Fanning a change out to ten thousand sockets is
// one append, not ten thousand queue operations, so the one goroutine that
// applies every change never waits on the sockets' writers, and a frame is
// kept once per edge, not once per socket.
//
// The feed keeps its latest frames up to a byte limit. A writer that falls
// further behind than that finds its position gone: its client does not
// read fast enough, and is let go like one whose outbox is full. Every
// frame in the feed is for everyone, so a reader's lag is counted in what
// it must receive: a frame for one subscriber alone (a sync) goes to that
// subscriber's own queue (Waker.Own), counted against its own limit, and
// never pushes another reader out of the window.
//
// Writers read without a lock: the feed is a succession of immutable views,
// each appended frame publishing the next, so ten thousand writers woken
// at once by one change do not queue on a mutex that the hub then needs.
type feed struct {
	limit int
	mu    sync.Mutex // appenders
	view  atomic.Pointer[feedView]
}

// feedView is the feed as of one append. Its entries are never written
// again; a later view may share their array and append beyond them.
type feedView struct {
	base    uint64 // position of entries[0]
	entries [][]byte
	bytes   int // in entries
}

func (v *feedView) next() uint64 { return v.base + uint64(len(v.entries)) }

func newFeed(limit int) *feed {
	f := &feed{limit: limit}
	f.view.Store(&feedView{})
	return f
}

// next is the position the next frame appended will have: a subscriber
// that starts reading there gets every frame appended from now on.
func (f *feed) next() uint64 { return f.view.Load().next() }

// append adds a frame for everyone, and drops the oldest frames beyond
// the limit. Telling the writers is the caller's (Waker).
func (f *feed) append(data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.view.Load()
	v := &feedView{base: old.base, bytes: old.bytes + len(data)}
	v.entries = append(old.entries, data)
	// Dropped entries stay in the array for views still read; the array
	// goes once append has to grow it.
	for v.bytes > f.limit && len(v.entries) > 1 {
		v.bytes -= len(v.entries[0])
		v.entries = v.entries[1:]
		v.base++
	}
	f.view.Store(v)
}

// size is how many bytes of frames the feed holds.
func (f *feed) size() int { return f.view.Load().bytes }

// trim drops the frames before position pos, which every subscriber has
// read, into a fresh array: the dropped frames are freed as soon as no
// writer reads an older view.
func (f *feed) trim(pos uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.view.Load()
	if pos <= old.base {
		return
	}
	k := min(pos, old.next()) - old.base
	v := &feedView{base: old.base + k, entries: slices.Clone(old.entries[k:])}
	for _, e := range v.entries {
		v.bytes += len(e)
	}
	f.view.Store(v)
}

// read appends to frames those after position *pos, until they hold max
// bytes or more, and moves *pos past what it read: more reports that
// frames were left for the next read. It reports !ok if frames after *pos
// were already dropped.
func (f *feed) read(pos *uint64, frames [][]byte, max int) (_ [][]byte, more, ok bool) {
	v := f.view.Load()
	if *pos < v.base {
		return frames, false, false
	}
	n := 0
	for i, e := range v.entries[*pos-v.base:] {
		if n >= max {
			*pos += uint64(i)
			return frames, true, true
		}
		frames = append(frames, e)
		n += len(e)
	}
	*pos = v.next()
	return frames, false, true
}

// pending reports whether a frame lies at or after pos.
func (f *feed) pending(pos uint64) bool {
	return f.view.Load().next() > pos
}
