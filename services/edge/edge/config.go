package edge

import (
	"cmp"
	"net"
	"strconv"
	"time"

	"github.com/buddytok/buddytok/pkg/config"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
	"github.com/buddytok/buddytok/services/edge/admission"
	"github.com/buddytok/buddytok/services/edge/identity"
	"github.com/buddytok/buddytok/services/edge/session"
)

// Config tunes an edge. Each field left zero takes its setting's declared
// default (withDefaults); ConfigFromEnv reads them from the environment.
type Config struct {
	// Listen is the HTTP address (HOST:PORT) New opens (default :8080;
	// port 0 picks one, see Addr).
	Listen string
	// AllowedOrigins may open WebSockets besides the edge's own origin;
	// "*" allows any.
	AllowedOrigins []string
	// LeaseTTL is the deployment's lease TTL: 0 takes the one its lease
	// bucket carries; any other value must equal it. The edge renews its
	// lease every third of it.
	LeaseTTL time.Duration
	// Replicas is the state buckets' replicas (0: the deployment's).
	Replicas int
	// PingEvery is how often each socket is pinged; one silent for twice
	// that and 5 s more is closed.
	PingEvery time.Duration
	// WriteTimeout bounds one socket write; RequestTimeout one request to
	// a service.
	WriteTimeout   time.Duration
	RequestTimeout time.Duration
	// FramesPerSecond and FrameBurst limit each connection's frames.
	FramesPerSecond float64
	FrameBurst      int
	// JoinTimeout is how long a new connection may stay without joining
	// or resuming before it is closed (1008, join_timeout).
	JoinTimeout time.Duration
	// SendQueueBytes is how many bytes of frames may wait for a slow
	// reader (its welcome's list, which is the room's, not counted) before
	// its socket is closed; the buddy list's feed keeps as much.
	SendQueueBytes int
	// SendBuffer is each socket's kernel send buffer in bytes.
	SendBuffer int
	// WriteBudget is how many socket writes a second the edge allows
	// itself for buddy-list changes. A write costs a system call, far more
	// than encoding or queueing the frame: each socket writes changes at
	// most once per sockets/WriteBudget seconds, and at most BatchMax
	// apart, so that a change that comes sooner waits and leaves with the
	// next ones in one write. While changes come less often than that,
	// none waits. Anything else a socket receives (an answer, an
	// invitation, a chat change) is written at once.
	WriteBudget int
	BatchMax    time.Duration
	// ReconcileEvery is how often the edge reconciles its sockets with the
	// state (reconcile.go).
	ReconcileEvery time.Duration
	// ShutdownTimeout bounds a shutdown: closing the sockets and reporting
	// their users' disconnects.
	ShutdownTimeout time.Duration
	// Admission bounds connections and joins per client address and for
	// the edge (package admission).
	Admission admission.Limits
	// Identity, if it asks for tokens, makes the upgrade require a signed
	// identity token whose name claim is the user's name (package
	// identity).
	Identity identity.Config
	// NoUsersAPI switches GET /api/users off.
	NoUsersAPI bool
	// NoLobby switches the lobby off: people join rooms by their links
	// only, and the page offers to make one.
	NoLobby bool
}

