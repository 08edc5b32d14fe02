package cluster_test

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// Timings of the system under test: short leases and a grace period that
// outlasts every fault the test injects, so that no user whose page keeps
// trying may be lost.
const (
	leaseTTL = 2 * time.Second
	grace    = 20 * time.Second
)

// system is BuddyTok as processes: a NATS cluster, service replicas, edges.
type system struct {
	t        *testing.T
	dir      string
	nats     []*natsNode
	services map[string][]*proc
	edges    []*edgeProc
	// cut partitions the last edge from NATS (true) or heals it.
	cut func(bool)
	// cutPresence, with systemConfig.cutPresence, drops every presence
	// replica's NATS connections and holds their new ones (true) until it
	// heals them (false).
	cutPresence func(bool)
}

// systemConfig shapes a system beyond its size.
type systemConfig struct {
	replicas, edges int
	grace           time.Duration // the users' grace period; 0: grace
	// cutPresence routes the presence replicas to NATS through proxies
	// that sys.cutPresence can cut.
	cutPresence bool
}

type edgeProc struct {
	*proc
	port int
}

func (e *edgeProc) url() string { return fmt.Sprintf("http://127.0.0.1:%d", e.port) }

var serviceNames = []string{protocol.ServiceTokens, protocol.ServiceInvites, protocol.ServicePresence}

func startSystem(t *testing.T, replicas, edges int) *system {
	t.Helper()
	return startSystemWith(t, systemConfig{replicas: replicas, edges: edges})
}

// proxiedNATS returns the cluster's URLs through new proxies (dropping
// their connections when cut, if drop) and the function that cuts or heals
// them all.
func (sys *system) proxiedNATS(t *testing.T, drop bool) (string, func(bool)) {
	var urls []string
	var ps []*proxy
	for _, n := range sys.nats {
		p := newProxy(t, fmt.Sprintf("127.0.0.1:%d", n.port))
		p.drop = drop
		ps = append(ps, p)
		urls = append(urls, p.url())
	}
	return strings.Join(urls, ","), func(cut bool) {
		for _, p := range ps {
			p.setCut(cut)
		}
	}
}

func startSystemWith(t *testing.T, cfg systemConfig) *system {
	t.Helper()
	replicas, edges := cfg.replicas, cfg.edges
	bin := binaries(t)
	dir := t.TempDir()
	sys := &system{t: t, dir: dir, services: map[string][]*proc{}}
	t.Cleanup(sys.shutdown)
	sys.nats = startNATS(t, bin, dir)
	var urls []string
	for _, n := range sys.nats {
		urls = append(urls, n.url())
	}
	common := []string{
		"NATS_URL=" + strings.Join(urls, ","), "KV_REPLICAS=3",
		"EDGE_LEASE_TTL=" + leaseTTL.String(), "GRACE_PERIOD=" + cmp.Or(cfg.grace, grace).String(), "SWEEP_INTERVAL=200ms",
		"LOG_FORMAT=json", "LOG_LEVEL=info",
	}
	for _, name := range serviceNames {
		env := common
		if name == protocol.ServicePresence && cfg.cutPresence {
			var urls string
			urls, sys.cutPresence = sys.proxiedNATS(t, true)
			env = append(append([]string(nil), common...), "NATS_URL="+urls)
		}
		for i := range replicas {
			ops := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			p := &proc{name: fmt.Sprintf("%s-%d", name, i), path: filepath.Join(bin, name),
				env: append(append(append([]string(nil), env...), roleEnv(permissions.Role(name))...), "OPS_ADDR="+ops), ops: "http://" + ops,
				logs: filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, i))}
			if err := p.start(); err != nil {
				t.Fatal(err)
			}
			sys.services[name] = append(sys.services[name], p)
		}
	}
	for i := range edges {
		env := common
		if i == edges-1 {
			// The last edge reaches NATS through proxies the test can cut.
			var urls string
			urls, sys.cut = sys.proxiedNATS(t, false)
			env = append(append([]string(nil), common...), "NATS_URL="+urls)
		}
		port, ops := freePort(t), fmt.Sprintf("127.0.0.1:%d", freePort(t))
		e := &edgeProc{proc: &proc{name: fmt.Sprintf("edge-%d", i), path: filepath.Join(bin, "edge"), ops: "http://" + ops,
			env: append(append(append([]string(nil), env...), roleEnv(permissions.Edge)...), "HOST=127.0.0.1", fmt.Sprintf("PORT=%d", port), "OPS_ADDR="+ops,
				"RECONCILE_INTERVAL=500ms", "WS_PING_INTERVAL=2s", "SHUTDOWN_TIMEOUT=5s",
				// Every simulated user connects from loopback: one address.
				"WS_MAX_CONNS_PER_ADDR=0", "WS_JOIN_RATE_PER_ADDR=0"),
			logs: filepath.Join(dir, fmt.Sprintf("edge-%d.log", i))}, port: port}
		if err := e.start(); err != nil {
			t.Fatal(err)
		}
		sys.edges = append(sys.edges, e)
	}
	sys.awaitHealthy(replicas, 2*time.Minute)
	return sys
}

