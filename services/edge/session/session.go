// Package session is one browser WebSocket on an edge, from the upgrade to
// the close: its reader (decode, rate limit, dispatch to the services), its
// one writer (its own frames, then the buddy list's, batched), the join or
// resume that makes it a user, and the report when it ends. It uses the
// buddy-list fan-out (fanout) and the admission limits (admission); neither
// knows it. The edge creates a Server, and a Session per socket.
package session

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/services/edge/admission"
	"github.com/buddytok/buddytok/services/edge/fanout"
	"github.com/buddytok/buddytok/services/edge/identity"
)

// Config tunes the sessions of an edge (the edge's settings of the same
// names).
type Config struct {
	PingEvery      time.Duration
	WriteTimeout   time.Duration
	RequestTimeout time.Duration
	// JoinTimeout is how long a new connection may stay without joining
	// or resuming before it is closed (1008, join_timeout).
	JoinTimeout time.Duration
	// FramesPerSecond and FrameBurst limit each connection's frames.
	FramesPerSecond float64
	FrameBurst      int
	// SendQueueBytes is how many bytes of frames may wait for a slow
	// reader (its welcome's list, which is the room's, not counted) before
	// its socket is closed; the hub's feed keeps as much.
	SendQueueBytes int
	// WriteBudget is how many socket writes a second the edge allows
	// itself for buddy-list changes: each socket writes changes at most
	// once per sockets/WriteBudget seconds (at most BatchMax), so that a
	// change that comes sooner waits and leaves with the next ones in one
	// write. Anything else a socket receives is written at once.
	WriteBudget int
	BatchMax    time.Duration
	// NoLobby refuses joins and resumes in the lobby (lobby_closed).
	NoLobby bool
}

// Deps are what the sessions of an edge share, wired by the edge.
type Deps struct {
	NC      *nats.Conn
	EdgeID  string
	Config  Config
	Log     *slog.Logger
	Metrics *metrics.Metrics
	Hub     *fanout.Hub
	Gate    *admission.Gate
	Events  *Events
	// Mode returns the video mode the tokens service runs, "" while it
	// cannot be learnt.
	Mode func() string
	// Proves reports whether secret is the resume secret of user userID of
	// room, from the user's record (false if there is none). A resume from
	// an address whose failed resumes are over their budget goes on if it
	// proves its secret: the failures of others behind the same address
	// (a NAT, an IPv6 /64) never refuse it. Nil: such resumes are refused.
	Proves func(ctx context.Context, room, userID, secret string) (bool, error)
	// Ended is told that a joined connection ended (or that a join or
	// resume may have committed without its reply reaching the edge): the
	// edge reports the user's disconnect to presence, proving it with the
	// user's secret.
	Ended func(u User, connID string)
}

// Server makes and runs an edge's sessions.
type Server struct {
	Deps
	sockets atomic.Int64 // open WebSockets, for the batch interval
}

// NewServer returns the Server of an edge.
func NewServer(d Deps) *Server { return &Server{Deps: d} }

// batchInterval is the least time between two writes of buddy-list
// changes to one socket: sockets/WriteBudget, at most BatchMax.
func (s *Server) batchInterval() time.Duration {
	d := time.Duration(s.sockets.Load()) * time.Second / time.Duration(s.Config.WriteBudget)
	return min(d, s.Config.BatchMax)
}

// Session is one browser WebSocket connection. The handler goroutine
// reads; exactly one writer goroutine at a time writes, fed by the
// connection's bounded outbox and by the hub's feed, and only while there
// is something to write. A client that does not keep up with
// either is disconnected rather than allowed to slow anyone else down.
type Session struct {
	srv     *Server
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
	room   string
	userID string
	secret string      // the user's resume secret: proves to the services that requests come from this connection
	events User        // whose events are relayed here (its ID "" if none)
	sub    *fanout.Sub // the buddy list, once welcomed

	// probation is set while the connection was admitted over its
	// address's cap (admission.Gate.AdmitOnProbation): it may only resume
	// a user, within admission.ProbationFor.
	probation atomic.Bool
	// joining is set while the connection joins or resumes (for the join
	// deadline's timer).
	joining   atomic.Bool
	joinMu    sync.Mutex
	joinBy    *time.Timer // the join deadline; nil once the reader ended
	joinEnded bool

	// joined is the user, for other goroutines (the edge's reconcile
	// loop).
	joinedMu sync.Mutex
	joined   User

	// The writer, which runs only while there is something to write
	// (runWriter), and the keepalive's timer, which gives it a ping to.
	w          writer
	wstate     atomic.Int32
	holdEnded  atomic.Bool // the batch timer fired since the writer last held
	writerDone chan struct{}
	pinger     *time.Timer
}

// User is the user a connection serves: its room, its ID, and the secret
// that proves to the services that requests for it come from this
// connection.
type User struct {
	Room, ID, Secret string
}