// The edge's settings.
var (
	// HostSetting and PortSetting are where the edge listens; the
	// all-in-one reads HOST with its own default (loopback).
	HostSetting = config.String("HOST", "", "edge, all-in-one", "HTTP listen host",
		config.DefaultShown("all-in-one: `127.0.0.1`; edge: all interfaces"))
	PortSetting = config.Int("PORT", 8080, 0, 65535, "edge, all-in-one", "HTTP listen port (`0` picks a free one)")

	allowedOriginsSetting = config.List("ALLOWED_ORIGINS", "edge",
		"comma-separated extra origins (`scheme://host[:port]`, matched exactly) allowed to open WebSockets; `*` for any, "+
			"which the edge warns about at start. A malformed entry stops the start",
		config.DefaultShown("— (its own origin only)"))
	usersAPISetting = config.String("USERS_API", "on", "edge", "`off` removes `GET /api/users`")
	lobbySetting    = config.String("LOBBY", "on", "edge",
		"`off` closes the lobby, the public room at `/`: people then join rooms by their links only (`/r/<room>`), and `/` offers to make one")
	pingSetting = config.Duration("WS_PING_INTERVAL", 20*time.Second, time.Second, 5*time.Minute, "edge",
		"WebSocket keepalive ping; a silent connection closes after 2× + 5 s")
	rateSetting = config.Int("WS_RATE_LIMIT", protocol.FramesPerSecond, 1, 100000, "edge",
		"frames per second each connection may send; a connection that sends a further `WS_RATE_BURST` over the limit is closed (1008 `rate_limited`)")
	burstSetting = config.Int("WS_RATE_BURST", protocol.FrameBurst, 1, 100000, "edge",
		"the burst of frames a connection may send over `WS_RATE_LIMIT`")
	sendBufferSetting = config.Int("WS_SEND_BUFFER_BYTES", protocol.SocketSendBufferBytes, 4<<10, 16<<20, "edge",
		"each socket's kernel send buffer (4 KiB to 16 MiB); with the send queue it bounds what a client that stops reading holds before it is dropped")
	sendQueueSetting = config.Int("WS_SEND_QUEUE_BYTES", protocol.SendQueueBytes, protocol.MaxSignalBytes+4<<10, 64<<20, "edge",
		"bytes of frames that may wait for one socket (its welcome's list, which is the room's, not counted), and how far it may fall behind the edge's feed "+
			"of buddy-list changes, before it is closed as too slow (1008 `slow_consumer`)")
	writeBudgetSetting = config.Int("WS_WRITE_BUDGET", 40_000, 1000, 10_000_000, "edge",
		"socket writes a second the edge allows itself for buddy-list changes: each socket writes changes at most once per "+
			"sockets ÷ budget seconds, several in one write ([scaling.md](scaling.md))")
	batchMaxSetting = config.Duration("WS_BATCH_MAX", 200*time.Millisecond, time.Millisecond, time.Second, "edge",
		"the longest a buddy-list change waits for that batch; answers, invitations and chat changes never wait")
	joinTimeoutSetting = config.Duration("WS_JOIN_TIMEOUT", protocol.JoinTimeout, time.Second, time.Hour, "edge",
		"how long a new WebSocket may stay without joining or resuming before it is closed (1008 `join_timeout`)")
	shutdownSetting = config.Duration("SHUTDOWN_TIMEOUT", 10*time.Second, time.Second, 10*time.Minute, "edge",
		"bound on a shutdown: closing the sockets and reporting their disconnects")
	reconcileSetting = config.Duration("RECONCILE_INTERVAL", time.Second, 10*time.Millisecond, time.Minute, "edge",
		"how often an edge checks its sockets against the state (re-attaches after a lapsed lease, closes sockets of removed users, reports ghosts)")
	identityHMACSetting = config.Secret("IDENTITY_HMAC_SECRET", "edge",
		"require a signed identity token (JWT, HS256 with this secret of at least 32 bytes) on every WebSocket upgrade; the user's name is then the token's "+
			"([security.md](security.md#requiring-identity))", config.DefaultShown("— (anonymous)"))
	identityJWKSSetting = config.String("IDENTITY_JWKS_URL", "", "edge",
		"require a signed identity token (RS/PS/ES/EdDSA) checked with the keys of this JSON Web Key Set", config.DefaultShown("— (anonymous)"))
	identityIssuerSetting   = config.String("IDENTITY_ISSUER", "", "edge", "the `iss` an identity token must carry")
	identityAudienceSetting = config.String("IDENTITY_AUDIENCE", "", "edge", "one `aud` an identity token must carry")
	identityNameSetting     = config.String("IDENTITY_NAME_CLAIM", "name", "edge", "the identity token's claim that holds the user's name")
)

