package compose

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/freeport"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// waitFor bounds each wait on the deployment (containers start, health
// checks pass, a killed replica's users resume).
const waitFor = 90 * time.Second

// TestComposeDeployment brings docker-compose.yml up with the real Docker
// Compose, two replicas of every service behind the load balancer's one
// port, plays a chat between users on different edges, kills one container
// of every service and shows that the chat and the lists survive.
func TestComposeDeployment(t *testing.T) {
	compose := composeCommand(t)
	tag := strconv.FormatInt(time.Now().UnixNano(), 36)
	buildImages(t, tag)

	port := freePort(t)
	d := &deployment{t: t, compose: compose, project: "buddytok-test-" + tag, env: append(cleanEnv(),
		"BUDDYTOK_TEST_TAG="+tag, "BUDDYTOK_PORT="+strconv.Itoa(port))}
	t.Cleanup(d.down)
	d.run("up", "-d", "--no-build", "--scale", "edge=2", "--scale", "presence=2", "--scale", "invites=2", "--scale", "tokens=2")
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d.waitHTTP(ctx, base+"/readyz")
	for _, s := range services {
		if n := len(d.containers(s)); n != 2 {
			t.Fatalf("%s: %d containers, want 2", s, n)
		}
	}

	// NATS takes its per-role users only: an edge started without its
	// password is refused.
	refused := d.command("run", "--rm", "--no-deps", "-T", "-e", "NATS_USER=", "-e", "NATS_PASSWORD_FILE=", "edge")
	var buf bytes.Buffer
	refused.Stdout, refused.Stderr = &buf, &buf
	if err := refused.Start(); err != nil {
		t.Fatal(err)
	}
	// An edge NATS let in would run on: stop waiting for it after a while.
	stopWaiting := time.AfterFunc(waitFor, func() { _ = refused.Process.Kill() })
	err := refused.Wait()
	stopWaiting.Stop()
	if out := buf.String(); err == nil || !strings.Contains(out, "Authorization Violation") {
		t.Fatalf("an edge without a NATS password: %v\n%s", err, out)
	}

	// Ann and Bob come in through the load balancer and land on
	// different edges.
	ann, annEdge := d.joinOnEdge(ctx, base, "Ann", "")
	bob, bobEdge := d.joinOnEdge(ctx, base, "Bob", annEdge)
	t.Logf("Ann is on edge %s, Bob on edge %s", short(annEdge), short(bobEdge))
	annID, annSecret, bobID := ann.View().Me.ID, ann.View().Secret, bob.View().Me.ID
	wait(ctx, t, bob, "Bob sees Ann", func(v client.View) bool { return v.Users[annID].State == protocol.StateAvailable })
	wait(ctx, t, ann, "Ann sees Bob", func(v client.View) bool { return v.Users[bobID].State == protocol.StateAvailable })
	inv, err := ann.Invite(ctx, bobID)
	if err != nil {
		t.Fatalf("Ann invites Bob: %v", err)
	}
	wait(ctx, t, bob, "Bob's invitation", func(v client.View) bool { _, ok := v.Incoming[inv.ID]; return ok })
	chat, err := bob.Accept(ctx, inv.ID)
	if err != nil {
		t.Fatalf("Bob accepts: %v", err)
	}
	wait(ctx, t, ann, "Ann in the chat", func(v client.View) bool { return v.Chat != nil && v.Chat.ID == chat.ID })

	// One container of every service dies at once, Ann's edge among them.
	victims := []string{annEdge}
	for _, s := range []string{"presence", "invites", "tokens"} {
		victims = append(victims, d.containers(s)[0])
	}
	d.docker(append([]string{"kill"}, victims...)...)
	t.Logf("killed %d containers: Ann's edge and one presence, invites and tokens", len(victims))

	// Ann's page resumes through the load balancer, on the other edge, in
	// her chat; Bob, whose edge lives, never left it.
	rctx, cancelResume := context.WithTimeout(ctx, waitFor)
	defer cancelResume()
	ann = resume(rctx, t, base, annID, annSecret)
	if v := ann.View(); v.Chat == nil || v.Chat.ID != chat.ID {
		t.Fatalf("Ann resumed without her chat: %+v", v.Chat)
	}
	wait(ctx, t, bob, "Bob sees Ann chatting", func(v client.View) bool {
		return v.Users[annID].State == protocol.StateChatting && v.Chat != nil && v.Chat.ID == chat.ID
	})
	if _, err := retryUnavailable(ctx, func() (protocol.Credentials, error) { return ann.Credentials(ctx, chat.ID) }); err != nil {
		t.Fatalf("Ann's credentials after the kills: %v", err)
	}
	if _, err := retryUnavailable(ctx, func() (struct{}, error) { return struct{}{}, bob.EndChat(ctx, chat.ID) }); err != nil {
		t.Fatalf("Bob ends the chat: %v", err)
	}
	for _, c := range []*client.Client{ann, bob} {
		wait(ctx, t, c, "both available again", func(v client.View) bool {
			return v.Chat == nil && v.Users[annID].State == protocol.StateAvailable && v.Users[bobID].State == protocol.StateAvailable
		})
	}
}

