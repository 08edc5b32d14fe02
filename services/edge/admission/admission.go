// Package admission decides who may connect to an edge and how much they
// may do: connections and joins per client address and for the whole edge,
// the penalty of an address that abused its socket, the client address
// behind trusted proxies, and the origins whose pages may open WebSockets.
// It knows nothing of sockets or of the services: the session asks it.
package admission

import (
	"context"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/buddytok/buddytok/pkg/config"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// Limits bound who may connect and join, per client address and for
// the whole edge, so that no one address, and no storm, can take the edge
// from everyone else. The per-address counts are this edge's own: behind a
// load balancer over N edges, an address may hold N times as much.
type Limits struct {
	// ConnsPerAddr bounds the WebSockets open from one client address (an
	// IPv6 address counts by its /64).
	ConnsPerAddr int
	// JoinRatePerAddr and JoinBurstPerAddr bound the joins from one
	// address; JoinRate and JoinBurst the joins of the whole edge.
	JoinRatePerAddr  float64
	JoinBurstPerAddr int
	JoinRate         float64
	JoinBurst        int
	// MaxSockets bounds the WebSockets of the edge; one more is refused
	// (HTTP 503 edge_full) before the upgrade, so a load balancer can try
	// another edge. By default the process's open-file limit less a
	// reserve.
	MaxSockets int
	// TrustedProxies are the proxies (load balancers) whose
	// X-Forwarded-For is believed: a connection from one of them counts
	// for the address it forwarded for.
	TrustedProxies []netip.Prefix
	// TrustedHosts name more such proxies by host name (a compose
	// service, a headless Kubernetes Service): their addresses are
	// believed once resolved (Gate.ResolveTrustedHosts), so that only the
	// load balancer, not every neighbour on a private network, may say
	// whom a connection is for.
	TrustedHosts []string
	// PenaltyMax bounds how long an address is refused new connections
	// after the edge closed one of its sockets for abuse (a flood over the
	// rate limit, a frame over the read limit): a second at first, twice
	// as long at each further abuse, forgotten after PenaltyMax without
	// one. Without it a closed abuser reconnects at once, hundreds of
	// times a second.
	PenaltyMax time.Duration
}

// The settings of the limits; set to 0, a limit is off.
var (
	connsPerAddrSetting = config.Int("WS_MAX_CONNS_PER_ADDR", 64, 0, 1_000_000, "edge",
		"WebSockets one client address may hold on one edge (an IPv6 address counts by its /64); more are refused with 429 `too_many_connections`. `0`: no limit")
	joinRatePerAddrSetting = config.Int("WS_JOIN_RATE_PER_ADDR", 2, 0, 1_000_000, "edge",
		"joins a second one client address may make on one edge; more are refused with `rate_limited`. `0`: no limit")
	joinBurstPerAddrSetting = config.Int("WS_JOIN_BURST_PER_ADDR", 20, 1, 1_000_000, "edge",
		"the burst of joins one client address may make over `WS_JOIN_RATE_PER_ADDR`")
	joinRateSetting = config.Int("WS_JOIN_RATE", 500, 0, 1_000_000, "edge",
		"joins a second the whole edge takes. `0`: no limit")
	joinBurstSetting = config.Int("WS_JOIN_BURST", 1000, 1, 1_000_000, "edge",
		"the burst of joins the edge takes over `WS_JOIN_RATE`")
	maxConnectionsSetting = config.Int("WS_MAX_CONNECTIONS", 0, 0, 10_000_000, "edge",
		"WebSockets one edge holds; more are refused before the upgrade with 503 `edge_full`, so a load balancer can try another edge",
		config.DefaultShown("the open-file limit less 256"))
	penaltyMaxSetting = config.Duration("WS_ABUSE_PENALTY_MAX", time.Minute, 0, 24*time.Hour, "edge",
		"after the edge closes a socket for abuse (a flood, a frame over 64 KiB), its address's new connections are refused (429) "+
			"for a second, twice as long at each further abuse up to this; `0` turns it off")
	trustedProxiesSetting = config.List("TRUSTED_PROXIES", "edge",
		"comma-separated addresses, CIDR prefixes or host names (resolved every 10 s) of load balancers whose `X-Forwarded-For` is believed "+
			"for the per-address limits (compose names its load balancer; the Kubernetes base trusts the private ranges, where a NetworkPolicy lets only the ingress controller reach the edges)",
		config.DefaultShown("— (none)"))
)

// Limits that are zero take these defaults (their settings'); a negative
// one is off.
var defaults = Limits{
	ConnsPerAddr:     connsPerAddrSetting.Def,
	JoinRatePerAddr:  float64(joinRatePerAddrSetting.Def),
	JoinBurstPerAddr: joinBurstPerAddrSetting.Def,
	JoinRate:         float64(joinRateSetting.Def),
	JoinBurst:        joinBurstSetting.Def,
	PenaltyMax:       penaltyMaxSetting.Def,
}

// LimitsFromEnv reads the limits' settings. A limit set to 0 is off.
func LimitsFromEnv(env *config.Env) Limits {
	off := func(n int) int {
		if n == 0 {
			return -1
		}
		return n
	}
	a := Limits{
		ConnsPerAddr:     off(connsPerAddrSetting.Read(env)),
		JoinRatePerAddr:  float64(off(joinRatePerAddrSetting.Read(env))),
		JoinBurstPerAddr: joinBurstPerAddrSetting.Read(env),
		JoinRate:         float64(off(joinRateSetting.Read(env))),
		JoinBurst:        joinBurstSetting.Read(env),
		MaxSockets:       maxConnectionsSetting.Read(env),
		PenaltyMax:       penaltyMaxSetting.Read(env),
	}
	if a.PenaltyMax == 0 {
		a.PenaltyMax = -1
	}
	for _, p := range trustedProxiesSetting.Read(env) {
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			addr, aerr := netip.ParseAddr(p)
			if aerr != nil {
				if !hostName(p) {
					env.Fail("TRUSTED_PROXIES: %q is neither an address, a CIDR prefix nor a host name", p)
				} else {
					a.TrustedHosts = append(a.TrustedHosts, p)
				}
				continue
			}
			prefix = netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen())
		}
		a.TrustedProxies = append(a.TrustedProxies, prefix.Masked())
	}
	return a
}

