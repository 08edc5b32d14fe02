package session

import (
	"cmp"
	"context"
	"encoding/json"
	"net/netip"

	"github.com/fasthttp/websocket"
	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/requestid"
)

// handler answers one decoded frame of its type.
type handler func(c *Session, ctx context.Context, f protocol.ClientFrame)

// handlers answer each frame a browser may send (protocol.ClientFrames;
// a test holds the two to the same types). A frame reaches its handler
// decoded and checked, and, unless its kind may come before a join, from a
// joined connection.
var handlers = map[string]handler{
	protocol.TypePing: func(c *Session, _ context.Context, f protocol.ClientFrame) {
		c.sendFrame(protocol.ServerFrame{Type: protocol.TypePong, Ref: f.Ref})
	},
	protocol.TypeJoin:   (*Session).join,
	protocol.TypeResume: (*Session).resume,
	protocol.TypeInvite: func(c *Session, ctx context.Context, f protocol.ClientFrame) {
		var inv protocol.Invitation
		ok := protocol.ServerFrame{Type: protocol.TypeOK, Ref: f.Ref, Invitation: &inv}
		c.relay(ctx, f.Ref, protocol.SubjectInvitesInvite, protocol.InviteRequest{Room: c.room, From: c.userID, To: f.To, Secret: c.secret}, &inv, ok)
	},
	protocol.TypeCancel:  invitationHandler(protocol.SubjectInvitesCancel),
	protocol.TypeDecline: invitationHandler(protocol.SubjectInvitesDecline),
	protocol.TypeAccept: func(c *Session, ctx context.Context, f protocol.ClientFrame) {
		var chat protocol.Chat
		ok := protocol.ServerFrame{Type: protocol.TypeOK, Ref: f.Ref, Chat: &chat}
		c.relay(ctx, f.Ref, protocol.SubjectInvitesAccept, c.invitationRequest(f), &chat, ok)
	},
	protocol.TypeEndChat: func(c *Session, ctx context.Context, f protocol.ClientFrame) {
		ok := protocol.ServerFrame{Type: protocol.TypeOK, Ref: f.Ref}
		c.relay(ctx, f.Ref, protocol.SubjectInvitesEnd, protocol.ChatRequest{Room: c.room, UserID: c.userID, Chat: f.Chat, Secret: c.secret}, nil, ok)
	},
	protocol.TypeCredentials: func(c *Session, ctx context.Context, f protocol.ClientFrame) {
		var cred protocol.Credentials
		answer := protocol.ServerFrame{Type: protocol.TypeCredentials, Ref: f.Ref, Credentials: &cred}
		c.relay(ctx, f.Ref, protocol.SubjectTokensCredentials, protocol.ChatRequest{Room: c.room, UserID: c.userID, Chat: f.Chat, Secret: c.secret}, &cred, answer)
	},
	protocol.TypeSignal: func(c *Session, ctx context.Context, f protocol.ClientFrame) {
		ok := protocol.ServerFrame{Type: protocol.TypeOK, Ref: f.Ref}
		c.relay(ctx, f.Ref, protocol.SubjectTokensSignal, protocol.SignalRequest{Room: c.room, UserID: c.userID, Chat: f.Chat, Data: f.Data, Secret: c.secret}, nil, ok)
	},
}

// invitationHandler relays a frame that names one invitation and is
// answered with a plain ok.
func invitationHandler(subject string) handler {
	return func(c *Session, ctx context.Context, f protocol.ClientFrame) {
		c.relay(ctx, f.Ref, subject, c.invitationRequest(f), nil, protocol.ServerFrame{Type: protocol.TypeOK, Ref: f.Ref})
	}
}

func (c *Session) invitationRequest(f protocol.ClientFrame) protocol.InvitationRequest {
	return protocol.InvitationRequest{Room: c.room, UserID: c.userID, Invitation: f.Invitation, Secret: c.secret}
}