type deployment struct {
	t       *testing.T
	compose []string
	project string
	env     []string
}

func (d *deployment) command(args ...string) *exec.Cmd {
	full := append(append(append([]string{}, d.compose[1:]...), "-p", d.project, "-f", composeFile, "-f", overrideFile), args...)
	cmd := exec.Command(d.compose[0], full...)
	cmd.Dir, cmd.Env = root, d.env
	return cmd
}

func (d *deployment) run(args ...string) string {
	d.t.Helper()
	out, err := d.command(args...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("%s %s: %v\n%s", strings.Join(d.compose, " "), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// down removes the deployment, its volumes and images; on a failure it
// first shows what the containers logged.
func (d *deployment) down() {
	if d.t.Failed() {
		out, _ := d.command("logs", "--no-color", "--tail", "40").CombinedOutput()
		d.t.Logf("container logs:\n%s", out)
	}
	if out, err := d.command("down", "-v", "--remove-orphans", "--timeout", "5").CombinedOutput(); err != nil {
		d.t.Errorf("compose down: %v\n%s", err, out)
	}
}

// containers lists the running containers of a service.
func (d *deployment) containers(service string) []string {
	d.t.Helper()
	return strings.Fields(d.run("ps", "-q", service))
}

func (d *deployment) docker(args ...string) string {
	d.t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// waitHTTP waits until url answers 200.
func (d *deployment) waitHTTP(ctx context.Context, url string) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, waitFor)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			d.t.Fatalf("%s never answered 200 (last: %v)", url, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// sockets reads how many WebSockets each edge container holds, from its
// /metrics on the compose network (its operator port).
func (d *deployment) sockets(ctx context.Context) map[string]float64 {
	d.t.Helper()
	n := map[string]float64{}
	for _, id := range d.containers("edge") {
		ip := d.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", id)
		samples, err := metrics.Scrape(ctx, "http://"+net.JoinHostPort(ip, "9090"))
		if err != nil {
			d.t.Fatalf("edge %s metrics: %v", short(id), err)
		}
		n[id] = samples["buddytok_edge_sockets"]
	}
	return n
}

// awaitSockets waits until the edges count the sockets of want again.
func (d *deployment) awaitSockets(ctx context.Context, want map[string]float64) {
	d.t.Helper()
	for {
		got := d.sockets(ctx)
		same := true
		for id, n := range want {
			same = same && got[id] == n
		}
		if same {
			return
		}
		if ctx.Err() != nil {
			d.t.Fatalf("the edges still count a closed tab: %v, want %v", got, want)
		}
		time.Sleep(50 * time.Millisecond) // polling the edges' metrics
	}
}

// joinOnEdge opens tabs through the load balancer until one lands on an
// edge other than avoid, and joins there as name; it returns the client
// and its edge's container.
//
// The balancer picks an edge per connection (round robin over the edges it
// resolves, in the order DNS gives them each second): about one try in two
// lands on avoid, so it tries up to 30 times. A tab that landed on avoid is
// closed, and the next try starts once the edges no longer count it, so
// that a new socket on the same edge is never mistaken for none.
func (d *deployment) joinOnEdge(ctx context.Context, base, name, avoid string) (*client.Client, string) {
	d.t.Helper()
	before := d.sockets(ctx)
	for range 30 {
		c, err := client.Dial(ctx, base)
		if err != nil {
			d.t.Fatalf("%s dials the load balancer: %v", name, err)
		}
		// The edge counts the socket once its handler runs, a moment
		// after the handshake the dial returned from.
		var edge string
		for try := 0; edge == "" && try < 20; try++ {
			if try > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			for id, n := range d.sockets(ctx) {
				if n > before[id] {
					edge = id
				}
			}
		}
		if edge == "" || edge == avoid {
			_ = c.Close()
			d.awaitSockets(ctx, before)
			continue
		}
		if _, err := c.Join(ctx, name); err != nil {
			d.t.Fatalf("%s joins: %v", name, err)
		}
		d.t.Cleanup(func() { _ = c.Close() })
		return c, edge
	}
	d.t.Fatalf("%s never landed on an edge other than %s", name, short(avoid))
	return nil, ""
}

// resume reconnects a user through the load balancer until an edge takes
// the resume, as the page does after its socket dropped.
func resume(ctx context.Context, t *testing.T, base, userID, secret string) *client.Client {
	t.Helper()
	for {
		c, err := client.Dial(ctx, base)
		if err == nil {
			if _, err = c.Resume(ctx, userID, secret); err == nil {
				t.Cleanup(func() { _ = c.Close() })
				return c
			}
			_ = c.Close()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no resume through the load balancer: %v", err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// retryUnavailable repeats a request answered `unavailable` (a replica
// that died with the request), as a person would click again.
func retryUnavailable[T any](ctx context.Context, f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if protocol.CodeOf(err) != protocol.CodeUnavailable {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(time.Second):
		}
	}
}

func wait(ctx context.Context, t *testing.T, c *client.Client, what string, pred func(client.View) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, waitFor)
	defer cancel()
	if _, err := c.WaitView(ctx, pred); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// composeCommand is Docker Compose: the docker plugin, else the
// docker-compose program. Without either the test fails: it is part of the
// suite, never skipped.
func composeCommand(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatal("docker not found: the compose test needs a Docker engine with Compose (see README)")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("the Docker engine does not answer: %v\n%s", err, out)
	}
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if path, err := exec.LookPath("docker-compose"); err == nil {
		return []string{path}
	}
	t.Fatal("Docker Compose not found (neither `docker compose` nor docker-compose)")
	return nil
}

// buildImages builds every image the override names, FROM scratch: the
// services' static binaries, nats-server at the version pkg pins, Caddy at
// the version caddy/ pins, and for the last two a static busybox as the
// wget their health checks call (the official images have one).
func buildImages(t *testing.T, tag string) {
	t.Helper()
	bin := t.TempDir()
	gobuild := func(dir string, gowork bool, pkgs ...string) {
		cmd := exec.Command("go", append([]string{"build", "-trimpath", "-o", bin + "/"}, pkgs...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if !gowork {
			cmd.Env = append(cmd.Env, "GOWORK=off")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v\n%s", pkgs, err, out)
		}
	}
	gobuild(root, true, "./services/presence", "./services/invites", "./services/tokens", "./services/edge")
	gobuild(filepath.Join(root, "pkg"), true, "github.com/nats-io/nats-server/v2")
	gobuild(filepath.Join(root, "test/compose/caddy"), false, "github.com/caddyserver/caddy/v2/cmd/caddy")
	busybox := findBusybox(t)

	images := map[string][]string{
		"nats": {"COPY nats-server /usr/local/bin/nats-server", "COPY busybox /bin/wget"},
		"lb":   {"COPY caddy /usr/bin/caddy", "COPY busybox /bin/wget"},
	}
	for _, s := range services {
		images[s] = []string{"COPY " + s + " /usr/local/bin/" + s, "USER 65532:65532", `ENTRYPOINT ["/usr/local/bin/` + s + `"]`}
	}
	for name, lines := range images {
		dir := t.TempDir()
		for _, f := range []string{"nats-server", "caddy", "presence", "invites", "tokens", "edge"} {
			if err := os.Link(filepath.Join(bin, f), filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		data, err := os.ReadFile(busybox)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "busybox"), data, 0o755); err != nil {
			t.Fatal(err)
		}
		dockerfile := "FROM scratch\n" + strings.Join(lines, "\n") + "\n"
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
			t.Fatal(err)
		}
		image := "buddytok-test/" + name + ":" + tag
		if out, err := exec.Command("docker", "build", "-q", "-t", image, dir).CombinedOutput(); err != nil {
			t.Fatalf("docker build %s: %v\n%s", image, err, out)
		}
		t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", image).Run() })
	}
}

// findBusybox finds a statically linked busybox (Debian's busybox-static,
// which scripts/test installs).
func findBusybox(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if data, err := os.ReadFile(p); err == nil && !bytes.Contains(data[:min(len(data), 4096)], []byte("ld-linux")) {
			return p
		}
	}
	t.Fatal("no static busybox: install Debian's busybox-static (scripts/test does); the FROM-scratch NATS and Caddy images need its wget for their health checks")
	return ""
}

// cleanEnv is this process's environment without settings that would
// leak into the deployment (the compose file reads OpenTok credentials
// and the port from the environment).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OPENTOK_") && !strings.HasPrefix(kv, "BUDDYTOK_") && !strings.HasPrefix(kv, "COMPOSE_") {
			env = append(env, kv)
		}
	}
	return env
}

// freePort returns a loopback port for the load balancer to publish.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func short(id string) string { return id[:min(len(id), 12)] }
