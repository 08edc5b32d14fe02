package session

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/wsframe"
	"github.com/buddytok/buddytok/services/edge/fanout"
)

// writer is the state of a connection's only writer, kept between its
// runs. Whoever moves wstate to writerRunning owns it until it moves
// wstate away again.
type writer struct {
	c     *Session
	batch *time.Timer // ends a hold; made at the first hold: most sockets never hold
	sub   *fanout.Sub // the buddy list, once the welcome is on its way
	last  time.Time   // of the last write of frames
	// scratch is the list of frames a write reuses, so that writing a
	// change allocates nothing: a writer that allocates may be made to
	// help the collector, which would hold its socket's frames back.
	scratch [][]byte
}

// maxScratch is the longest list of frames a writer keeps for reuse.
const maxScratch = 16

// The writer's states: it runs only while the socket has something to
// write, so that an idle socket keeps no goroutine (and no stack) for it,
// and neither does a busy one between two batches.
const (
	writerOff     int32 = iota // not serving yet: nothing starts it
	writerIdle                 // started by the next kick or urge
	writerRunning              // a goroutine writes
	writerHolding              // holds a batch: started when it ends, or by the next urge
	writerDone                 // the connection ended: never again
)

// The outcomes of a writer's run.
type runOutcome int

const (
	ranDry  runOutcome = iota // wrote everything: idle until told
	ranHold                   // wrote, and holds the next changes back for a batch
	ranEnd                    // the connection ended
)

// startWriter lets the writer run from now on, and starts it for what
// was queued before.
func (c *Session) startWriter() {
	c.wstate.Store(writerIdle)
	c.kick()
	// Made stopped, and started only once c.pinger holds it: its function
	// re-arms it, and may run at once.
	c.pinger = time.AfterFunc(time.Hour, c.pingDue)
	c.pinger.Stop()
	c.pinger.Reset(c.srv.Config.PingEvery)
}

// kick starts the writer unless it runs or holds a batch (or the
// connection has not started or has ended). Anything that gives the writer
// work calls it after recording the work, and the writer looks for work
// once more after it says it stops, so that work recorded as it stops is
// not left waiting.
func (c *Session) kick() {
	if c.wstate.CompareAndSwap(writerIdle, writerRunning) {
		go c.runWriter()
	}
}

// urge is kick for something that must not wait for a batch: it ends a
// hold too.
func (c *Session) urge() {
	if c.wstate.CompareAndSwap(writerIdle, writerRunning) || c.wstate.CompareAndSwap(writerHolding, writerRunning) {
		go c.runWriter()
	}
}

// endHold is the batch timer's: it starts the writer that holds a batch.
// A timer that fires before the writer says it holds is seen by the
// writer (holdEnded); one left from an earlier hold ends a later hold
// early, which costs a write and loses nothing.
func (c *Session) endHold() {
	c.holdEnded.Store(true)
	if c.wstate.CompareAndSwap(writerHolding, writerRunning) {
		go c.runWriter()
	}
}

// runWriter is the connection's only writer: every byte the socket sends
// after the upgrade, control frames included, is written here. It takes
// all the frames waiting at once, its own and the hub's, and writes them
// in one system call; then it stops, until the next kick if nothing more
// waits, or until its batch ends if it holds one. Either way it looks once
// more after it says it stops.
func (c *Session) runWriter() {
	w := &c.w
	for {
		var again bool
		switch w.run() {
		case ranEnd:
			if w.batch != nil {
				w.batch.Stop()
			}
			c.wstate.Store(writerDone)
			close(c.writerDone)
			return
		case ranHold:
			again = w.hold()
		default:
			again = w.stop()
		}
		if !again {
			return
		}
	}
}

// stop says the writer is idle, and reports whether it runs on: it does
// if something came meanwhile and no kick started another writer for it.
func (w *writer) stop() bool {
	c := w.c
	sub := w.sub
	c.wstate.Store(writerIdle)
	select {
	case <-c.quit:
	default:
		if !c.box.pending() && (sub == nil || !sub.Pending()) {
			return false
		}
	}
	return c.wstate.CompareAndSwap(writerIdle, writerRunning)
}

// hold says the writer holds a batch, its timer set, and reports whether
// it runs on at once: it does if the batch ended, something urgent came or
// the connection ended before it said so, and no other writer started for
// it. No goroutine waits for the batch.
func (w *writer) hold() bool {
	c := w.c
	interval := c.srv.batchInterval()
	c.holdEnded.Store(false)
	if w.batch == nil {
		w.batch = time.AfterFunc(interval, c.endHold)
	} else {
		w.batch.Reset(interval)
	}
	c.wstate.Store(writerHolding)
	select {
	case <-c.quit:
	default:
		if !c.holdEnded.Load() && c.box.hold() {
			return false
		}
	}
	return c.wstate.CompareAndSwap(writerHolding, writerRunning)
}

