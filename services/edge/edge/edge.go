// Package edge is the BuddyTok edge replica: it wires the parts that serve
// browsers (admission, session, fanout) to NATS and HTTP, and owns what is
// the edge's as a whole: its routes, its lease, its registry of open
// sockets and their reconciliation with the state, and its lifetime. It
// decides no business rule itself. Any number of edges may run side by
// side.
package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/retry"
	"github.com/buddytok/buddytok/pkg/state"
	"github.com/buddytok/buddytok/services/edge/admission"
	"github.com/buddytok/buddytok/services/edge/fanout"
	"github.com/buddytok/buddytok/services/edge/identity"
	"github.com/buddytok/buddytok/services/edge/session"
)

// Edge is one edge replica.
type Edge struct {
	id       string // protocol.EdgeID(secret): its lease key
	secret   string // its lease secret (LeaseRequest); never leaves the process
	nc       *nats.Conn
	cfg      Config
	log      *slog.Logger
	metrics  *metrics.Metrics
	store    *state.Store
	hub      *fanout.Hub
	gate     *admission.Gate
	origins  admission.Origins
	ident    *identity.Verifier // nil: anonymous
	sessions *session.Server
	events   *session.Events
	app      *fiber.App
	ln       net.Listener // opened by New, served by Run

	mu      sync.Mutex
	clients map[*session.Session]struct{} // nil once the edge shut down
	ended   map[string]endedConn          // ended connections by ID, while a report may be needed

	leaseOK  bool
	modeName string

	conns   sync.WaitGroup // WebSocket handlers
	reports sync.WaitGroup // disconnect reports in flight

	// life ends once the edge has shut down; work started for a
	// connection (retries included) ends with it.
	life    context.Context
	endLife context.CancelFunc
	kick    chan struct{} // asks for a reconcile pass now
}

// New opens the buckets, wires the edge's parts and opens its listener.
func New(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger, m *metrics.Metrics) (*Edge, error) {
	cfg = cfg.withDefaults()
	store, err := state.Open(ctx, nc, state.Options{Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	// The edge reads the deployment's lease TTL from the lease bucket;
	// presence writes its lease (lease.go).
	_, ttl, err := state.OpenLeases(ctx, nc, cfg.LeaseTTL, state.Options{Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	cfg.LeaseTTL = ttl
	allowed, err := admission.ParseOrigins(cfg.AllowedOrigins)
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	var ident *identity.Verifier
	if cfg.Identity.Required() {
		if ident, err = identity.New(cfg.Identity); err != nil {
			return nil, fmt.Errorf("edge: %w", err)
		}
	}
	secret := protocol.NewSecret()
	e := &Edge{origins: allowed, ident: ident,
		id: protocol.EdgeID(secret), secret: secret, nc: nc, cfg: cfg, store: store, metrics: m,
		gate: admission.New(cfg.Admission), events: session.NewEvents(),
		clients: map[*session.Session]struct{}{}, ended: map[string]endedConn{}, kick: make(chan struct{}, 1),
	}
	e.life, e.endLife = context.WithCancel(context.Background())
	e.log = log.With("edge", e.id)
	e.hub = fanout.New(nc, store, m, e.log, cfg.SendQueueBytes)
	e.sessions = session.NewServer(session.Deps{
		NC: nc, EdgeID: e.id, Config: cfg.sessionConfig(), Log: e.log, Metrics: m,
		Hub: e.hub, Gate: e.gate, Events: e.events, Mode: e.mode, Ended: e.reportDisconnect, Proves: e.proves,
	})
	if allowed.Any() {
		e.log.Warn("ALLOWED_ORIGINS is *: any web site may open WebSockets to this edge from its visitors' browsers, as them; list the origins that may instead")
	}
	e.app = e.routes()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("edge: listen on %s: %w", cfg.Listen, err)
	}
	e.ln = ln
	e.log.Info("edge listening", "addr", ln.Addr().String())
	return e, nil
}

// Addr is where the edge listens (Config.Listen, its port chosen if 0).
func (e *Edge) Addr() net.Addr { return e.ln.Addr() }

// proves reports whether secret is the resume secret of user id of room,
// from the user's record (session.Deps.Proves).
func (e *Edge) proves(ctx context.Context, room, id, secret string) (bool, error) {
	u, _, err := e.store.GetUser(ctx, room, id)
	if errors.Is(err, state.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return u.Proves(secret), nil
}

// ID is the edge's replica ID (its lease key).
func (e *Edge) ID() string { return e.id }

// serveWS runs one upgraded WebSocket's session, counted among the edge's
// sockets while it lasts.
func (e *Edge) serveWS(ws *websocket.Conn) {
	addr, _ := ws.Locals(addrLocal).(netip.Prefix)
	ident, _ := ws.Locals(identityLocal).(*identity.Identity)
	s := e.sessions.New(ws.Conn, addr, ident)
	if !e.track(s) {
		s.RefuseShuttingDown()
		return
	}
	defer e.conns.Done()
	s.Serve()
	e.untrack(s)
}

// track counts s among the edge's connections, unless the edge has shut
// down (its connections are closed, and it waits for those it counted):
// it reports false then.
func (e *Edge) track(s *session.Session) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.clients == nil {
		return false
	}
	e.conns.Add(1)
	e.clients[s] = struct{}{}
	return true
}

func (e *Edge) untrack(s *session.Session) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.clients, s)
}

// knownMode is the video mode once mode has learnt it, else "".
func (e *Edge) knownMode() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.modeName
}

