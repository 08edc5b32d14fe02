package edge

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/requestid"
	"github.com/buddytok/buddytok/services/edge/identity"
)

// client is one browser WebSocket connection. The handler goroutine reads;
// exactly one writer goroutine writes, fed by the connection's bounded
// outbox and by the hub's feed. A client that does not keep up with either
// is disconnected rather than allowed to slow anyone else down.
type client struct {
	e       *Edge
	ws      *websocket.Conn
	id      string // connection ID, reported to presence
	box     *outbox
	quit    chan struct{}
	once    sync.Once
	closeCd int
	closeTx string
	limiter *rate.Limiter
	addr    netip.Prefix // the client's address, as admission counts it
	// identity is who the upgrade's identity token named, if the edge
	// requires one: the user's name is theirs.
	identity *identity.Identity

	// Set by join/resume, read by the reader goroutine only (and by
	// cleanup after the reader has stopped).
	userID   string
	secret   string // the user's resume secret: proves to the services that requests come from this connection
	events   *nats.Subscription
	feedFrom uint64 // set by hub.subscribe

	// joining is set while the connection joins or resumes (for the join
	// deadline's timer).
	joining   atomic.Bool
	joinMu    sync.Mutex
	joinBy    *time.Timer // the join deadline; nil once the reader ended
	joinEnded bool

	// joinedID and joinedSecret are userID and secret for other
	// goroutines (the reconcile loop).
	joinedMu     sync.Mutex
	joinedID     string
	joinedSecret string
}

func newClient(e *Edge, ws *websocket.Conn) *client {
	return &client{
		e:       e,
		ws:      ws,
		id:      protocol.NewID(),
		box:     newOutbox(e.cfg.SendQueueBytes),
		quit:    make(chan struct{}),
		limiter: rate.NewLimiter(rate.Limit(e.cfg.FramesPerSecond), e.cfg.FrameBurst),
	}
}

// send queues an answer to the client without blocking; a client whose
// queue is over its limit is disconnected.
func (c *client) send(data []byte) {
	if !c.box.send(data) {
		c.tooSlow("queued_bytes", c.box.queued())
	}
}

// tooSlow disconnects a client that does not drain its queue or keep up
// with the feed, rather than let it hold the edge's memory or slow anyone
// else down. what says how far behind it is, as a log attribute.
func (c *client) tooSlow(what ...any) {
	c.close(websocket.ClosePolicyViolation, string(protocol.CodeSlowConsumer))
	c.e.metrics.SlowConsumerDisconnects.Inc()
	c.e.log.Warn("client too slow to read its frames; disconnecting", append([]any{"user", c.joined()}, what...)...)
}

func (c *client) sendFrame(f protocol.ServerFrame) {
	data, err := json.Marshal(f)
	if err != nil {
		c.e.log.Error("encode frame", "type", f.Type, "err", err)
		return
	}
	c.e.metrics.FramesOut.WithLabelValues(f.Type).Inc()
	c.send(data)
}

// close asks the writer to send a close frame and end the connection.
func (c *client) close(code int, reason string) {
	c.once.Do(func() {
		c.closeCd, c.closeTx = code, reason
		close(c.quit)
	})
}

