// Package edge is the BuddyTok edge: it serves the web client, terminates
// browser WebSockets, validates every frame and relays it to the services
// over NATS, and pushes the buddy list and directed events back. It decides
// no business rule itself. Any number of edges may run side by side.
package edge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/middleware/filesystem"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/config"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/requestid"
	"github.com/buddytok/buddytok/pkg/retry"
	"github.com/buddytok/buddytok/pkg/state"
	"github.com/buddytok/buddytok/services/edge/identity"
	"github.com/buddytok/buddytok/web"
)

// Config tunes an edge.
type Config struct {
	// Listen is the HTTP address (HOST:PORT) New opens (default :8080;
	// port 0 picks one, see Addr).
	Listen string
	// AllowedOrigins may open WebSockets besides the edge's own origin;
	// "*" allows any.
	AllowedOrigins []string
	// LeaseTTL is the deployment's lease TTL: 0 takes the one its lease
	// bucket carries; any other value must equal it.
	LeaseTTL       time.Duration
	PingEvery      time.Duration
	WriteTimeout   time.Duration
	RequestTimeout time.Duration
	Replicas       int
	// FramesPerSecond and FrameBurst limit each connection's frames.
	FramesPerSecond float64
	FrameBurst      int
	// ReconcileEvery is how often the edge reconciles its sockets with the
	// state (reconcile.go).
	ReconcileEvery time.Duration
	// ShutdownTimeout bounds a shutdown: closing the sockets and reporting
	// their users' disconnects.
	ShutdownTimeout time.Duration
	// SendQueueBytes is how many bytes of frames may wait for a slow
	// reader, its welcome not counted, before its socket is closed
	// (WS_SEND_QUEUE_BYTES, default protocol.SendQueueBytes).
	SendQueueBytes int
	// WriteBudget is how many socket writes a second the edge allows
	// itself for buddy-list changes (WS_WRITE_BUDGET). A write costs a
	// system call, far more than encoding or queueing the frame: each
	// socket writes changes at most once per sockets/WriteBudget seconds
	// (at most BatchMax), so that a change that comes sooner waits and
	// leaves with the next ones in one write. While changes come less
	// often than that, none waits. Anything else a socket receives (an
	// answer, an invitation, a chat change) is written at once.
	WriteBudget int
	// Identity, if it asks for tokens, makes the upgrade require a signed
	// identity token whose name claim is the user's name (identity
	// package; IDENTITY_* settings).
	Identity identity.Config
	// NoUsersAPI switches GET /api/users off (USERS_API=off).
	NoUsersAPI bool
	// Admission bounds connections and joins per client address and for
	// the edge (admission.go).
	Admission Admission
	// JoinTimeout is how long a new connection may stay without joining
	// or resuming before it is closed (1008, join_timeout).
	JoinTimeout time.Duration
	// BatchMax bounds that wait (WS_BATCH_MAX).
	BatchMax time.Duration
	// SendBuffer is each socket's kernel send buffer in bytes (default
	// protocol.SocketSendBufferBytes).
	SendBuffer int
}

