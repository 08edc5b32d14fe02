package edge

import (
	"cmp"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/buddytok/buddytok/pkg/config"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/services/edge/admission"
	"github.com/buddytok/buddytok/services/edge/identity"
	"github.com/buddytok/buddytok/services/edge/session"
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
	// the edge (package admission).
	Admission admission.Limits
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
func admissionFromEnv(env *config.Env) admission.Limits {
	off := func(n int) int {
		if n == 0 {
			return -1
		}
		return n
	}
	d := admission.Limits{}.WithDefaults()
	a := admission.Limits{
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
	c.Admission = c.Admission.WithDefaults()
	c.SendBuffer = cmp.Or(c.SendBuffer, defaults.SendBuffer)
	return c
}

// sessionConfig is what the edge's sessions take of its settings.
func (c Config) sessionConfig() session.Config {
	return session.Config{
		PingEvery: c.PingEvery, WriteTimeout: c.WriteTimeout, RequestTimeout: c.RequestTimeout,
		JoinTimeout: c.JoinTimeout, FramesPerSecond: c.FramesPerSecond, FrameBurst: c.FrameBurst,
		SendQueueBytes: c.SendQueueBytes, WriteBudget: c.WriteBudget, BatchMax: c.BatchMax,
	}
}