// writeLoop is the connection's only writer: every byte the socket sends
// after the upgrade, control frames included, is written here. It takes
// all the frames waiting at once, its own and the hub's, and writes them
// in one system call. It also pings, so that a vanished network shows up
// as a read timeout.
func (c *client) writeLoop(done chan<- struct{}) {
	defer close(done)
	ping := time.NewTicker(c.e.cfg.PingEvery)
	defer ping.Stop()
	batch := time.NewTimer(time.Hour)
	batch.Stop()
	feed := c.e.hub.feed
	var r feedReader
	var last time.Time // of the last write of frames
	fail := func(err error) {
		// A write that timed out is a client too slow to read (or a
		// network gone): counted with the slow, since it ends the same.
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			c.e.metrics.SlowConsumerDisconnects.Inc()
			c.e.log.Warn("write to client timed out; disconnecting", "user", c.joined(), "timeout", c.e.cfg.WriteTimeout)
		}
		c.close(websocket.CloseAbnormalClosure, "")
		c.stopReader(0)
	}
	sendPing := func() bool {
		if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.e.cfg.WriteTimeout)); err != nil {
			fail(err)
			return false
		}
		return true
	}
	for {
		var news <-chan struct{} // nil until the welcome is on its way
		if r.on {
			news = feed.wait(&r)
		}
		select {
		case <-c.box.wake:
		case <-news:
		case <-ping.C:
			if !sendPing() {
				return
			}
			continue
		case <-c.quit:
			c.closing()
			return
		}
		// Write what waits. Then, on a busy edge, hold a busy socket's
		// buddy-list changes back for a batch interval from that write:
		// the next ones leave together, and nothing wakes this goroutine
		// for each of them (only something urgent does). A socket that
		// wrote nothing lately writes at once.
		for {
			frames, pong, pongDue, more, ok := c.take(feed, &r)
			if !ok {
				c.tooSlow("behind_bytes", feed.limit)
				c.closing()
				return
			}
			if pongDue {
				if err := c.ws.WriteControl(websocket.PongMessage, pong, time.Now().Add(c.e.cfg.WriteTimeout)); err != nil {
					fail(err)
					return
				}
			}
			if len(frames) == 0 {
				break
			}
			if err := c.writeFrames(frames, c.e.cfg.WriteTimeout); err != nil {
				fail(err)
				return
			}
			// Hold only a busy socket's (written to within the last one
			// and a half intervals): holding an idle one would cost a
			// timer for each frame and save no write. One still behind
			// the feed writes on.
			prev := last
			last = time.Now()
			if more {
				continue
			}
			interval := c.e.batchInterval()
			if interval <= 0 || last.Sub(prev) > interval*3/2 || !c.box.hold() {
				break
			}
			batch.Reset(interval)
			quitting, ok := c.holdFor(batch, ping.C, sendPing)
			batch.Stop()
			if !ok {
				return
			}
			if quitting {
				c.closing()
				return
			}
		}
	}
}

// take returns what the writer has to write now: the frames queued for
// this socket, then, once its welcome is among them or written, the hub's
// frames after its place r in the feed, up to about a pooled write buffer
// of them (more: the feed holds further frames for it). A socket that fell
// behind then catches up a write at a time, each in a reused buffer. take
// reports !ok if the socket fell so far behind that frames it needs were
// dropped from the feed.
func (c *client) take(f *feed, r *feedReader) (frames [][]byte, pong []byte, pongDue, more, ok bool) {
	frames, pong, pongDue, welcomed, from := c.box.take()
	if welcomed && !r.on {
		r.pos, r.on = from, true
	}
	if !r.on {
		return frames, pong, pongDue, false, true
	}
	frames, more, ok = f.read(r, c, frames, maxPooledWrite)
	return frames, pong, pongDue, more, ok
}