// handle answers a decoded frame. The user a request acts for is always
// the connection's own.
func (c *Session) handle(f protocol.ClientFrame) {
	// Every request a frame makes, and every log line about it, carries
	// the same request ID.
	ctx := requestid.With(context.Background(), requestid.New())
	if kind, _ := protocol.ClientFrameKindOf(f.Type); !kind.BeforeJoin && c.userID == "" {
		c.sendFrame(protocol.ErrorFrame(f.Ref, protocol.Errorf(protocol.CodeNotJoined, "join first")))
		return
	}
	handlers[f.Type](c, ctx, f)
}

// relay sends req to a service, decoding its reply into resp (which
// answer may point into), and answers the client with answer or the error.
func (c *Session) relay(ctx context.Context, ref, subject string, req, resp any, answer protocol.ServerFrame) {
	ctx, cancel := context.WithTimeout(ctx, c.srv.Config.RequestTimeout)
	defer cancel()
	if err := natsrpc.Call(ctx, c.srv.NC, subject, req, resp); err != nil {
		c.replyErr(ctx, ref, subject, err)
		return
	}
	c.sendFrame(answer)
}

func (c *Session) replyErr(ctx context.Context, ref, subject string, err error) {
	if protocol.CodeOf(err) == protocol.CodeInternal {
		c.srv.Log.ErrorContext(ctx, "request failed", "subject", subject, "user", c.userID, "err", err)
	}
	c.sendFrame(protocol.ErrorFrame(ref, err))
}

// startJoining begins a join or resume, unless the connection already has
// a user or allow (the admission limit of this kind of request) refuses it,
// counted as refusedAs: the client is answered so, and startJoining reports
// false. The caller ends it with c.joining.Store(false).
func (c *Session) startJoining(ref string, allow func(netip.Prefix) error, refusedAs string) bool {
	if c.userID != "" {
		c.sendFrame(protocol.ErrorFrame(ref, protocol.Errorf(protocol.CodeAlreadyJoined, "this connection has already joined")))
		return false
	}
	if err := allow(c.addr); err != nil {
		c.srv.Metrics.Refused.WithLabelValues(refusedAs).Inc()
		c.sendFrame(protocol.ErrorFrame(ref, err))
		return false
	}
	c.joining.Store(true)
	return true
}