// run writes what waits, and reports whether the writer holds a batch now,
// has nothing more to write, or the connection has ended.
func (w *writer) run() runOutcome {
	select {
	case <-w.c.quit:
		w.c.closing()
		return ranEnd
	default:
	}
	return w.flush()
}

// pingDue has the writer ping, so that a vanished network shows up as a
// read timeout, and comes again after the keepalive period.
func (c *Session) pingDue() {
	select {
	case <-c.quit:
		return
	default:
	}
	c.box.ping()
	c.pinger.Reset(c.srv.Config.PingEvery)
}

// flush writes what waits. Then, on a busy edge, it has a busy socket hold
// its buddy-list changes back for a batch interval from that write: the
// next ones leave together, and nothing starts a writer for each of them
// (only something urgent does). A socket that wrote nothing lately writes
// at once.
func (w *writer) flush() runOutcome {
	c := w.c
	for {
		frames, welcome, ctl, more, ok := w.take()
		if !ok {
			c.tooSlow("behind_bytes", c.srv.Config.SendQueueBytes)
			c.closing()
			return ranEnd
		}
		if !w.control(ctl) {
			return ranEnd
		}
		if len(frames) == 0 {
			return ranDry
		}
		err := c.writeFrames(frames, welcome, c.srv.Config.WriteTimeout)
		w.recycle(frames)
		if err != nil {
			w.fail(err)
			return ranEnd
		}
		prev := w.last
		w.last = time.Now()
		if more { // still behind the feed: write on
			continue
		}
		if w.holds(prev) {
			return ranHold
		}
		return ranDry
	}
}

// holds reports whether a busy socket holds its next buddy-list changes
// back for a batch interval: written to within the last one and a half
// intervals before prev (holding an idle one would cost a timer for each
// frame and save no write), and nothing urgent waiting.
func (w *writer) holds(prev time.Time) bool {
	interval := w.c.srv.batchInterval()
	return interval > 0 && w.last.Sub(prev) <= interval*3/2 && w.c.box.hold()
}

// take returns what the writer has to write now: the frames queued for
// this socket, then, once its welcome is among them or written, the hub's
// frames after its place in the feed, up to about a pooled write buffer
// of them (more: the feed holds further frames for it). A socket that fell
// behind then catches up a write at a time, each in a reused buffer. take
// reports !ok if the socket fell so far behind that frames it needs were
// dropped from the feed.
func (w *writer) take() (frames [][]byte, welcome fanout.Parts, ctl control, more, ok bool) {
	frames, welcome, ctl, sub := w.c.box.take()
	if frames == nil {
		frames = w.scratch
	}
	if w.sub == nil && sub != nil {
		sub.Start()
		w.sub = sub
	}
	if w.sub == nil {
		return frames, welcome, ctl, false, true
	}
	frames, more, ok = w.sub.Read(frames, maxPooledWrite)
	return frames, welcome, ctl, more, ok
}

// recycle keeps a written list of frames for the next write, its frames
// let go, unless it grew long.
func (w *writer) recycle(frames [][]byte) {
	if cap(frames) > maxScratch {
		w.scratch = nil
		return
	}
	clear(frames)
	w.scratch = frames[:0]
}

// control writes the control frames due: the answer to the client's
// ping, and the keepalive's ping. It reports false if the connection
// failed.
func (w *writer) control(ctl control) bool {
	c := w.c
	if ctl.pongDue {
		if err := c.ws.WriteControl(websocket.PongMessage, ctl.pong, time.Now().Add(c.srv.Config.WriteTimeout)); err != nil {
			w.fail(err)
			return false
		}
	}
	if ctl.ping {
		if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.srv.Config.WriteTimeout)); err != nil {
			w.fail(err)
			return false
		}
	}
	return true
}

// fail ends a connection whose write failed.
func (w *writer) fail(err error) {
	c := w.c
	// A write that timed out is a client too slow to read (or a network
	// gone): counted with the slow, since it ends the same.
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		c.srv.Metrics.SlowConsumerDisconnects.Inc()
		c.srv.Log.Warn("write to client timed out; disconnecting", "user", c.Joined(), "err", err)
	}
	c.Close(websocket.CloseAbnormalClosure, "")
	c.stopReader(0)
}