// penaltyFirst is an address's first penalty.
const penaltyFirst = time.Second

// Failed resumes from one address are throttled: a secret cannot be
// guessed, but each try costs a presence request.
const (
	resumeFailuresPerSecond = 1
	resumeFailuresBurst     = 5
)

// GET /api/users from one address: the whole list is a large answer.
const (
	listingsPerSecond = 1
	listingsBurst     = 5
)

// WithDefaults fills the limits left zero.
func (a Limits) WithDefaults() Limits {
	if a.ConnsPerAddr == 0 {
		a.ConnsPerAddr = defaults.ConnsPerAddr
	}
	if a.JoinRatePerAddr == 0 {
		a.JoinRatePerAddr = defaults.JoinRatePerAddr
	}
	if a.JoinBurstPerAddr <= 0 {
		a.JoinBurstPerAddr = defaults.JoinBurstPerAddr
	}
	if a.JoinRate == 0 {
		a.JoinRate = defaults.JoinRate
	}
	if a.JoinBurst <= 0 {
		a.JoinBurst = defaults.JoinBurst
	}
	if a.MaxSockets == 0 {
		a.MaxSockets = socketsForFiles(openFileLimit())
	}
	if a.PenaltyMax == 0 {
		a.PenaltyMax = defaults.PenaltyMax
	}
	return a
}

// socketsForFiles is how many sockets an edge may hold with files open
// files at most: a reserve stays for NATS, the listener, logs and the
// moment between accepting a connection and refusing it.
func socketsForFiles(files int) int {
	const reserve = 256
	return max(files-reserve, 64)
}

// Gate applies Limits: one per edge.
type Gate struct {
	cfg        Limits
	joins      *rate.Limiter // the edge's
	now        func() time.Time
	hosts      atomic.Pointer[[]netip.Addr] // the trusted host names' addresses
	hostsEvery time.Duration                // how often they are resolved again
	refresh    chan struct{}                // one slot: resolve them again soon

	mu        sync.Mutex
	addrs     map[netip.Prefix]*addrState
	sockets   int
	lastSweep time.Time
}