// join makes the connection a new user; f.Name is normalised
// (protocol.DecodeClientFrame). With an identity token, the name is the
// token's.
func (c *Session) join(ctx context.Context, f protocol.ClientFrame) {
	if c.probation.Load() {
		// Over its address's cap, a connection may only bring a user
		// back: a new one would take more than the address's share.
		c.srv.Metrics.Refused.WithLabelValues(string(protocol.CodeTooManyConns)).Inc()
		c.sendFrame(protocol.ErrorFrame(f.Ref, protocol.Errorf(protocol.CodeTooManyConns,
			"too many connections from your address; only a returning user may resume here now")))
		c.Close(websocket.ClosePolicyViolation, string(protocol.CodeTooManyConns))
		return
	}
	if !c.roomOpen(f) || !c.startJoining(f.Ref, c.srv.Gate.AllowJoin, "join_rate") {
		return
	}
	defer c.joining.Store(false)
	name := f.Name
	if c.identity != nil {
		name = c.identity.Name
	}
	uid, secret := protocol.NewID(), protocol.NewSecret()
	if err := c.subscribeEvents(f.Room, uid); err != nil {
		c.replyErr(ctx, f.Ref, protocol.SubjectPresenceJoin, err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.srv.Config.RequestTimeout)
	defer cancel()
	var reply protocol.JoinReply
	req := protocol.JoinRequest{Room: f.Room, UserID: uid, Name: name, Edge: c.srv.EdgeID, Conn: c.id, Secret: secret}
	if err := natsrpc.Call(ctx, c.srv.NC, protocol.SubjectPresenceJoin, req, &reply); err != nil {
		c.unsubscribeEvents()
		c.replyErr(ctx, f.Ref, protocol.SubjectPresenceJoin, err)
		if protocol.Transient(err) {
			// The join may have committed without its reply reaching us:
			// the user must not stay online with no connection.
			c.srv.Ended(User{Room: f.Room, ID: uid, Secret: secret}, c.id)
		}
		return
	}
	// A presence older than JoinRequest.Secret made its own.
	secret = cmp.Or(reply.Secret, secret)
	c.setJoined(User{Room: f.Room, ID: uid, Secret: secret})
	c.welcome(f.Ref, protocol.Personal{User: reply.User}, secret)
}

// roomOpen refuses a join or resume in the lobby of an edge that has none.
func (c *Session) roomOpen(f protocol.ClientFrame) bool {
	if f.Room == protocol.Lobby && c.srv.Config.NoLobby {
		c.sendFrame(protocol.ErrorFrame(f.Ref, protocol.Errorf(protocol.CodeLobbyClosed, "there is no lobby here: open a room's link, or make a new room")))
		return false
	}
	return true
}

// resume makes the connection serve an existing user again (a reload, a
// lost connection), proven by the user's secret.
func (c *Session) resume(ctx context.Context, f protocol.ClientFrame) {
	if !c.roomOpen(f) || !c.startJoining(f.Ref, c.allowResume(ctx, f), "resume_rate") {
		return
	}
	defer c.joining.Store(false)
	if err := c.subscribeEvents(f.Room, f.UserID); err != nil {
		c.replyErr(ctx, f.Ref, protocol.SubjectPresenceResume, err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.srv.Config.RequestTimeout)
	defer cancel()
	var p protocol.Personal
	req := protocol.ResumeRequest{Room: f.Room, UserID: f.UserID, Secret: f.Secret, Edge: c.srv.EdgeID, Conn: c.id}
	if err := natsrpc.Call(ctx, c.srv.NC, protocol.SubjectPresenceResume, req, &p); err != nil {
		c.unsubscribeEvents()
		c.replyErr(ctx, f.Ref, protocol.SubjectPresenceResume, err)
		if protocol.CodeOf(err) == protocol.CodeResumeFailed {
			c.srv.Gate.ResumeFailed(c.addr)
		}
		if protocol.Transient(err) {
			// The resume may have attached the user to this connection
			// without its reply reaching us: detach it again.
			c.srv.Ended(User{Room: f.Room, ID: f.UserID, Secret: f.Secret}, c.id)
		}
		return
	}
	c.setJoined(User{Room: f.Room, ID: f.UserID, Secret: f.Secret})
	if c.probation.Load() {
		c.srv.Gate.Promote(c.addr) // it proved its secret: a counted connection now
		c.probation.Store(false)
	}
	c.welcome(f.Ref, p, "")
	// One connection per user: presence has told the edges to close any
	// other connection of this user.
}

// allowResume is the admission of resume f: an address whose resumes
// failed too often lately is refused, unless this one proves its secret
// (read from the user's record, without asking presence). Penalties follow
// the failed secrets, not everyone behind the address: a guesser cannot
// make a victim sharing its address lose its session.
func (c *Session) allowResume(ctx context.Context, f protocol.ClientFrame) func(netip.Prefix) error {
	return func(addr netip.Prefix) error {
		err := c.srv.Gate.AllowResume(addr)
		if err == nil || c.srv.Proves == nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, c.srv.Config.RequestTimeout)
		defer cancel()
		if ok, perr := c.srv.Proves(ctx, f.Room, f.UserID, f.Secret); perr == nil && ok {
			return nil
		}
		return err
	}
}

// welcome answers a join or resume with the buddy list and the user's own
// records, and has every later change of the list follow it.
func (c *Session) welcome(ref string, p protocol.Personal, secret string) {
	you := p.User
	mode := c.srv.Mode()
	// Subscribing takes the list as it is, already encoded, and has every
	// later change delivered after the welcome. The user's own invitations
	// and chat come from the hub too when it has them, at the same
	// revision as the list, so that the sync frames that follow apply on
	// top of them.
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.Config.RequestTimeout)
	defer cancel()
	sub, snap, err := c.srv.Hub.Subscribe(ctx, c.room, c.userID, c)
	if err != nil {
		// The room's list cannot be read (NATS is away): the page
		// reconnects and resumes.
		c.srv.Log.Warn("the room's list could not be read for a welcome", "room", c.room, "user", c.userID, "err", err)
		c.Close(websocket.CloseTryAgainLater, string(protocol.CodeUnavailable))
		return
	}
	c.sub = sub
	if own := snap.Own; own != nil {
		p.Incoming, p.Outgoing, p.Chat = own.Incoming, own.Outgoing, own.Chat
	}
	data, err := snap.Welcome(protocol.ServerFrame{
		Type: protocol.TypeWelcome, Ref: ref, Version: protocol.Version, Room: c.room, Mode: mode,
		You: &you, Secret: secret, Incoming: p.Incoming, Outgoing: p.Outgoing, Chat: p.Chat,
	})
	if err != nil {
		c.srv.Log.Error("encode welcome", "err", err)
		c.Close(websocket.CloseInternalServerErr, string(protocol.CodeInternal))
		return
	}
	// The frames delivered before the welcome follow it, and from then on
	// deliver sends at once; the hub's frames follow from where Subscribe
	// placed the connection in its feed.
	c.srv.Metrics.FramesOut.WithLabelValues(protocol.TypeWelcome).Inc()
	c.box.welcome(data, sub)
}

