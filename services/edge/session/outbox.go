package session

import (
	"sync"

	"github.com/buddytok/buddytok/services/edge/fanout"
)

// outbox is one connection's encoded frames waiting for its writer. It is
// bounded in bytes, not frames (a 48 KiB signal weighs what it costs), and
// holds no memory while empty: an idle connection pays for a mutex and a
// one-slot channel, not a queue.
//
// The buddy-list changes are not here: every socket reads them from the
// hub's feed, after its welcome. Until the welcome is queued, the directed
// events that must follow it are held back; queueing the welcome releases
// them behind it, in order. Answers to the client's own requests are never
// held.
//
// The writer takes everything queued at once and writes it in one system
// call. A busy edge's writer may hold the feed's buddy-list changes back a
// moment to send more of them at once (hold); anything queued here (an
// answer, an invitation, a chat change) is urgent and ends the wait.
//
// The writer runs only while there is something to write: the hub's News
// starts it (kick) if it neither runs nor holds; whatever is queued here
// starts it (urge) unless it runs.
type outbox struct {
	limit int    // bytes that may wait: the socket's own, a welcome's list not counted (it is the room's)
	kick  func() // starts the writer unless it runs or holds (the session's)
	urge  func() // starts the writer unless it runs, ending its hold (the session's)

	mu       sync.Mutex
	ready    [][]byte // for the writer, in order; nil is the welcome's place
	held     [][]byte // delivered before the welcome
	greeting fanout.Parts
	bytes    int // in ready and held, and the welcome's own
	welcomed bool
	sub      *fanout.Sub // the buddy list, whose frames follow the welcome
	urgent   bool        // something must not wait for a batch: a frame, a pong, a poke
	ctl      control
}

// control is what the writer has to send besides frames: control frames.
type control struct {
	pong    []byte // the payload of a ping to answer, if pongDue
	pongDue bool
	ping    bool // the keepalive's ping is due
}

func newOutbox(limit int) *outbox {
	return &outbox{limit: limit, kick: func() {}, urge: func() {}}
}

// fits reports whether n more bytes may wait. A frame larger than the
// whole limit still goes when nothing else waits.
func (o *outbox) fits(n int) bool {
	return o.bytes == 0 || o.bytes+n <= o.limit
}

// send queues an answer to the client's own request. It reports false,
// queueing nothing, when the frame would take the queue over its limit:
// the client reads too slowly and must be let go.
func (o *outbox) send(data []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.fits(len(data)) {
		return false
	}
	o.ready = append(o.ready, data)
	o.bytes += len(data)
	o.signal()
	return true
}

// deliver queues a frame that must follow the welcome: for the writer
// once the welcome is queued, held until then. It reports false like send.
func (o *outbox) deliver(data []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.fits(len(data)) {
		return false
	}
	o.bytes += len(data)
	if !o.welcomed {
		o.held = append(o.held, data)
		return true
	}
	o.ready = append(o.ready, data)
	o.signal()
	return true
}

// welcome queues the welcome, and the frames held for it behind it. Its
// own bytes count against the limit; its list is the room's, shared with
// every socket welcomed at the same revision, and does not. The buddy
// list's frames follow from sub, which the writer then starts.
func (o *outbox) welcome(w fanout.Parts, sub *fanout.Sub) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ready = append(o.ready, nil)
	o.ready = append(o.ready, o.held...)
	o.greeting, o.bytes = w, o.bytes+w.Own()
	o.held, o.welcomed, o.sub = nil, true, sub
	o.signal()
}

// dropHeld forgets the frames held for a welcome that will not come.
func (o *outbox) dropHeld() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, d := range o.held {
		o.bytes -= len(d)
	}
	o.held = nil
}

// answerPing has the writer answer a ping with payload (only the latest
// unanswered ping is answered, as RFC 6455 allows).
func (o *outbox) answerPing(payload []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ctl.pong, o.ctl.pongDue = payload, true
	o.signal()
}

// ping has the writer send the keepalive's ping: at once if it is not
// running, else with its next take. It does not end a hold: a ping that
// cut every batch short would undo the batching on a busy edge.
func (o *outbox) ping() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ctl.ping = true
	o.kick()
}

// News starts the writer for a frame the hub's feed holds for everyone,
// unless it runs: a writer holding a batch reads it when the batch ends.
func (o *outbox) News() {
	o.kick()
}

// signal starts the writer, and ends its hold if it holds a batch.
func (o *outbox) signal() {
	o.urgent = true
	o.urge()
}

// pending reports whether something came since the last take: a writer
// about to stop looks, so that nothing queued while it was busy waits.
func (o *outbox) pending() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.urgent || o.ctl.ping
}

// take hands the writer everything ready: the frames, with the welcome,
// if among them, in its place (a nil frame); and the control frames due.
// Once the welcome is queued, sub is the buddy list whose frames are to
// follow.
func (o *outbox) take() (frames [][]byte, welcome fanout.Parts, ctl control, sub *fanout.Sub) {
	o.mu.Lock()
	defer o.mu.Unlock()
	frames, o.ready = o.ready, nil
	for _, d := range frames {
		if d == nil {
			welcome, o.greeting = o.greeting, fanout.Parts{}
			o.bytes -= welcome.Own()
		}
		o.bytes -= len(d)
	}
	ctl, o.ctl, o.urgent = o.ctl, control{}, false
	return frames, welcome, ctl, o.sub
}

// hold reports whether the writer may hold a batch: false if something
// urgent came since the last take. Something urgent that comes during the
// hold ends it (urge).
func (o *outbox) hold() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.urgent
}

// queued is how many bytes wait, for the slow-client log line.
func (o *outbox) queued() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bytes
}