// addrState is what the edge keeps of one client address while it has
// sockets open or limits to remember.
type addrState struct {
	conns     int
	probation int // connections over the cap that may only resume (AdmitOnProbation)
	joins     *rate.Limiter
	resumes   *rate.Limiter // failed resumes
	lists     *rate.Limiter // GET /api/users
	// penalty is the address's last penalty, refusing it until
	// penaltyUntil.
	penalty      time.Duration
	penaltyUntil time.Time
}

// New returns a Gate applying cfg (with its defaults filled).
func New(cfg Limits) *Gate {
	cfg = cfg.WithDefaults()
	return &Gate{cfg: cfg, joins: limiter(cfg.JoinRate, cfg.JoinBurst), addrs: map[netip.Prefix]*addrState{}, now: time.Now,
		hostsEvery: trustedHostsEvery, refresh: make(chan struct{}, 1)}
}

// limiter is a token bucket; a negative rate is no limit.
func limiter(perSecond float64, burst int) *rate.Limiter {
	if perSecond < 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	return rate.NewLimiter(rate.Limit(perSecond), burst)
}

// ClientAddr is the address a connection counts for: its peer's, or, if
// the peer is a trusted proxy, the last address in X-Forwarded-For that
// is not a trusted proxy (the one the nearest trusted proxy saw).
func (a *Gate) ClientAddr(peer netip.Addr, forwardedFor string) netip.Addr {
	peer = peer.Unmap()
	if forwardedFor == "" {
		return peer
	}
	if !a.Trusted(peer) {
		if len(a.cfg.TrustedHosts) > 0 {
			// Perhaps a named proxy that moved (restarted elsewhere):
			// its name is resolved again soon.
			select {
			case a.refresh <- struct{}{}:
			default:
			}
		}
		return peer
	}
	hops := strings.Split(forwardedFor, ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return peer // a malformed header: believe only what we saw
		}
		if hop = hop.Unmap(); !a.Trusted(hop) || i == 0 {
			return hop
		}
	}
	return peer
}

func (a *Gate) Trusted(addr netip.Addr) bool {
	for _, p := range a.cfg.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	if hosts := a.hosts.Load(); hosts != nil {
		return slices.Contains(*hosts, addr)
	}
	return false
}

// hostName reports whether s has the form of a DNS host name.
func hostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// trustedHostsEvery is how often the trusted host names are resolved
// again: a load balancer restarted elsewhere is believed again within it.
const trustedHostsEvery = 10 * time.Second

// ResolveTrustedHosts resolves the trusted host names now and every
// trustedHostsEvery until ctx ends, believing their addresses: every
// second while one has never resolved (a load balancer started after the
// edge), and within a second of a forwarded connection from an address
// not believed (one that moved). A name that does not resolve keeps the
// addresses it had; failed is told when a name stops resolving (once,
// until it resolves again).
func (a *Gate) ResolveTrustedHosts(ctx context.Context, resolve func(context.Context, string) ([]netip.Addr, error), failed func(host string, err error)) {
	if len(a.cfg.TrustedHosts) == 0 {
		return
	}
	known, failing := map[string][]netip.Addr{}, map[string]bool{}
	tick := time.NewTicker(a.hostsEvery)
	defer tick.Stop()
	for {
		for _, h := range a.cfg.TrustedHosts {
			rctx, cancel := context.WithTimeout(ctx, a.hostsEvery/2)
			addrs, err := resolve(rctx, h)
			cancel()
			if err != nil {
				if !failing[h] {
					failing[h] = true
					failed(h, err)
				}
				continue
			}
			delete(failing, h)
			for i := range addrs {
				addrs[i] = addrs[i].Unmap()
			}
			known[h] = addrs
		}
		var all []netip.Addr
		for _, addrs := range known {
			all = append(all, addrs...)
		}
		a.hosts.Store(&all)
		if !a.awaitRound(ctx, tick.C, len(known) < len(a.cfg.TrustedHosts)) {
			return
		}
	}
}