// send queues an answer to the client without blocking; a client whose
// queue is over its limit is disconnected.
func (c *Session) send(data []byte) {
	if !c.box.send(data) {
		c.tooSlow("queued_bytes", c.box.queued())
	}
}

func (c *Session) sendFrame(f protocol.ServerFrame) {
	data, err := json.Marshal(f)
	if err != nil {
		c.srv.Log.Error("encode frame", "type", f.Type, "err", err)
		return
	}
	c.srv.Metrics.FramesOut.WithLabelValues(f.Type).Inc()
	c.send(data)
}

// subscribeEvents starts relaying the user's directed events to this
// connection. It happens before the user can be seen by anyone, so no
// event is missed.
func (c *Session) subscribeEvents(room, userID string) error {
	u := User{Room: room, ID: userID}
	if err := c.srv.Events.subscribe(c.srv.NC, u, c); err != nil {
		return err
	}
	c.events = u
	return nil
}

// unsubscribeEvents stops the relay after a failed join or resume.
func (c *Session) unsubscribeEvents() {
	c.srv.Events.unsubscribe(c.events, c)
	c.events = User{}
	c.box.dropHeld()
}

// event relays one directed event of the user's to the connection, or
// closes it when another connection superseded it.
func (c *Session) event(m *nats.Msg) {
	if m.Header.Get(protocol.HeaderControl) == protocol.ControlSuperseded {
		if string(m.Data) != c.id {
			c.Close(protocol.CloseSuperseded, string(protocol.CodeSuperseded))
		}
		return
	}
	c.srv.Metrics.FramesOut.WithLabelValues(eventType(m.Data)).Inc()
	c.deliver(m.Data)
}

// News starts the writer for a frame the room's feed holds for everyone
// (fanout.Waker).
func (c *Session) News() { c.box.News() }

// Own queues a frame of the room's for this connection alone, its sync,
// like a directed event (fanout.Waker): counted against this socket's own
// limit, so that one user's large syncs never push anyone else out of the
// room's feed.
func (c *Session) Own(data []byte) { c.deliver(data) }

// deliver queues a directed event, which must come after the welcome: at
// once if the welcome is queued, else held for it.
func (c *Session) deliver(data []byte) {
	if !c.box.deliver(data) {
		c.tooSlow("queued_bytes", c.box.queued())
	}
}