// Settings that are not the operator's to change.
const (
	writeTimeout   = 10 * time.Second // a socket write
	requestTimeout = 20 * time.Second // a request to a service
)

// ConfigFromEnv reads the edge's settings.
func ConfigFromEnv(env *config.Env) Config {
	return Config{
		Listen:          net.JoinHostPort(HostSetting.Read(env), strconv.Itoa(PortSetting.Read(env))),
		AllowedOrigins:  allowedOriginsSetting.Read(env),
		LeaseTTL:        state.LeaseTTLSetting.Read(env),
		PingEvery:       pingSetting.Read(env),
		WriteTimeout:    writeTimeout,
		RequestTimeout:  requestTimeout,
		Replicas:        state.ReplicasSetting.Read(env),
		FramesPerSecond: float64(rateSetting.Read(env)),
		FrameBurst:      burstSetting.Read(env),
		SendBuffer:      sendBufferSetting.Read(env),
		SendQueueBytes:  sendQueueSetting.Read(env),
		WriteBudget:     writeBudgetSetting.Read(env),
		BatchMax:        batchMaxSetting.Read(env),
		JoinTimeout:     joinTimeoutSetting.Read(env),
		Admission:       admission.LimitsFromEnv(env),
		NoUsersAPI:      usersAPISetting.Read(env) == "off",
		NoLobby:         lobbySetting.Read(env) == "off",
		Identity: identity.Config{
			HMACSecret: []byte(identityHMACSetting.Read(env)),
			JWKSURL:    identityJWKSSetting.Read(env),
			Issuer:     identityIssuerSetting.Read(env),
			Audience:   identityAudienceSetting.Read(env),
			NameClaim:  identityNameSetting.Read(env),
		},
		ShutdownTimeout: shutdownSetting.Read(env),
		ReconcileEvery:  reconcileSetting.Read(env),
	}
}

// withDefaults fills the settings left zero with their declared defaults.
func (c Config) withDefaults() Config {
	c.Listen = cmp.Or(c.Listen, ":"+strconv.Itoa(PortSetting.Def))
	c.PingEvery = cmp.Or(c.PingEvery, pingSetting.Def)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, writeTimeout)
	c.RequestTimeout = cmp.Or(c.RequestTimeout, requestTimeout)
	c.FramesPerSecond = cmp.Or(c.FramesPerSecond, float64(rateSetting.Def))
	c.FrameBurst = cmp.Or(c.FrameBurst, burstSetting.Def)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, shutdownSetting.Def)
	c.ReconcileEvery = cmp.Or(c.ReconcileEvery, reconcileSetting.Def)
	c.SendQueueBytes = cmp.Or(c.SendQueueBytes, sendQueueSetting.Def)
	c.WriteBudget = cmp.Or(c.WriteBudget, writeBudgetSetting.Def)
	c.BatchMax = cmp.Or(c.BatchMax, batchMaxSetting.Def)
	c.JoinTimeout = cmp.Or(c.JoinTimeout, joinTimeoutSetting.Def)
	c.Admission = c.Admission.WithDefaults()
	c.SendBuffer = cmp.Or(c.SendBuffer, sendBufferSetting.Def)
	return c
}

// sessionConfig is what the edge's sessions take of its settings.
func (c Config) sessionConfig() session.Config {
	return session.Config{
		PingEvery: c.PingEvery, WriteTimeout: c.WriteTimeout, RequestTimeout: c.RequestTimeout,
		JoinTimeout: c.JoinTimeout, FramesPerSecond: c.FramesPerSecond, FrameBurst: c.FrameBurst,
		SendQueueBytes: c.SendQueueBytes, WriteBudget: c.WriteBudget, BatchMax: c.BatchMax,
		NoLobby: c.NoLobby,
	}
}
