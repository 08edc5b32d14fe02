package session

import (
	"errors"
	"net"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// readLoop reads frames until the connection ends.
func (c *Session) readLoop() {
	// A frame over the limit is not read: the socket closes with 1009.
	c.ws.SetReadLimit(protocol.MaxFrameBytes)
	c.ws.SetPongHandler(func(string) error { c.extendReadDeadline(); return nil })
	// The library would answer pings and closes from this goroutine;
	// the writer does, so that it stays the socket's only writer.
	c.ws.SetPingHandler(func(payload string) error { c.box.answerPing([]byte(payload)); return nil })
	c.ws.SetCloseHandler(func(code int, _ string) error { c.Close(code, ""); return nil })
	c.armJoinDeadline()
	defer c.disarmJoinDeadline()
	over := 0 // frames over the rate limit in a row
	for {
		// The silence allowed runs from now: a request handled below may
		// take longer than it (a service restarting), and pongs that
		// arrived meanwhile are only read now.
		c.extendReadDeadline()
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			c.readFailed(err)
			return
		}
		if !c.limiter.Allow() {
			over++
			if !c.overLimit(over, mt, data) {
				c.discardUntilClosed()
				// The address's penalty runs from the end of the
				// connection, not from before the discarding.
				c.srv.Gate.Penalise(c.addr)
				return
			}
			continue
		}
		over = 0
		c.onOwnStack(mt, data)
	}
}

// onOwnStack answers a frame on a goroutine of its own, and waits for it:
// frames are still answered one at a time, in order. Decoding a frame and
// relaying its request take a deep stack, which a goroutine keeps once
// grown; the reader, which lives as long as the socket and spends it
// waiting in a read, keeps only what a read takes (4.5 KiB less a socket,
// measured at 15,000 sockets). A panic goes on in the reader, as if the
// frame had been answered there.
func (c *Session) onOwnStack(mt int, data []byte) {
	done := make(chan any)
	go func() {
		defer func() { done <- recover() }()
		c.frame(mt, data)
	}()
	if p := <-done; p != nil {
		panic(p)
	}
}

// frame decodes a frame and answers it.
func (c *Session) frame(mt int, data []byte) {
	f, err := protocol.DecodeClientFrame(mt == websocket.TextMessage, data)
	if err != nil {
		c.srv.Metrics.FramesIn.WithLabelValues(frameTypeLabel(f.Type, err)).Inc()
		c.sendFrame(protocol.ErrorFrame(f.Ref, err))
		return
	}
	c.srv.Metrics.FramesIn.WithLabelValues(f.Type).Inc()
	c.handle(f)
}

// discardUntilClosed reads and drops what the client still sends after
// the edge closed the connection for its behaviour, until the client
// answers the close frame or the writer's grace for it ends (stopReader).
// Were the socket closed with frames still unread, the kernel would reset
// the connection, and the client could lose the close frame that says
// why.
func (c *Session) discardUntilClosed() {
	for {
		if _, _, err := c.ws.NextReader(); err != nil {
			return
		}
	}
}

// extendReadDeadline gives the client another keepalive period to be
// heard from, unless the connection is closing (stopReader has set the
// last deadline then).
func (c *Session) extendReadDeadline() {
	select {
	case <-c.quit:
	default:
		_ = c.ws.SetReadDeadline(time.Now().Add(2*c.srv.Config.PingEvery + 5*time.Second))
	}
}

// readFailed acts on the error that ended the reads.
func (c *Session) readFailed(err error) {
	if errors.Is(err, websocket.ErrReadLimit) {
		c.srv.Metrics.Refused.WithLabelValues(string(protocol.CodeFrameTooLarge)).Inc()
		c.srv.Gate.Penalise(c.addr)
		c.Close(websocket.CloseMessageTooBig, string(protocol.CodeFrameTooLarge))
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() && c.Joined() != "" {
		// Not the deadline of a close: the client answered no ping in
		// time (gone, or too far behind in its reading).
		c.srv.Log.Warn("client silent past its keepalive; disconnecting", "user", c.Joined())
	}
}

// overLimit handles a frame over the rate limit, the over-th in a row.
// Every frame counts against the limit. The first frame over it is refused
// with its own ref, so the client knows which one; the next are dropped
// unread; a socket that goes on sending a burst's worth of them is closed
// (1008), and overLimit reports false: the reader then discards what still
// comes and penalises the address.
func (c *Session) overLimit(over, mt int, data []byte) bool {
	c.srv.Metrics.FramesIn.WithLabelValues("over_limit").Inc()
	if over > c.srv.Config.FrameBurst {
		c.srv.Metrics.Refused.WithLabelValues(string(protocol.CodeRateLimited)).Inc()
		c.srv.Log.Warn("client kept sending over its rate limit; disconnecting", "user", c.Joined(), "limit", c.srv.Config.FramesPerSecond)
		c.Close(websocket.ClosePolicyViolation, string(protocol.CodeRateLimited))
		return false
	}
	if over == 1 {
		f, _ := protocol.DecodeClientFrame(mt == websocket.TextMessage, data)
		c.sendFrame(protocol.ErrorFrame(f.Ref, protocol.Errorf(protocol.CodeRateLimited,
			"too many messages; at most %g per second, and frames are dropped until you slow down", float64(c.limiter.Limit()))))
	}
	return true
}

// armJoinDeadline starts (again) the time the connection has to join.
func (c *Session) armJoinDeadline() {
	c.joinMu.Lock()
	defer c.joinMu.Unlock()
	if !c.joinEnded {
		c.joinBy = time.AfterFunc(c.srv.Config.JoinTimeout, c.joinTimedOut)
	}
}

// disarmJoinDeadline stops it for good, as the reader ends.
func (c *Session) disarmJoinDeadline() {
	c.joinMu.Lock()
	defer c.joinMu.Unlock()
	c.joinEnded = true
	if c.joinBy != nil {
		c.joinBy.Stop()
	}
}

// joinTimedOut closes a connection that has not joined (or resumed) in
// Config.JoinTimeout: a socket may not sit on the edge without a user. A
// join or resume under way is given another while.
//
// It runs on a timer's goroutine, which may outlive the connection: it
// never touches the socket (which is reused once the handler returns),
// only asks the writer to close it, which does nothing once the
// connection has ended.
func (c *Session) joinTimedOut() {
	select {
	case <-c.quit:
		return
	default:
	}
	if c.Joined() != "" {
		return
	}
	if c.joining.Load() {
		c.armJoinDeadline()
		return
	}
	c.srv.Metrics.Refused.WithLabelValues(string(protocol.CodeJoinTimeout)).Inc()
	c.Close(websocket.ClosePolicyViolation, string(protocol.CodeJoinTimeout))
}