// mode asks the tokens service which video mode it runs, once.
func (e *Edge) mode() string {
	if m := e.knownMode(); m != "" {
		return m
	}
	var reply protocol.ModeReply
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := natsrpc.Call(ctx, e.nc, protocol.SubjectTokensMode, protocol.Empty{}, &reply); err != nil {
		return ""
	}
	e.mu.Lock()
	e.modeName = reply.Mode
	e.mu.Unlock()
	return reply.Mode
}

// Run serves HTTP on the edge's listener until ctx ends, then shuts down
// in order: stop accepting, close every WebSocket with 1001, report the
// disconnects, drop the lease.
func (e *Edge) Run(ctx context.Context) error {
	leaseRev, err := e.firstLease(ctx)
	if err != nil {
		_ = e.ln.Close()
		return fmt.Errorf("edge: first lease: %w", err)
	}
	e.mu.Lock()
	e.leaseOK = true
	e.mu.Unlock()
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(5)
	go func() { defer wg.Done(); e.events.Run(bg) }()
	go func() {
		defer wg.Done()
		e.gate.ResolveTrustedHosts(bg, func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}, func(host string, err error) {
			e.log.Warn("a trusted proxy's name does not resolve (yet); its last addresses, if any, stay trusted", "host", host, "err", err)
		})
	}()
	go func() { defer wg.Done(); e.renewLease(bg, leaseRev) }()
	go func() { defer wg.Done(); e.reconcileUntilDone(bg) }()
	go func() { defer wg.Done(); e.runHub(bg) }()
	serveErr := make(chan error, 1)
	go func() {
		serveErr <- e.app.Listener(sendBufferListener{Listener: e.ln, bytes: e.cfg.SendBuffer, log: e.log})
	}()

	err = nil
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("edge: serve: %w", err)
	}
	err = errors.Join(err, e.shutdown())
	stopBG()
	wg.Wait()
	e.releaseLease()
	return err
}

// runHub runs the rooms' hub until ctx ends, starting it again if it
// fails.
func (e *Edge) runHub(ctx context.Context) {
	_ = retry.Do(ctx, retry.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second}, func(ctx context.Context) error {
		err := e.hub.Run(ctx)
		if ctx.Err() == nil {
			e.log.Warn("rooms' hub restarting", "err", err)
		}
		return err
	})
}

// shutdown stops accepting, closes every WebSocket with 1001 and waits for
// their sessions to end and their disconnects to be reported, within
// ShutdownTimeout: the reports still failing then are covered by the lease
// the edge drops.
func (e *Edge) shutdown() error {
	shutdownCtx, cancel := context.WithTimeout(context.Background(), e.cfg.ShutdownTimeout)
	defer cancel()
	err := e.app.ShutdownWithContext(shutdownCtx)
	e.mu.Lock()
	for s := range e.clients {
		s.Close(websocket.CloseGoingAway, string(protocol.CodeServerShutdown))
	}
	e.clients = nil
	e.mu.Unlock()
	e.conns.Wait()
	stopReports := context.AfterFunc(shutdownCtx, e.endLife)
	e.reports.Wait()
	stopReports()
	e.endLife()
	return err
}

// sendBufferListener sets the kernel send buffer of every TCP connection it
// accepts (Config.SendBuffer).
type sendBufferListener struct {
	net.Listener
	bytes int
	log   *slog.Logger
}

func (l sendBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok && err == nil {
		if serr := tc.SetWriteBuffer(l.bytes); serr != nil {
			l.log.Warn("could not bound a socket's send buffer; the kernel's default stays", "err", serr)
		}
	}
	return c, err
}