// ConfigFromEnv reads HOST, PORT, ALLOWED_ORIGINS, EDGE_LEASE_TTL,
// WS_PING_INTERVAL, WS_RATE_LIMIT, WS_RATE_BURST, WS_SEND_BUFFER_BYTES,
// WS_JOIN_TIMEOUT, SHUTDOWN_TIMEOUT, RECONCILE_INTERVAL and KV_REPLICAS.
func ConfigFromEnv(env *config.Env) Config {
	return Config{
		Listen:          net.JoinHostPort(env.String("HOST", ""), strconv.Itoa(env.Int("PORT", defaultPort, 0, 65535))),
		AllowedOrigins:  env.List("ALLOWED_ORIGINS"),
		LeaseTTL:        env.Duration("EDGE_LEASE_TTL", 0, time.Second, time.Minute),
		PingEvery:       env.Duration("WS_PING_INTERVAL", defaults.PingEvery, time.Second, 5*time.Minute),
		WriteTimeout:    defaults.WriteTimeout,
		RequestTimeout:  defaults.RequestTimeout,
		Replicas:        env.Int("KV_REPLICAS", 0, 1, 5),
		FramesPerSecond: float64(env.Int("WS_RATE_LIMIT", int(defaults.FramesPerSecond), 1, 100000)),
		FrameBurst:      env.Int("WS_RATE_BURST", defaults.FrameBurst, 1, 100000),
		SendBuffer:      env.Int("WS_SEND_BUFFER_BYTES", defaults.SendBuffer, 4<<10, 16<<20),
		SendQueueBytes:  env.Int("WS_SEND_QUEUE_BYTES", defaults.SendQueueBytes, protocol.MaxSignalBytes+4<<10, 64<<20),
		WriteBudget:     env.Int("WS_WRITE_BUDGET", defaults.WriteBudget, 1000, 10_000_000),
		BatchMax:        env.Duration("WS_BATCH_MAX", defaults.BatchMax, time.Millisecond, time.Second),
		JoinTimeout:     env.Duration("WS_JOIN_TIMEOUT", defaults.JoinTimeout, time.Second, time.Hour),
		Admission:       admissionFromEnv(env),
		NoUsersAPI:      env.String("USERS_API", "on") == "off",
		Identity: identity.Config{
			HMACSecret: []byte(env.Secret("IDENTITY_HMAC_SECRET")),
			JWKSURL:    env.String("IDENTITY_JWKS_URL", ""),
			Issuer:     env.String("IDENTITY_ISSUER", ""),
			Audience:   env.String("IDENTITY_AUDIENCE", ""),
			NameClaim:  env.String("IDENTITY_NAME_CLAIM", "name"),
		},
		ShutdownTimeout: env.Duration("SHUTDOWN_TIMEOUT", defaults.ShutdownTimeout, time.Second, 10*time.Minute),
		ReconcileEvery:  env.Duration("RECONCILE_INTERVAL", defaults.ReconcileEvery, 10*time.Millisecond, time.Minute),
	}
}

// admissionFromEnv reads WS_MAX_CONNS_PER_ADDR, WS_JOIN_RATE_PER_ADDR,
// WS_JOIN_BURST_PER_ADDR, WS_JOIN_RATE, WS_JOIN_BURST, WS_MAX_CONNECTIONS,
// WS_ABUSE_PENALTY_MAX and TRUSTED_PROXIES. A limit set to 0 is off.
func admissionFromEnv(env *config.Env) Admission {
	off := func(n int) int {
		if n == 0 {
			return -1
		}
		return n
	}
	d := defaultAdmission
	a := Admission{
		ConnsPerAddr:     off(env.Int("WS_MAX_CONNS_PER_ADDR", d.ConnsPerAddr, 0, 1_000_000)),
		JoinRatePerAddr:  float64(off(env.Int("WS_JOIN_RATE_PER_ADDR", int(d.JoinRatePerAddr), 0, 1_000_000))),
		JoinBurstPerAddr: env.Int("WS_JOIN_BURST_PER_ADDR", d.JoinBurstPerAddr, 1, 1_000_000),
		JoinRate:         float64(off(env.Int("WS_JOIN_RATE", int(d.JoinRate), 0, 1_000_000))),
		JoinBurst:        env.Int("WS_JOIN_BURST", d.JoinBurst, 1, 1_000_000),
		MaxSockets:       env.Int("WS_MAX_CONNECTIONS", 0, 0, 10_000_000),
		PenaltyMax:       env.Duration("WS_ABUSE_PENALTY_MAX", d.PenaltyMax, 0, 24*time.Hour),
	}
	if a.PenaltyMax == 0 {
		a.PenaltyMax = -1
	}
	for _, p := range env.List("TRUSTED_PROXIES") {
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			addr, aerr := netip.ParseAddr(p)
			if aerr != nil {
				env.Fail("TRUSTED_PROXIES: %q is neither an address nor a CIDR prefix", p)
				continue
			}
			prefix = netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen())
		}
		a.TrustedProxies = append(a.TrustedProxies, prefix.Masked())
	}
	return a
}

// defaultPort is the edge's HTTP port unless PORT says otherwise.
const defaultPort = 8080

// defaults are the edge's settings where nothing else is said, for
// ConfigFromEnv and for withDefaults alike.
var defaults = Config{
	Listen:          ":" + strconv.Itoa(defaultPort),
	PingEvery:       20 * time.Second,
	WriteTimeout:    10 * time.Second,
	RequestTimeout:  20 * time.Second,
	FramesPerSecond: protocol.FramesPerSecond,
	FrameBurst:      protocol.FrameBurst,
	ShutdownTimeout: 10 * time.Second,
	ReconcileEvery:  time.Second,
	SendQueueBytes:  protocol.SendQueueBytes,
	WriteBudget:     40_000,
	BatchMax:        200 * time.Millisecond,
	JoinTimeout:     protocol.JoinTimeout,
	SendBuffer:      protocol.SocketSendBufferBytes,
}