// New makes the session of an upgraded connection from addr (as admission
// counts it), whose upgrade carried ident if the edge requires identity.
func (s *Server) New(ws *websocket.Conn, addr netip.Prefix, ident *identity.Identity) *Session {
	c := &Session{
		srv:        s,
		ws:         ws,
		id:         protocol.NewID(),
		box:        newOutbox(s.Config.SendQueueBytes),
		quit:       make(chan struct{}),
		limiter:    rate.NewLimiter(rate.Limit(s.Config.FramesPerSecond), s.Config.FrameBurst),
		addr:       addr,
		identity:   ident,
		writerDone: make(chan struct{}),
	}
	c.w.c = c
	c.box.kick, c.box.urge = c.kick, c.urge
	return c
}

// ID is the connection's ID, as presence knows it.
func (c *Session) ID() string { return c.id }

// Serve runs the session until its connection ends, then reports the end.
// The connection must not be touched once Serve has returned (the
// WebSocket library reuses it).
func (c *Session) Serve() {
	s := c.srv
	err := s.Gate.Admit(c.addr)
	if protocol.CodeOf(err) == protocol.CodeTooManyConns && s.Gate.AdmitOnProbation(c.addr) == nil {
		err = nil
		c.probation.Store(true)
		t := time.AfterFunc(admission.ProbationFor, func() {
			if c.probation.Load() {
				c.Close(websocket.ClosePolicyViolation, string(protocol.CodeTooManyConns))
			}
		})
		defer t.Stop()
	}
	if err != nil {
		// Admitted before the upgrade, refused now: others came between.
		code := protocol.AsError(err).Code
		s.Metrics.Refused.WithLabelValues(string(code)).Inc()
		cd := websocket.ClosePolicyViolation
		if code == protocol.CodeEdgeFull {
			cd = websocket.CloseTryAgainLater
		}
		c.Close(cd, string(code))
	} else {
		defer c.release()
	}
	s.Metrics.Sockets.Inc()
	defer s.Metrics.Sockets.Dec()
	s.sockets.Add(1)
	defer s.sockets.Add(-1)
	c.startWriter()
	c.readLoop()
	c.Close(websocket.CloseNormalClosure, "")
	<-c.writerDone // the conn must not be touched after this handler returns
	c.pinger.Stop()
	c.cleanup()
}

// release ends the connection's place at its address: a promoted or
// ordinary one, or one on probation.
func (c *Session) release() {
	if c.probation.Load() {
		c.srv.Gate.ReleaseProbation(c.addr)
		return
	}
	c.srv.Gate.Release(c.addr)
}

// RefuseShuttingDown closes, instead of serving it, a connection upgraded
// as the edge shut down: it is told so and touches nothing of the edge.
func (c *Session) RefuseShuttingDown() {
	msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, string(protocol.CodeServerShutdown))
	_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
}

// Close asks the writer to send a close frame with code and reason and end
// the connection. Only the first call counts; any goroutine may call it.
func (c *Session) Close(code int, reason string) {
	c.once.Do(func() {
		c.closeCd, c.closeTx = code, reason
		close(c.quit)
		c.urge() // the writer sends the close frame
	})
}

// setJoined records the user this connection serves.
func (c *Session) setJoined(u User) {
	c.room, c.userID, c.secret = u.Room, u.ID, u.Secret
	c.joinedMu.Lock()
	c.joined = u
	c.joinedMu.Unlock()
}

// Joined returns the user this connection serves, or "" (none yet, or the
// connection is ending).
func (c *Session) Joined() string {
	u, _ := c.JoinedUser()
	return u.ID
}

// JoinedUser returns the user this connection serves, and false when
// Joined would return "".
func (c *Session) JoinedUser() (User, bool) {
	select {
	case <-c.quit:
		return User{}, false
	default:
	}
	c.joinedMu.Lock()
	defer c.joinedMu.Unlock()
	return c.joined, c.joined.ID != ""
}

// JoinedAs returns the user this connection serves, if it still serves
// uid.
func (c *Session) JoinedAs(uid string) (User, bool) {
	c.joinedMu.Lock()
	defer c.joinedMu.Unlock()
	return c.joined, uid != "" && c.joined.ID == uid
}

// cleanup runs after the reader stopped: the user stops receiving events
// and presence starts the grace period.
func (c *Session) cleanup() {
	c.joinedMu.Lock()
	c.joined = User{} // no longer to be reconciled: it is being reported
	c.joinedMu.Unlock()
	if c.sub != nil {
		c.srv.Hub.Unsubscribe(c.sub)
	}
	if c.events.ID != "" {
		c.srv.Events.unsubscribe(c.events, c)
	}
	if c.userID != "" {
		c.srv.Ended(User{Room: c.room, ID: c.userID, Secret: c.secret}, c.id)
	}
}