// closeGrace bounds what the writer still writes as a connection closes:
// its last frames and the close frame.
const closeGrace = time.Second

// closing sends the close frame the connection ends with, unless the
// connection failed, and gives the client a moment to answer it before
// the read ends. Called by the writer once quit is closed.
//
// The socket's own frames still queued go first: among them is the
// refusal that explains the close (a flood's rate_limited). A slow
// consumer's are dropped: it is closed for not reading them.
func (c *Session) closing() {
	if c.closeCd != websocket.CloseAbnormalClosure {
		if c.closeTx != string(protocol.CodeSlowConsumer) {
			if frames, welcome, _, _ := c.box.take(); len(frames) > 0 {
				_ = c.writeFrames(frames, welcome, closeGrace)
			}
		}
		msg := websocket.FormatCloseMessage(c.closeCd, c.closeTx)
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
	}
	c.stopReader(closeGrace)
}

// tooSlow disconnects a client that does not drain its queue or keep up
// with the feed, rather than let it hold the edge's memory or slow anyone
// else down. what says how far behind it is, as a log attribute.
func (c *Session) tooSlow(what ...any) {
	c.Close(websocket.ClosePolicyViolation, string(protocol.CodeSlowConsumer))
	c.srv.Metrics.SlowConsumerDisconnects.Inc()
	c.srv.Log.Warn("client too slow to read its frames; disconnecting", append([]any{"user", c.Joined()}, what...)...)
}

// writeBuffers hold a batch of encoded frames while it is written; pooled,
// so that an idle connection holds none.
var writeBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledWrite is the largest batch buffer kept for reuse: a welcome
// with thousands of users is written once and let go.
const maxPooledWrite = 64 << 10

// writeFrames writes frames as WebSocket text frames in one write, given
// at most timeout. A nil frame is the welcome's place: the welcome's own
// parts are copied into the write like any frame, but its list, the
// room's, is written from where the room keeps it (writeShared).
func (c *Session) writeFrames(frames [][]byte, welcome fanout.Parts, timeout time.Duration) error {
	bp := writeBuffers.Get().(*[]byte)
	b := (*bp)[:0]
	conn := c.ws.UnderlyingConn()
	var err error
	for _, f := range frames {
		if f != nil {
			b = wsframe.AppendText(b, f)
			continue
		}
		b = wsframe.AppendHeader(b, welcome.Len())
		b = append(b, welcome.Head...)
		if len(welcome.Shared) == 0 {
			b = append(b, welcome.Tail...)
			continue
		}
		if err = c.writeShared(conn, b, welcome.Shared); err != nil {
			break
		}
		b = append(b[:0], welcome.Tail...)
	}
	if err == nil {
		_ = conn.SetWriteDeadline(time.Now().Add(timeout))
		_, err = conn.Write(b)
		c.srv.Metrics.SocketWrites.Inc()
	}
	if cap(b) <= maxPooledWrite {
		*bp = b[:0]
		writeBuffers.Put(bp)
	}
	return err
}

// Writing a welcome's list, a socket must read on: each chunk of it must
// be taken within welcomeStall, else the socket is closed as too slow. A
// socket that never reads its welcome so holds the list (shared with
// others: nothing of its own) for welcomeStall once its kernel buffers
// are full, not for the whole write timeout; one that reads at 8 KB a
// second or more gets it all.
const (
	welcomeStall = 2 * time.Second
	welcomeChunk = 16 << 10
)

// writeShared writes what b holds, then shared in chunks, each within
// welcomeStall.
func (c *Session) writeShared(conn net.Conn, b, shared []byte) error {
	_ = conn.SetWriteDeadline(time.Now().Add(welcomeStall))
	if _, err := conn.Write(b); err != nil {
		return err
	}
	c.srv.Metrics.SocketWrites.Inc()
	for len(shared) > 0 {
		n := min(len(shared), welcomeChunk)
		_ = conn.SetWriteDeadline(time.Now().Add(welcomeStall))
		if _, err := conn.Write(shared[:n]); err != nil {
			return fmt.Errorf("the welcome's list, %d bytes still to write: %w", len(shared), err)
		}
		c.srv.Metrics.SocketWrites.Inc()
		shared = shared[n:]
	}
	return nil
}

// stopReader makes the reader's blocked read fail after grace. Closing the
// socket would not do it: a hijacked fasthttp connection is only closed
// once the handler returns, so a read deadline is what ends the read.
func (c *Session) stopReader(grace time.Duration) {
	_ = c.ws.UnderlyingConn().SetReadDeadline(time.Now().Add(grace))
}