// awaitRound waits for the next round of ResolveTrustedHosts: the tick,
// or a refresh asked for, but never sooner than hostsEvery/10 after the
// last round; with retry (a name never resolved yet), hostsEvery/10
// after it. It reports false once ctx ended.
func (a *Gate) awaitRound(ctx context.Context, tick <-chan time.Time, retry bool) bool {
	minGap := time.NewTimer(a.hostsEvery / 10)
	defer minGap.Stop()
	if !retry {
		select {
		case <-ctx.Done():
			return false
		case <-tick:
			return true
		case <-a.refresh:
		}
	}
	select {
	case <-ctx.Done():
		return false
	case <-minGap.C:
		return true
	}
}

// AddrKey is what the limits of addr are counted under: an IPv4 address
// alone, an IPv6 address by its /64 (what one subscriber is given).
func AddrKey(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits)
	return p
}

// Refusal is why a connection is refused before its upgrade.
type Refusal struct {
	Err        error
	Status     int           // the HTTP answer
	Reason     string        // the label of the edge's refused metric
	RetryAfter time.Duration // when to try again
}

// Check refuses a connection from key that admit would refuse, without
// counting it, or one from an address serving a penalty.
func (a *Gate) Check(key netip.Prefix) *Refusal {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.addrs[key]; s != nil {
		if wait := s.penaltyUntil.Sub(a.now()); wait > 0 {
			return &Refusal{
				Err: protocol.Errorf(protocol.CodeRateLimited,
					"a connection from your address was closed for abuse; try again in %s", wait.Round(time.Second)),
				Status: http.StatusTooManyRequests, Reason: "abuse_penalty", RetryAfter: wait,
			}
		}
	}
	if err := a.refuseLocked(key); err != nil && !a.probationFreeLocked(key, err) {
		r := &Refusal{Err: err, Status: http.StatusTooManyRequests, Reason: string(protocol.CodeOf(err)), RetryAfter: 5 * time.Second}
		if protocol.CodeOf(err) == protocol.CodeEdgeFull {
			r.Status = http.StatusServiceUnavailable
		}
		return r
	}
	return nil
}

// Penalise refuses key new connections for a while: the edge closed one of
// its sockets for abuse.
func (a *Gate) Penalise(key netip.Prefix) {
	if a.cfg.PenaltyMax < 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s, now := a.stateLocked(key), a.now()
	if now.After(s.penaltyUntil.Add(a.cfg.PenaltyMax)) {
		s.penalty = 0 // none for long: start again
	}
	s.penalty = min(max(2*s.penalty, penaltyFirst), a.cfg.PenaltyMax)
	s.penaltyUntil = now.Add(s.penalty)
}

// Admit counts a new connection from key, or refuses it: the edge is full,
// or the address holds as many connections as it may.
func (a *Gate) Admit(key netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.refuseLocked(key); err != nil {
		return err
	}
	a.stateLocked(key).conns++
	a.sockets++
	return nil
}

func (a *Gate) refuseLocked(key netip.Prefix) error {
	if a.cfg.MaxSockets > 0 && a.sockets >= a.cfg.MaxSockets {
		return protocol.Errorf(protocol.CodeEdgeFull, "this server is full; try again in a moment")
	}
	if s := a.addrs[key]; s != nil && a.cfg.ConnsPerAddr > 0 && s.conns >= a.cfg.ConnsPerAddr {
		return protocol.Errorf(protocol.CodeTooManyConns, "too many connections from your address (at most %d)", a.cfg.ConnsPerAddr)
	}
	return nil
}

// probationPerAddr is how many connections an address at its cap may
// still open on probation: each may only resume a user, proving its
// secret, within ProbationFor, or it is closed.
const (
	probationPerAddr = 8
	// ProbationFor is how long a connection admitted on probation has
	// to resume a user.
	ProbationFor = 5 * time.Second
)