// withDefaults fills the settings left zero.
func (c Config) withDefaults() Config {
	c.Listen = cmp.Or(c.Listen, defaults.Listen)
	c.PingEvery = cmp.Or(c.PingEvery, defaults.PingEvery)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, defaults.WriteTimeout)
	c.RequestTimeout = cmp.Or(c.RequestTimeout, defaults.RequestTimeout)
	c.FramesPerSecond = cmp.Or(c.FramesPerSecond, defaults.FramesPerSecond)
	c.FrameBurst = cmp.Or(c.FrameBurst, defaults.FrameBurst)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, defaults.ShutdownTimeout)
	c.ReconcileEvery = cmp.Or(c.ReconcileEvery, defaults.ReconcileEvery)
	c.SendQueueBytes = cmp.Or(c.SendQueueBytes, defaults.SendQueueBytes)
	c.WriteBudget = cmp.Or(c.WriteBudget, defaults.WriteBudget)
	c.BatchMax = cmp.Or(c.BatchMax, defaults.BatchMax)
	c.JoinTimeout = cmp.Or(c.JoinTimeout, defaults.JoinTimeout)
	c.Admission = c.Admission.withDefaults()
	c.SendBuffer = cmp.Or(c.SendBuffer, defaults.SendBuffer)
	return c
}

// Edge is one edge replica.
type Edge struct {
	id      string
	nc      *nats.Conn
	cfg     Config
	log     *slog.Logger
	metrics *metrics.Metrics
	store   *state.Store
	leases  jetstream.KeyValue
	hub     *hub
	admit   *admission
	origins origins
	ident   *identity.Verifier // nil: anonymous
	app     *fiber.App
	ln      net.Listener // opened by New, served by Run

	mu      sync.Mutex
	clients map[*client]struct{}
	ended   map[string]endedConn // ended connections by ID, while a report may be needed

	sockets  atomic.Int64 // open WebSockets, for the batch interval
	leaseOK  bool
	modeName string

	conns   sync.WaitGroup // WebSocket handlers
	reports sync.WaitGroup // disconnect reports in flight

	// life ends once the edge has shut down; work started for a
	// connection (retries included) ends with it.
	life    context.Context
	endLife context.CancelFunc
	kick    chan struct{} // asks for a reconcile pass now
	relay   *eventRelay
}

