package edge

import (
	"encoding/binary"
	"sync"
)

// outbox is one connection's encoded frames waiting for its writer. It is
// bounded in bytes, not frames (a 48 KiB signal weighs what it costs), and
// holds no memory while empty: an idle connection pays for a mutex and a
// one-slot channel, not a queue.
//
// Until the welcome is queued, frames that must follow it (buddy-list
// deltas after its snapshot, directed events) are held back; queueing the
// welcome releases them behind it, in order. Answers to the client's own
// requests are never held.
//
// The writer takes everything queued at once and writes it in one system
// call: under load a connection's frames leave together instead of one
// write each, and when idle a frame leaves as soon as it comes. A busy
// edge's writer may hold buddy-list changes back a moment to send more of
// them at once (hold); anything else (an answer, an invitation, a chat
// change) is urgent and ends the wait.
type outbox struct {
	limit int           // bytes that may wait, the welcome not counted
	wake  chan struct{} // one slot: something was queued since the last take

	mu       sync.Mutex
	ready    [][]byte // for the writer, in order
	held     [][]byte // delivered before the welcome
	bytes    int      // in ready and held, the welcome not counted
	uncount  int      // the welcome's size while it is in ready
	welcomed bool
	urgent   bool   // ready holds a frame that must not wait for a batch
	holding  bool   // the writer holds buddy-list changes back for a batch
	pong     []byte // the payload of a ping to answer, if pongDue
	pongDue  bool
}

func newOutbox(limit int) *outbox {
	return &outbox{limit: limit, wake: make(chan struct{}, 1)}
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
	o.signal(true)
	return true
}

// deliver queues a frame that must follow the welcome: for the writer
// once the welcome is queued, held until then. A frame that is not urgent
// (a buddy-list change) may wait for a batch. It reports false like send.
func (o *outbox) deliver(data []byte, urgent bool) bool {
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
	o.signal(urgent)
	return true
}

// welcome queues the welcome, which the limit does not count (its size
// is the list's), and the frames held for it behind it.
func (o *outbox) welcome(data []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ready = append(o.ready, data)
	o.ready = append(o.ready, o.held...)
	o.held, o.welcomed, o.uncount = nil, true, len(data)
	o.signal(true)
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
	o.pong, o.pongDue = payload, true
	o.signal(true)
}

// signal wakes the writer, unless it holds changes back for a batch and
// this one can wait with them.
func (o *outbox) signal(urgent bool) {
	o.urgent = o.urgent || urgent
	if o.holding && !urgent {
		return
	}
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// take hands the writer everything ready: the frames, and the payload of
// a ping to answer (pong reports whether there is one).
func (o *outbox) take() (frames [][]byte, pong []byte, pongDue bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	frames, o.ready = o.ready, nil
	for _, d := range frames {
		o.bytes -= len(d)
	}
	o.bytes += o.uncount
	o.uncount = 0
	pong, pongDue = o.pong, o.pongDue
	o.pong, o.pongDue, o.urgent = nil, false, false
	return frames, pong, pongDue
}

// hold starts holding buddy-list changes back for a batch: until release,
// only an urgent frame wakes the writer. It reports false, holding
// nothing, if an urgent frame is already waiting.
func (o *outbox) hold() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.urgent {
		return false
	}
	o.holding = true
	select { // a wake from before the hold is stale: what it announced is taken
	case <-o.wake:
	default:
	}
	return true
}

// release ends a hold.
func (o *outbox) release() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.holding = false
}

// queued is how many bytes wait, for the slow-client log line.
func (o *outbox) queued() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bytes
}

// appendTextFrame appends data as one unmasked, final WebSocket text
// frame (RFC 6455 §5.2), as a server sends it.
func appendTextFrame(b, data []byte) []byte {
	const finText = 0x81
	switch n := len(data); {
	case n <= 125:
		b = append(b, finText, byte(n))
	case n <= 0xffff:
		b = append(b, finText, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, finText, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, data...)
}
