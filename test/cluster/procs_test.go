package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/freeport"
	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// binaries builds the service binaries and nats-server (the version
// pkg/go.mod pins) into a fresh directory.
func binaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	build := func(wd string, args ...string) {
		cmd := exec.Command("go", append([]string{"build", "-o", dir + "/"}, args...)...)
		cmd.Dir = wd
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v\n%s", args, err, out)
		}
	}
	build(root, "./services/presence", "./services/invites", "./services/tokens", "./services/edge")
	build(filepath.Join(root, "pkg"), "github.com/nats-io/nats-server/v2")
	return dir
}

// freePort returns a loopback port for a process to listen on, for as long
// as the test runs (a process restarts on the same port).
func freePort(t *testing.T) int {
	t.Helper()
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// proc is one process of the system, restartable with the same settings.
type proc struct {
	name string
	path string
	args []string
	env  []string
	logs string // file its output is appended to
	ops  string // http://host:port of the process's operator endpoints

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	out, err := os.OpenFile(p.logs, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); out.Close(); close(exited) }()
	p.cmd, p.exited = cmd, exited
	return nil
}

func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// kill ends the process at once, as a crash would.
func (p *proc) kill() {
	p.signal(syscall.SIGCONT) // a stopped process must be able to die
	p.signal(syscall.SIGKILL)
	p.wait(time.Minute)
}

// stop asks the process to shut down (SIGTERM) and waits for it; after
// limit it is killed and stop reports that.
func (p *proc) stop(limit time.Duration) error {
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGTERM)
	if !p.wait(limit) {
		p.kill()
		return fmt.Errorf("%s did not stop within %s of SIGTERM", p.name, limit)
	}
	return nil
}

func (p *proc) wait(limit time.Duration) bool {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited == nil {
		return true
	}
	select {
	case <-exited:
		return true
	case <-time.After(limit):
		return false
	}
}

// tail returns the last lines of the process's output.
func (p *proc) tail(n int) string {
	f, err := os.Open(p.logs)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// natsNode is one nats-server of the cluster.
type natsNode struct {
	*proc
	port int
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// users are the NATS users of the cluster: one per BuddyTok role, with the
// role's permissions (package permissions), and admin, for the test's own
// connections. Every service process connects as its role.
var users = func() map[string]string {
	pw := map[string]string{"admin": protocol.NewSecret()}
	for _, r := range permissions.Roles {
		pw[string(r)] = protocol.NewSecret()
	}
	return pw
}()

// roleEnv is the environment that makes a process connect as role.
func roleEnv(role permissions.Role) []string {
	return []string{"NATS_USER=" + string(role), "NATS_PASSWORD=" + users[string(role)]}
}

// adminAuth is the test's own way in.
func adminAuth() nats.Option { return nats.UserInfo("admin", users["admin"]) }

// startNATS writes the configuration of a 3-node JetStream cluster and
// starts it. Stale connections (a paused process) are found within a few
// seconds, not the default four minutes, so that a paused replica stops
// receiving its queue group's requests soon: the setting an operator of
// BuddyTok should use too (docs/resilience.md). The nodes do not advertise
// their client URLs: a process reaches the cluster only through the URLs
// it was given, so one given proxies cannot reconnect around them.
func startNATS(t *testing.T, bin, dir string) []*natsNode {
	t.Helper()
	const n = 3
	ports, routes := make([]int, n), make([]int, n)
	for i := range n {
		ports[i], routes[i] = freePort(t), freePort(t)
	}
	var routeURLs []string
	for _, r := range routes {
		routeURLs = append(routeURLs, fmt.Sprintf("nats-route://127.0.0.1:%d", r))
	}
	quoted := map[permissions.Role]string{}
	for _, r := range permissions.Roles {
		quoted[r] = fmt.Sprintf("%q", users[string(r)])
	}
	authorization := permissions.Config(quoted, fmt.Sprintf("%q", users["admin"]))
	nodes := make([]*natsNode, n)
	for i := range n {
		conf := filepath.Join(dir, fmt.Sprintf("n%d.conf", i))
		body := fmt.Sprintf(`server_name: n%d
listen: 127.0.0.1:%d
ping_interval: "1s"
ping_max: 3
jetstream { store_dir: %q }
cluster {
  name: buddytok
  listen: 127.0.0.1:%d
  routes: [%s]
  no_advertise: true
}
%s`, i, ports[i], filepath.Join(dir, fmt.Sprintf("n%d-data", i)), routes[i], strings.Join(routeURLs, ", "), authorization)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		nodes[i] = &natsNode{proc: &proc{name: fmt.Sprintf("nats-n%d", i), path: filepath.Join(bin, "nats-server"),
			args: []string{"-c", conf}, logs: filepath.Join(dir, fmt.Sprintf("nats-n%d.log", i))}, port: ports[i]}
		if err := nodes[i].start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, node := range nodes {
		if err := node.awaitReady(60 * time.Second); err != nil {
			t.Fatalf("%v\n%s", err, node.tail(30))
		}
	}
	return nodes
}

// awaitReady waits until the node takes connections and JetStream answers
// through it (the cluster has a meta leader).
func (n *natsNode) awaitReady(limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		last = func() error {
			nc, err := nats.Connect(n.url(), nats.Timeout(time.Second), adminAuth())
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err = js.AccountInfo(actx)
			return err
		}()
		if last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %s: %w", n.name, limit, last)
}

// proxy forwards TCP connections to target. Cut, it partitions them the
// way a network failure does: silently. No connection is closed; bytes
// simply stop flowing both ways (they wait, unread, until the partition
// heals), and new connections are accepted but get no answer. Each side
// finds out only through its own keepalives. An edge that reaches NATS
// through proxies can so be cut off from NATS while its browsers still
// reach it.
//
// A proxy that drops, cut, closes its connections instead, as a network
// failure noticed at once does (a reset, a NAT forgetting them): the
// client reconnects as soon as the cut heals.
type proxy struct {
	ln     net.Listener
	target string
	drop   bool

	mu     sync.Mutex
	cut    bool
	healed chan struct{} // closed when a cut ends
	conns  map[net.Conn]struct{}
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, healed: make(chan struct{})}
	close(p.healed)
	t.Cleanup(p.close)
	go p.serve()
	return p
}

func (p *proxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			p.wait() // a connection made during a cut hangs until it heals
			out, err := net.DialTimeout("tcp", p.target, time.Second)
			if err != nil {
				_ = in.Close()
				return
			}
			p.mu.Lock()
			p.conns[in], p.conns[out] = struct{}{}, struct{}{}
			p.mu.Unlock()
			go p.pipe(in, out)
			go p.pipe(out, in)
		}()
	}
}

// pipe copies src to dst, pausing (reading nothing) while the proxy is cut.
func (p *proxy) pipe(dst, src net.Conn) {
	defer func() {
		_ = dst.Close()
		_ = src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		p.wait()
		_ = src.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := src.Read(buf)
		if n > 0 {
			p.wait() // read just before a cut: deliver it after
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
	}
}

func (p *proxy) wait() {
	p.mu.Lock()
	healed := p.healed
	p.mu.Unlock()
	<-healed
}

func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cut == p.cut {
		return
	}
	p.cut = cut
	if cut {
		p.healed = make(chan struct{})
		if p.drop {
			for c := range p.conns {
				_ = c.Close()
			}
		}
	} else {
		close(p.healed)
	}
}

func (p *proxy) close() {
	_ = p.ln.Close()
	p.setCut(false)
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}