// probationFreeLocked reports whether a connection that err refuses may
// still be admitted on probation: the address is at its cap, not the edge,
// and has a probation place free.
func (a *Gate) probationFreeLocked(key netip.Prefix, err error) bool {
	s := a.addrs[key]
	return protocol.CodeOf(err) == protocol.CodeTooManyConns && s != nil && s.probation < probationPerAddr
}

// AdmitOnProbation counts a connection from an address at its cap on
// probation, or refuses it as Admit did. Such a connection may only resume
// a user (Promote, once its secret is proven), never join: the cap stops
// one address from holding more than its share of the edge, and a
// returning user behind the same address (a NAT, an IPv6 /64) as someone
// who holds all of its connections still gets back to its session.
func (a *Gate) AdmitOnProbation(key netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.refuseLocked(key); err != nil && !a.probationFreeLocked(key, err) {
		return err
	}
	a.stateLocked(key).probation++
	a.sockets++
	return nil
}

// Promote makes a connection admitted on probation a counted one: it
// resumed its user.
func (a *Gate) Promote(key netip.Prefix) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.addrs[key]; s != nil {
		s.probation--
		s.conns++
	}
}

// ReleaseProbation ends a connection admitted on probation and never
// promoted.
func (a *Gate) ReleaseProbation(key netip.Prefix) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.addrs[key]; s != nil {
		s.probation--
	}
	a.sockets--
}

// Release ends a connection admit counted.
func (a *Gate) Release(key netip.Prefix) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.addrs[key]; s != nil {
		s.conns--
	}
	a.sockets--
}

// AllowJoin takes a join from key, or refuses it with rate_limited.
func (a *Gate) AllowJoin(key netip.Prefix) error {
	s := a.state(key)
	if !s.joins.Allow() {
		return protocol.Errorf(protocol.CodeRateLimited, "too many joins from your address; try again in a few seconds")
	}
	if !a.joins.Allow() {
		return protocol.Errorf(protocol.CodeRateLimited, "this server is taking too many joins; try again in a few seconds")
	}
	return nil
}

// AllowResume refuses a resume from an address whose resumes failed too
// often lately; resumeFailed counts one that failed.
func (a *Gate) AllowResume(key netip.Prefix) error {
	s := a.state(key)
	if s.resumes.Tokens() < 1 {
		return protocol.Errorf(protocol.CodeRateLimited, "too many failed resumes from your address; try again in a few seconds")
	}
	return nil
}

// AllowListing takes a GET /api/users from key, or refuses it.
func (a *Gate) AllowListing(key netip.Prefix) error {
	s := a.state(key)
	if !s.lists.Allow() {
		return protocol.Errorf(protocol.CodeRateLimited, "too many requests for the user list from your address; at most %d a second", listingsPerSecond)
	}
	return nil
}

// ResumeFailed counts a failed resume from key.
func (a *Gate) ResumeFailed(key netip.Prefix) {
	s := a.state(key)
	s.resumes.Allow()
}

// state returns key's state, made if new.
func (a *Gate) state(key netip.Prefix) *addrState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stateLocked(key)
}

// stateLocked returns key's state, made if new. Once a minute it forgets
// the addresses with no connection whose limits have refilled, so the
// map holds about the addresses connected now.
func (a *Gate) stateLocked(key netip.Prefix) *addrState {
	now := a.now()
	if now.Sub(a.lastSweep) > time.Minute {
		a.lastSweep = now
		for k, s := range a.addrs {
			if s.conns == 0 && s.probation == 0 && s.joins.TokensAt(now) >= float64(s.joins.Burst()) && s.resumes.TokensAt(now) >= resumeFailuresBurst &&
				s.lists.TokensAt(now) >= listingsBurst && now.After(s.penaltyUntil.Add(a.cfg.PenaltyMax)) {
				delete(a.addrs, k)
			}
		}
	}
	s := a.addrs[key]
	if s == nil {
		s = &addrState{
			joins:   limiter(a.cfg.JoinRatePerAddr, a.cfg.JoinBurstPerAddr),
			resumes: rate.NewLimiter(resumeFailuresPerSecond, resumeFailuresBurst),
			lists:   rate.NewLimiter(listingsPerSecond, listingsBurst),
		}
		a.addrs[key] = s
	}
	return s
}