// holdFor waits out a batch interval (batch, already set), pinging on
// time meanwhile: a socket that never idles is pinged too. It ends early
// for an urgent frame or when the connection ends (quitting), and reports
// !ok if a ping failed.
func (c *client) holdFor(batch *time.Timer, ping <-chan time.Time, sendPing func() bool) (quitting, ok bool) {
	for {
		select {
		case <-batch.C:
			return false, true
		case <-c.box.wake: // something urgent
			return false, true
		case <-c.quit:
			return true, true
		case <-ping:
			if !sendPing() {
				return false, false
			}
		}
	}
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
func (c *client) closing() {
	if c.closeCd != websocket.CloseAbnormalClosure {
		if c.closeTx != string(protocol.CodeSlowConsumer) {
			if frames, _, _, _, _ := c.box.take(); len(frames) > 0 {
				_ = c.writeFrames(frames, closeGrace)
			}
		}
		msg := websocket.FormatCloseMessage(c.closeCd, c.closeTx)
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
	}
	c.stopReader(closeGrace)
}

// writeBuffers hold a batch of encoded frames while it is written; pooled,
// so that an idle connection holds none.
var writeBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledWrite is the largest batch buffer kept for reuse: a welcome
// with thousands of users is written once and let go.
const maxPooledWrite = 64 << 10

// writeFrames writes frames as WebSocket text frames in one write, given
// at most timeout.
func (c *client) writeFrames(frames [][]byte, timeout time.Duration) error {
	bp := writeBuffers.Get().(*[]byte)
	b := (*bp)[:0]
	for _, f := range frames {
		b = appendTextFrame(b, f)
	}
	conn := c.ws.UnderlyingConn()
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := conn.Write(b)
	c.e.metrics.SocketWrites.Inc()
	if cap(b) <= maxPooledWrite {
		*bp = b[:0]
		writeBuffers.Put(bp)
	}
	return err
}

// stopReader makes the reader's blocked read fail after grace. Closing the
// socket would not do it: a hijacked fasthttp connection is only closed
// once the handler returns, so a read deadline is what ends the read.
func (c *client) stopReader(grace time.Duration) {
	_ = c.ws.UnderlyingConn().SetReadDeadline(time.Now().Add(grace))
}

// readLoop reads frames until the connection ends.
func (c *client) readLoop() {
	// A frame over the limit is not read: the socket closes with 1009.
	c.ws.SetReadLimit(protocol.MaxFrameBytes)
	deadline := func() {
		select {
		case <-c.quit: // closing: stopReader has set the last deadline
		default:
			_ = c.ws.SetReadDeadline(time.Now().Add(2*c.e.cfg.PingEvery + 5*time.Second))
		}
	}
	c.ws.SetPongHandler(func(string) error { deadline(); return nil })
	// The library would answer pings and closes from this goroutine;
	// the writer does, so that it stays the socket's only writer.
	c.ws.SetPingHandler(func(payload string) error { c.box.answerPing([]byte(payload)); return nil })
	c.ws.SetCloseHandler(func(code int, _ string) error { c.close(code, ""); return nil })
	c.armJoinDeadline()
	defer c.disarmJoinDeadline()
	over := 0 // frames over the rate limit in a row
	for {
		// The silence allowed runs from now: a request handled below may
		// take longer than it (a service restarting), and pongs that
		// arrived meanwhile are only read now.
		deadline()
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.e.metrics.Refused.WithLabelValues(string(protocol.CodeFrameTooLarge)).Inc()
				c.e.admit.penalise(c.addr)
				c.close(websocket.CloseMessageTooBig, string(protocol.CodeFrameTooLarge))
			}
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() && c.joined() != "" {
				// Not the deadline of a close: the client answered no
				// ping in time (gone, or too far behind in its reading).
				c.e.log.Warn("client silent past its keepalive; disconnecting", "user", c.joined())
			}
			return
		}
		// Every frame counts against the rate limit. The first frame over
		// it is refused with its own ref, so the client knows which one;
		// the next are dropped unread; a socket that goes on sending a
		// burst's worth of them is closed (1008).
		if !c.limiter.Allow() {
			c.e.metrics.FramesIn.WithLabelValues("over_limit").Inc()
			over++
			if over > c.e.cfg.FrameBurst {
				c.e.metrics.Refused.WithLabelValues(string(protocol.CodeRateLimited)).Inc()
				c.e.admit.penalise(c.addr)
				c.e.log.Warn("client kept sending over its rate limit; disconnecting", "user", c.joined(), "limit", c.e.cfg.FramesPerSecond)
				c.close(websocket.ClosePolicyViolation, string(protocol.CodeRateLimited))
				return
			}
			if over == 1 {
				f, _ := decodeFrame(mt, data)
				c.sendFrame(protocol.ErrorFrame(f.Ref, protocol.Errorf(protocol.CodeRateLimited,
					"too many messages; at most %g per second, and frames are dropped until you slow down", float64(c.limiter.Limit()))))
			}
			continue
		}
		over = 0
		f, err := decodeFrame(mt, data)
		if err != nil {
			c.e.metrics.FramesIn.WithLabelValues(frameTypeLabel(f.Type, err)).Inc()
			c.sendFrame(protocol.ErrorFrame(f.Ref, err))
			continue
		}
		c.e.metrics.FramesIn.WithLabelValues(f.Type).Inc()
		c.handle(f)
	}
}