// awaitHealthy waits until every edge is ready and every service answers
// with all its replicas.
func (sys *system) awaitHealthy(replicas int, limit time.Duration) {
	sys.t.Helper()
	deadline := time.Now().Add(limit)
	for _, e := range sys.edges {
		for !e.ready() {
			if time.Now().After(deadline) {
				sys.t.Fatalf("%s not ready after %s:\n%s", e.name, limit, e.tail(20))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	nc := sys.connect()
	defer nc.Close()
	for _, name := range serviceNames {
		for {
			n := pingService(nc, name)
			if n >= replicas {
				break
			}
			if time.Now().After(deadline) {
				sys.t.Fatalf("%s: %d of %d replicas answer after %s:\n%s", name, n, replicas, limit, sys.services[name][0].tail(20))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (e *edgeProc) ready() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(e.url() + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// pingService counts the replicas of a micro service that answer a ping.
func pingService(nc *nats.Conn, name string) int {
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return 0
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.PING."+name, inbox, nil); err != nil {
		return 0
	}
	n := 0
	for {
		if _, err := sub.NextMsg(300 * time.Millisecond); err != nil {
			return n
		}
		n++
	}
}

// connect opens a connection to the cluster for the test's own checks.
func (sys *system) connect() *nats.Conn {
	sys.t.Helper()
	var urls []string
	for _, n := range sys.nats {
		urls = append(urls, n.url())
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), adminAuth())
	if err != nil {
		sys.t.Fatal(err)
	}
	return nc
}

func (sys *system) store(ctx context.Context, nc *nats.Conn) *state.Store {
	sys.t.Helper()
	st, err := state.Open(ctx, nc, state.Options{})
	if err != nil {
		sys.t.Fatal(err)
	}
	return st
}

func (sys *system) edgeURLs() []string {
	var out []string
	for _, e := range sys.edges {
		out = append(out, e.url())
	}
	return out
}

// shutdown stops every process: edges, services, then NATS. On failure it
// prints the end of each process's log.
func (sys *system) shutdown() {
	var all []*proc
	for _, e := range sys.edges {
		all = append(all, e.proc)
	}
	for _, name := range serviceNames {
		all = append(all, sys.services[name]...)
	}
	for _, p := range all {
		if err := p.stop(15 * time.Second); err != nil {
			sys.t.Error(err)
		}
	}
	for _, n := range sys.nats {
		n.kill()
	}
	if sys.t.Failed() {
		if keep := os.Getenv("BUDDYTOK_CLUSTER_LOGS"); keep != "" {
			_ = os.CopyFS(keep, os.DirFS(sys.dir))
			sys.t.Logf("logs copied to %s", keep)
		}
		for _, n := range sys.nats {
			all = append(all, n.proc)
		}
		for _, p := range all {
			sys.t.Logf("---- %s (last lines)\n%s", p.name, p.tail(15))
		}
	}
}