// New opens the buckets and builds the HTTP app.
func New(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger, m *metrics.Metrics) (*Edge, error) {
	cfg = cfg.withDefaults()
	store, err := state.Open(ctx, nc, state.Options{Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	leases, ttl, err := state.OpenLeases(ctx, nc, cfg.LeaseTTL, state.Options{Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	cfg.LeaseTTL = ttl
	allowed, err := parseOrigins(cfg.AllowedOrigins)
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	var ident *identity.Verifier
	if cfg.Identity.Required() {
		if ident, err = identity.New(cfg.Identity); err != nil {
			return nil, fmt.Errorf("edge: %w", err)
		}
	}
	e := &Edge{origins: allowed, ident: ident,
		id: protocol.NewID(), nc: nc, cfg: cfg, log: log, store: store, leases: leases,
		metrics: m, hub: newHub(m, cfg.SendQueueBytes), clients: map[*client]struct{}{}, ended: map[string]endedConn{}, kick: make(chan struct{}, 1),
		relay: newEventRelay(), admit: newAdmission(cfg.Admission),
	}
	e.life, e.endLife = context.WithCancel(context.Background())
	e.log = log.With("edge", e.id)
	if allowed.any {
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

// ID is the edge's replica ID (its lease key).
func (e *Edge) ID() string { return e.id }

func (e *Edge) routes() *fiber.App {
	app := fiber.New(fiber.Config{
		DisableStartupMessage: true,
		ReadTimeout:           30 * time.Second,
		BodyLimit:             64 << 10,
		ErrorHandler: func(c *fiber.Ctx, err error) error {
			code := fiber.StatusInternalServerError
			var fe *fiber.Error
			if errors.As(err, &fe) {
				code = fe.Code
			}
			return c.Status(code).JSON(fiber.Map{"error": http.StatusText(code)})
		},
	})
	app.Use(e.securityHeaders)
	app.Get("/healthz", func(c *fiber.Ctx) error { return c.SendString("ok") })
	app.Get("/readyz", e.readyz)
	app.Get("/metrics", adaptor.HTTPHandler(e.metrics.Handler()))
	if !e.cfg.NoUsersAPI {
		app.Get("/api/users", e.users)
	}
	app.Use("/ws", e.upgradeGate)
	// The writer writes frames itself (client.writeFrames): the library
	// writes only control frames, so its write buffer is borrowed from a
	// pool while it does. Client frames are small; a larger one takes a
	// few more reads.
	app.Get("/ws", websocket.New(e.serveWS, websocket.Config{
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
		WriteBufferPool:  &sync.Pool{},
	}))
	app.Use("/", filesystem.New(filesystem.Config{Root: http.FS(web.Files), Index: "index.html"}))
	return app
}

func (e *Edge) readyz(c *fiber.Ctx) error {
	e.mu.Lock()
	lease := e.leaseOK
	e.mu.Unlock()
	checks := fiber.Map{"nats": e.nc.IsConnected(), "buddy_list": e.hub.isReady(), "lease": lease}
	if e.nc.IsConnected() && e.hub.isReady() && lease {
		return c.JSON(checks)
	}
	return c.Status(fiber.StatusServiceUnavailable).JSON(checks)
}

// upgradeGate lets only WebSocket upgrades from allowed origins through.
func (e *Edge) upgradeGate(c *fiber.Ctx) error {
	if !websocket.IsWebSocketUpgrade(c) {
		return fiber.ErrUpgradeRequired
	}
	peer := peerAddr(c)
	scheme := e.requestScheme(c, e.admit.trusted(peer))
	if !e.origins.allows(c.Get(fiber.HeaderOrigin), scheme, string(c.Request().Host())) {
		return e.refuse(c, fiber.StatusForbidden, string(protocol.CodeOriginRefused),
			protocol.Errorf(protocol.CodeOriginRefused, "this page's origin may not connect; see ALLOWED_ORIGINS"))
	}
	// Refused here, before the upgrade, what admit would refuse after it
	// (serveWS counts the connection): a load balancer can take a 503 to
	// another edge, and a refused address costs no upgrade.
	key := addrKey(e.admit.clientAddr(peer, c.Get(fiber.HeaderXForwardedFor)))
	if r := e.admit.check(key); r != nil {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(max(time.Second, r.retryAfter.Round(time.Second))/time.Second)))
		return e.refuse(c, r.status, r.reason, r.err)
	}
	c.Locals(addrLocal, key)
	if e.ident != nil {
		token := strings.TrimPrefix(c.Get(fiber.HeaderAuthorization), "Bearer ")
		if token == "" {
			token = c.Query("access_token")
		}
		id, err := e.ident.Verify(c.UserContext(), token)
		if err != nil {
			status := fiber.StatusUnauthorized
			if protocol.CodeOf(err) != protocol.CodeUnauthorized {
				e.log.Warn("identity token not verified", "err", err)
				status = fiber.StatusServiceUnavailable
			} else {
				c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="buddytok"`)
			}
			return e.refuse(c, status, string(protocol.CodeOf(err)), err)
		}
		c.Locals(identityLocal, &id)
	}
	return c.Next()
}

// peerAddr is the address the HTTP request came from.
func peerAddr(c *fiber.Ctx) netip.Addr {
	peer, _ := netip.AddrFromSlice(c.Context().RemoteIP())
	return peer.Unmap()
}

// refuse answers an HTTP request the edge's limits or checks refuse with
// status and err's code and message, and counts it under reason.
func (e *Edge) refuse(c *fiber.Ctx, status int, reason string, err error) error {
	e.metrics.Refused.WithLabelValues(reason).Inc()
	pe := protocol.AsError(err)
	return c.Status(status).JSON(fiber.Map{"code": pe.Code, "message": pe.Message})
}

// addrLocal is the request local that carries a connection's address key
// from upgradeGate to serveWS.
const addrLocal = "buddytok.addr"

// identityLocal carries a verified identity from upgradeGate to serveWS.
const identityLocal = "buddytok.identity"

func (e *Edge) serveWS(ws *websocket.Conn) {
	c := newClient(e, ws.Conn)
	c.addr, _ = ws.Locals(addrLocal).(netip.Prefix)
	c.identity, _ = ws.Locals(identityLocal).(*identity.Identity)
	if !e.track(c) {
		// Upgraded as the edge shut down, after it closed its sockets: it
		// is told so and touches nothing of the edge.
		msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, string(protocol.CodeServerShutdown))
		_ = ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		return
	}
	defer e.conns.Done()
	if err := e.admit.admit(c.addr); err != nil {
		// Admitted by upgradeGate, refused now: others came between.
		code := protocol.AsError(err).Code
		e.metrics.Refused.WithLabelValues(string(code)).Inc()
		cd := websocket.ClosePolicyViolation
		if code == protocol.CodeEdgeFull {
			cd = websocket.CloseTryAgainLater
		}
		c.close(cd, string(code))
	} else {
		defer e.admit.release(c.addr)
	}
	e.metrics.Sockets.Inc()
	defer e.metrics.Sockets.Dec()
	e.sockets.Add(1)
	defer e.sockets.Add(-1)
	writerDone := make(chan struct{})
	go c.writeLoop(writerDone)
	c.readLoop()
	c.close(websocket.CloseNormalClosure, "")
	<-writerDone // the conn must not be touched after this handler returns
	c.cleanup()
	e.untrack(c)
}

// batchInterval is the least time between two writes of buddy-list
// changes to one socket: sockets/WriteBudget, at most BatchMax.
func (e *Edge) batchInterval() time.Duration {
	d := time.Duration(e.sockets.Load()) * time.Second / time.Duration(e.cfg.WriteBudget)
	return min(d, e.cfg.BatchMax)
}

// track registers c; it reports false once the edge is shutting down.
// track counts c among the edge's connections, unless the edge has shut
// down (its connections are closed, and it waits for those it counted).
func (e *Edge) track(c *client) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.clients == nil {
		return false
	}
	e.conns.Add(1)
	e.clients[c] = struct{}{}
	return true
}

func (e *Edge) untrack(c *client) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.clients, c)
}

// reportDisconnect tells presence a connection ended. A lost report would
// keep the user online, so it is retried for up to reportFor while presence
// is unreachable or failing, and no longer than the edge lives: a shutdown
// cuts the retries short, and the lease the edge then drops tells presence
// about every user still attached to it. secret proves the report comes
// from the connection's edge; the edge keeps it (ended) while the state may
// still show the user attached to the ended connection, so that the
// reconcile loop can report again (exorcise): after a failed report, or
// a join that timed out here and committed after its report.
func (e *Edge) reportDisconnect(userID, connID, secret string) {
	e.mu.Lock()
	e.ended[connID] = endedConn{user: userID, secret: secret, reporting: true}
	e.mu.Unlock()
	e.reports.Add(1)
	go func() {
		defer e.reports.Done()
		ctx, cancel := context.WithTimeout(requestid.With(e.life, requestid.New()), reportFor)
		defer cancel()
		req := protocol.DisconnectRequest{UserID: userID, Conn: connID, Secret: secret}
		policy := retry.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second,
			Retryable: func(err error) bool { return transient(err) && !e.nc.IsClosed() }}
		err := retry.Do(ctx, policy, func(ctx context.Context) error {
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return natsrpc.Call(callCtx, e.nc, protocol.SubjectPresenceDisconnect, req, nil)
		})
		e.mu.Lock()
		e.ended[connID] = endedConn{user: userID, secret: secret, keepUntil: time.Now().Add(reportFor)}
		e.mu.Unlock()
		if err != nil {
			e.log.WarnContext(ctx, "disconnect report failed", "user", userID, "conn", connID, "err", err)
		}
	}()
}

// endedConn is a connection that ended: its user, and the proof a
// disconnect report needs.
type endedConn struct {
	user, secret string
	reporting    bool      // a report is being made
	keepUntil    time.Time // else kept at least until then, and while the state shows the user on it
}

// reportFor bounds the retries of one disconnect report. Every failure but
// a refusal of the request itself is retried, while the edge has NATS.
const reportFor = time.Minute

// transient reports whether a failed call to a service may succeed if made
// again: the service was unreachable or slow, or failed in a way that is
// not an answer about the request.
func transient(err error) bool {
	switch protocol.CodeOf(err) {
	case protocol.CodeUnavailable, protocol.CodeInternal, protocol.CodeConflict:
		return true
	}
	return false
}

// mode asks the tokens service which video mode it runs, once.
// knownMode is the video mode once mode has learnt it, else "".
func (e *Edge) knownMode() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.modeName
}

// users serves GET /api/users: every online user, as the welcome lists
// them, from the list the hub keeps encoded per revision; rate-limited per
// client address.
func (e *Edge) users(c *fiber.Ctx) error {
	key := addrKey(e.admit.clientAddr(peerAddr(c), c.Get(fiber.HeaderXForwardedFor)))
	if err := e.admit.allowListing(key); err != nil {
		c.Set(fiber.HeaderRetryAfter, "1")
		return e.refuse(c, fiber.StatusTooManyRequests, "users_rate", err)
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(e.hub.list())
}

func (e *Edge) mode() string {
	e.mu.Lock()
	m := e.modeName
	e.mu.Unlock()
	if m != "" {
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

// renewLease keeps the edge's lease (at revision rev) alive until ctx
// ends. Each renewal expects the revision of the last: if the lease was
// removed meanwhile (it expired while NATS was away or the process was
// paused, and presence detached this edge's users), the renewal makes a new
// one and asks for a reconcile pass at once, to attach the users again
// within their grace period. So does a renewal after failed ones.
func (e *Edge) renewLease(ctx context.Context, rev uint64) {
	t := time.NewTicker(e.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		val := []byte(time.Now().UTC().Format(time.RFC3339Nano))
		// A renewal that has not been answered by the next one is lost
		// (its request went out on a connection that died): waiting for
		// it longer would only hide a lapse.
		rctx, cancel := context.WithTimeout(ctx, e.cfg.LeaseTTL/3)
		next, err := e.leases.Update(rctx, e.id, val, rev)
		lost := errors.Is(err, jetstream.ErrKeyRevisionMismatch)
		if lost {
			next, err = e.leases.Put(rctx, e.id, val)
		}
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				e.log.Warn("lease renewal failed", "err", err)
			}
		} else {
			rev = next
		}
		e.mu.Lock()
		lapsed := err == nil && (lost || !e.leaseOK)
		e.leaseOK = err == nil
		e.mu.Unlock()
		if lapsed {
			e.log.Warn("lease renewed after a lapse; reconciling sockets with the state", "lost", lost)
			e.kickReconcile()
		}
	}
}

// Run serves HTTP on the edge's listener until ctx ends, then shuts down
// in order: stop accepting, close every WebSocket with 1001, report the
// disconnects, drop the lease.
func (e *Edge) Run(ctx context.Context) error {
	leaseRev, err := e.leases.Put(ctx, e.id, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	if err != nil {
		_ = e.ln.Close()
		return fmt.Errorf("edge: first lease: %w", err)
	}
	e.mu.Lock()
	e.leaseOK = true
	e.mu.Unlock()
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); e.relay.run(bg) }()
	go func() { defer wg.Done(); e.renewLease(bg, leaseRev) }()
	go func() { defer wg.Done(); e.reconcileUntilDone(bg) }()
	go func() {
		defer wg.Done()
		_ = retry.Do(bg, retry.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second}, func(ctx context.Context) error {
			err := e.hub.watch(ctx, e.store.KV())
			if ctx.Err() == nil {
				e.log.Warn("buddy list watcher restarting", "err", err)
			}
			return err
		})
	}()
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
	shutdownCtx, cancel := context.WithTimeout(context.Background(), e.cfg.ShutdownTimeout)
	defer cancel()
	if serr := e.app.ShutdownWithContext(shutdownCtx); serr != nil {
		err = errors.Join(err, serr)
	}
	e.mu.Lock()
	for c := range e.clients {
		c.close(websocket.CloseGoingAway, string(protocol.CodeServerShutdown))
	}
	e.clients = nil
	e.mu.Unlock()
	e.conns.Wait()
	// Disconnect reports get what is left of the shutdown time; those
	// still failing then are covered by dropping the lease.
	stopReports := context.AfterFunc(shutdownCtx, e.endLife)
	e.reports.Wait()
	stopReports()
	e.endLife()
	stopBG()
	wg.Wait()
	leaseCtx, cancelLease := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancelLease()
	if derr := e.leases.Delete(leaseCtx, e.id); derr != nil {
		e.log.Warn("lease delete failed", "err", derr)
	}
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