// armJoinDeadline starts (again) the time the connection has to join.
func (c *client) armJoinDeadline() {
	c.joinMu.Lock()
	defer c.joinMu.Unlock()
	if !c.joinEnded {
		c.joinBy = time.AfterFunc(c.e.cfg.JoinTimeout, c.joinTimedOut)
	}
}

// disarmJoinDeadline stops it for good, as the reader ends.
func (c *client) disarmJoinDeadline() {
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
func (c *client) joinTimedOut() {
	select {
	case <-c.quit:
		return
	default:
	}
	if c.joined() != "" {
		return
	}
	if c.joining.Load() {
		c.armJoinDeadline()
		return
	}
	c.e.metrics.Refused.WithLabelValues(string(protocol.CodeJoinTimeout)).Inc()
	c.close(websocket.ClosePolicyViolation, string(protocol.CodeJoinTimeout))
}

// relay sends req to a service, decoding its reply into resp (which
// answer may point into), and answers the client with answer or the error.
func (c *client) relay(ctx context.Context, ref, subject string, req, resp any, answer protocol.ServerFrame) {
	ctx, cancel := context.WithTimeout(ctx, c.e.cfg.RequestTimeout)
	defer cancel()
	if err := natsrpc.Call(ctx, c.e.nc, subject, req, resp); err != nil {
		c.replyErr(ctx, ref, subject, err)
		return
	}
	c.sendFrame(answer)
}

func (c *client) replyErr(ctx context.Context, ref, subject string, err error) {
	if protocol.CodeOf(err) == protocol.CodeInternal {
		c.e.log.ErrorContext(ctx, "request failed", "subject", subject, "user", c.userID, "err", err)
	}
	c.sendFrame(protocol.ErrorFrame(ref, err))
}

func (c *client) handle(f protocol.ClientFrame) {
	// Every request a frame makes, and every log line about it, carries
	// the same request ID.
	ctx := requestid.With(context.Background(), requestid.New())
	switch f.Type {
	case protocol.TypePing:
		c.sendFrame(protocol.ServerFrame{Type: protocol.TypePong, Ref: f.Ref})
		return
	case protocol.TypeJoin, protocol.TypeResume:
		if c.userID != "" {
			c.sendFrame(protocol.ErrorFrame(f.Ref, protocol.Errorf(protocol.CodeAlreadyJoined, "this connection has already joined")))
			return
		}
		c.joining.Store(true)
		defer c.joining.Store(false)
		if f.Type == protocol.TypeJoin {
			if err := c.e.admit.allowJoin(c.addr); err != nil {
				c.e.metrics.Refused.WithLabelValues("join_rate").Inc()
				c.sendFrame(protocol.ErrorFrame(f.Ref, err))
				return
			}
			c.join(ctx, f)
		} else {
			if err := c.e.admit.allowResume(c.addr); err != nil {
				c.e.metrics.Refused.WithLabelValues("resume_rate").Inc()
				c.sendFrame(protocol.ErrorFrame(f.Ref, err))
				return
			}
			c.resume(ctx, f)
		}
		return
	case protocol.TypeInvite, protocol.TypeCancel, protocol.TypeAccept, protocol.TypeDecline,
		protocol.TypeEndChat, protocol.TypeCredentials, protocol.TypeSignal:
		if c.userID == "" {
			c.sendFrame(protocol.ErrorFrame(f.Ref, protocol.Errorf(protocol.CodeNotJoined, "join first")))
			return
		}
	default:
		c.sendFrame(protocol.ErrorFrame(f.Ref, protocol.Errorf(protocol.CodeUnknownType, "unknown frame type %.40q", f.Type)))
		return
	}
	uid := c.userID
	ok := protocol.ServerFrame{Type: protocol.TypeOK, Ref: f.Ref}
	switch f.Type {
	case protocol.TypeInvite:
		var inv protocol.Invitation
		ok.Invitation = &inv
		c.relay(ctx, f.Ref, protocol.SubjectInvitesInvite, protocol.InviteRequest{From: uid, To: f.To, Secret: c.secret}, &inv, ok)
	case protocol.TypeCancel:
		c.relay(ctx, f.Ref, protocol.SubjectInvitesCancel, protocol.InvitationRequest{UserID: uid, Invitation: f.Invitation, Secret: c.secret}, nil, ok)
	case protocol.TypeDecline:
		c.relay(ctx, f.Ref, protocol.SubjectInvitesDecline, protocol.InvitationRequest{UserID: uid, Invitation: f.Invitation, Secret: c.secret}, nil, ok)
	case protocol.TypeAccept:
		var chat protocol.Chat
		ok.Chat = &chat
		c.relay(ctx, f.Ref, protocol.SubjectInvitesAccept, protocol.InvitationRequest{UserID: uid, Invitation: f.Invitation, Secret: c.secret}, &chat, ok)
	case protocol.TypeEndChat:
		c.relay(ctx, f.Ref, protocol.SubjectInvitesEnd, protocol.ChatRequest{UserID: uid, Chat: f.Chat, Secret: c.secret}, nil, ok)
	case protocol.TypeCredentials:
		var cred protocol.Credentials
		answer := protocol.ServerFrame{Type: protocol.TypeCredentials, Ref: f.Ref, Credentials: &cred}
		c.relay(ctx, f.Ref, protocol.SubjectTokensCredentials, protocol.ChatRequest{UserID: uid, Chat: f.Chat, Secret: c.secret}, &cred, answer)
	case protocol.TypeSignal:
		c.relay(ctx, f.Ref, protocol.SubjectTokensSignal, protocol.SignalRequest{UserID: uid, Chat: f.Chat, Data: f.Data, Secret: c.secret}, nil, ok)
	}
}

// subscribeEvents starts relaying the user's directed events to this
// connection. It happens before the user can be seen by anyone, so no
// event is missed.
func (c *client) subscribeEvents(userID string) error {
	sub, err := c.e.relay.subscribe(c.e.nc, userID, c)
	if err != nil {
		return err
	}
	c.events = sub
	return nil
}

// event relays one directed event of the user's to the connection, or
// closes it when another connection superseded it.
func (c *client) event(m *nats.Msg) {
	if m.Header.Get(protocol.HeaderControl) == protocol.ControlSuperseded {
		if string(m.Data) != c.id {
			c.close(protocol.CloseSuperseded, string(protocol.CodeSuperseded))
		}
		return
	}
	c.e.metrics.FramesOut.WithLabelValues(eventType(m.Data)).Inc()
	c.deliver(m.Data)
}

// setJoined records the user this connection serves, and its secret.
func (c *client) setJoined(uid, secret string) {
	c.userID, c.secret = uid, secret
	c.joinedMu.Lock()
	c.joinedID, c.joinedSecret = uid, secret
	c.joinedMu.Unlock()
}

// joined returns the user this connection serves, or "" (none yet, or the
// connection is ending).
func (c *client) joined() string {
	select {
	case <-c.quit:
		return ""
	default:
	}
	c.joinedMu.Lock()
	defer c.joinedMu.Unlock()
	return c.joinedID
}

// joinedSecretOf returns the secret of the user this connection serves,
// if it still serves uid.
func (c *client) joinedSecretOf(uid string) (string, bool) {
	c.joinedMu.Lock()
	defer c.joinedMu.Unlock()
	return c.joinedSecret, uid != "" && c.joinedID == uid
}

// deliver queues a directed event, which must come after the welcome: at
// once if the welcome is queued, else held for it.
func (c *client) deliver(data []byte) {
	if !c.box.deliver(data) {
		c.tooSlow("queued_bytes", c.box.queued())
	}
}

// unsubscribeEvents stops the relay after a failed join or resume.
func (c *client) unsubscribeEvents() {
	c.e.relay.unsubscribe(c.events)
	c.events = nil
	c.box.dropHeld()
}

// join makes the connection a new user; f.Name is normalised
// (decodeFrame). With an identity token, the name is the token's.
func (c *client) join(ctx context.Context, f protocol.ClientFrame) {
	name := f.Name
	if c.identity != nil {
		name = c.identity.Name
	}
	uid, secret := protocol.NewID(), protocol.NewSecret()
	if err := c.subscribeEvents(uid); err != nil {
		c.replyErr(ctx, f.Ref, protocol.SubjectPresenceJoin, err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.e.cfg.RequestTimeout)
	defer cancel()
	var reply protocol.JoinReply
	req := protocol.JoinRequest{UserID: uid, Name: name, Edge: c.e.id, Conn: c.id, Secret: secret}
	if err := natsrpc.Call(ctx, c.e.nc, protocol.SubjectPresenceJoin, req, &reply); err != nil {
		c.unsubscribeEvents()
		c.replyErr(ctx, f.Ref, protocol.SubjectPresenceJoin, err)
		if transient(err) {
			// The join may have committed without its reply reaching us:
			// the user must not stay online with no connection.
			c.e.reportDisconnect(uid, c.id, secret)
		}
		return
	}
	// A presence older than JoinRequest.Secret made its own.
	secret = cmp.Or(reply.Secret, secret)
	c.setJoined(uid, secret)
	c.welcome(f.Ref, protocol.Personal{User: reply.User}, secret)
}

func (c *client) resume(ctx context.Context, f protocol.ClientFrame) {
	if err := c.subscribeEvents(f.UserID); err != nil {
		c.replyErr(ctx, f.Ref, protocol.SubjectPresenceResume, err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.e.cfg.RequestTimeout)
	defer cancel()
	var p protocol.Personal
	req := protocol.ResumeRequest{UserID: f.UserID, Secret: f.Secret, Edge: c.e.id, Conn: c.id}
	if err := natsrpc.Call(ctx, c.e.nc, protocol.SubjectPresenceResume, req, &p); err != nil {
		c.unsubscribeEvents()
		c.replyErr(ctx, f.Ref, protocol.SubjectPresenceResume, err)
		if protocol.CodeOf(err) == protocol.CodeResumeFailed {
			c.e.admit.resumeFailed(c.addr)
		}
		if transient(err) {
			// The resume may have attached the user to this connection
			// without its reply reaching us: detach it again.
			c.e.reportDisconnect(f.UserID, c.id, f.Secret)
		}
		return
	}
	c.setJoined(f.UserID, f.Secret)
	c.welcome(f.Ref, p, "")
	// One connection per user: presence has told the edges to close any
	// other connection of this user.
}

func (c *client) welcome(ref string, p protocol.Personal, secret string) {
	you := p.User
	mode := c.e.mode()
	// Subscribing takes the list as it is, already encoded, and has every
	// later change delivered after the welcome. The user's own invitations and chat come from the hub too when it
	// has them, at the same revision as the list, so that the sync frames
	// that follow apply on top of them.
	list, rev, own := c.e.hub.subscribe(c, c.userID)
	if own != nil {
		p.Incoming, p.Outgoing, p.Chat = own.Incoming, own.Outgoing, own.Chat
	}
	data, err := json.Marshal(protocol.ServerFrame{
		Type: protocol.TypeWelcome, Ref: ref, Version: protocol.Version, Mode: mode,
		You: &you, Secret: secret, Revision: rev,
		Incoming: p.Incoming, Outgoing: p.Outgoing, Chat: p.Chat,
	})
	if err != nil {
		c.e.log.Error("encode welcome", "err", err)
		c.close(websocket.CloseInternalServerErr, string(protocol.CodeInternal))
		return
	}
	c.sendWelcome(withUsers(data, list))
}

// withUsers adds the encoded list to an encoded frame as its "users",
// unless the list is empty (the field is omitted then, as when encoded).
func withUsers(frame, list []byte) []byte {
	if len(list) <= 2 { // []
		return frame
	}
	const key = `,"users":`
	out := make([]byte, 0, len(frame)+len(key)+len(list))
	out = append(out, frame[:len(frame)-1]...)
	out = append(out, key...)
	out = append(out, list...)
	return append(out, '}')
}

// sendWelcome sends the encoded welcome, then the frames delivered before
// it, and from then on lets deliver send at once; the hub's frames follow
// from where subscribe placed the connection in its feed.
func (c *client) sendWelcome(data []byte) {
	c.e.metrics.FramesOut.WithLabelValues(protocol.TypeWelcome).Inc()
	c.box.welcome(data, c.feedFrom)
}

// cleanup runs after the reader stopped: the user stops receiving events
// and presence starts the grace period.
func (c *client) cleanup() {
	c.joinedMu.Lock()
	c.joinedID, c.joinedSecret = "", "" // no longer to be reconciled: it is being reported
	c.joinedMu.Unlock()
	c.e.hub.unsubscribe(c)
	if c.events != nil {
		c.e.relay.unsubscribe(c.events)
	}
	if c.userID != "" {
		c.e.reportDisconnect(c.userID, c.id, c.secret)
	}
}

// serverFrameTypes are the frame types an edge sends, the only values its
// frames-out metric takes.
var serverFrameTypes = map[string]bool{
	protocol.TypeWelcome: true, protocol.TypeUser: true, protocol.TypeUserLeft: true,
	protocol.TypeInvitation: true, protocol.TypeInvitationEnded: true, protocol.TypeChatStarted: true,
	protocol.TypeChatEnded: true, protocol.TypeSync: true, protocol.TypeOK: true, protocol.TypeError: true,
	protocol.TypePong: true, protocol.TypeCredentials: true, protocol.TypeSignal: true,
}

// eventType is the type of an event frame a service published, for the
// frames-out metric. Services encode protocol.ServerFrame, whose first
// field is its type, so the type is read off the frame's start: a signal
// may be tens of KiB, and is relayed, not parsed.
func eventType(data []byte) string {
	rest, ok := bytes.CutPrefix(data, []byte(`{"type":"`))
	if !ok {
		return "unknown"
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 || !serverFrameTypes[string(rest[:end])] {
		return "unknown"
	}
	return string(rest[:end])
}

// clientFrameTypes are the frame types a browser may send; any other
// counts as "invalid" in the frames-in metric, whose label values must
// not be the sender's to choose.
var clientFrameTypes = map[string]bool{
	protocol.TypeJoin: true, protocol.TypeResume: true, protocol.TypeInvite: true, protocol.TypeCancel: true,
	protocol.TypeAccept: true, protocol.TypeDecline: true, protocol.TypeEndChat: true,
	protocol.TypeCredentials: true, protocol.TypeSignal: true, protocol.TypePing: true,
}

// frameTypeLabel is a received frame's type for the frames-in metric:
// "invalid" for a frame decodeFrame refused, whose type (if any) is the
// sender's to choose.
func frameTypeLabel(typ string, err error) string {
	if err != nil || !clientFrameTypes[typ] {
		return "invalid"
	}
	return typ
}
