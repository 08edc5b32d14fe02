package compose

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// root is the repository, where docker-compose.yml lives.
var root = func() string {
	r, err := filepath.Abs("../..")
	if err != nil {
		panic(err)
	}
	return r
}()

const (
	composeFile  = "docker-compose.yml"
	overrideFile = "deploy/compose.test.yaml"
)

// services are BuddyTok's own services in the compose file; each runs its
// binary /usr/local/bin/NAME and is checked with `NAME probe URL`.
var services = []string{"presence", "invites", "tokens", "edge"}

func load(t *testing.T, env []string, files ...string) *types.Project {
	t.Helper()
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = filepath.Join(root, f)
	}
	opts, err := cli.NewProjectOptions(paths, cli.WithWorkingDirectory(root), cli.WithName("buddytok"),
		cli.WithEnv(env), cli.WithDiscardEnvFile)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load %v: %v", files, err)
	}
	return p
}

// The compose file is what an operator runs: every part the deployment
// relies on is there and consistent.
func TestComposeFile(t *testing.T) {
	t.Parallel()
	p := load(t, []string{"OPENTOK_KEY=12345", "BUDDYTOK_PORT=18080"}, composeFile)
	want := append([]string{"nats-users", "nats", "lb"}, services...)
	if got := p.ServiceNames(); !sameSet(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}
	for name, s := range p.Services {
		if name == "nats-users" {
			continue // runs once at each start (below)
		}
		if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) < 2 {
			t.Errorf("%s: no health check", name)
		}
		if s.Restart == "" || s.Restart == "no" {
			t.Errorf("%s: restart %q: a crashed container would stay down", name, s.Restart)
		}
		if name != "lb" && len(s.Ports) > 0 {
			t.Errorf("%s publishes %v: only the load balancer is reached from outside", name, s.Ports)
		}
	}
	for _, name := range services {
		s := p.Services[name]
		if got := env(s, "NATS_URL"); got != "nats://nats:4222" {
			t.Errorf("%s: NATS_URL %q", name, got)
		}
		if d, ok := s.DependsOn["nats"]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s: depends on nats %+v, want condition service_healthy", name, d)
		}
		// Its own NATS user, with the password only it mounts.
		if env(s, "NATS_USER") != name || env(s, "NATS_PASSWORD_FILE") != "/run/secrets/nats/password" {
			t.Errorf("%s: NATS_USER %q, NATS_PASSWORD_FILE %q", name, env(s, "NATS_USER"), env(s, "NATS_PASSWORD_FILE"))
		}
		if got := volumesAt(s, "/run/secrets/nats"); !slices.Equal(got, []string{"nats-users-" + name}) {
			t.Errorf("%s: mounts %v at /run/secrets/nats, want its own nats-users-%s", name, got, name)
		}
		for other, o := range p.Services {
			if other != name && other != "nats-users" && slices.ContainsFunc(o.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Source == "nats-users-"+name }) {
				t.Errorf("%s mounts %s's NATS password", other, name)
			}
		}
		if test := s.HealthCheck.Test; !slices.Equal(test[:3], []string{"CMD", "/usr/local/bin/" + name, "probe"}) {
			t.Errorf("%s: health check %v, want its binary's probe (the image has no shell)", name, test)
		}
		if s.Build == nil || s.Build.Target != name {
			t.Errorf("%s: build %+v, want the Dockerfile's target %s", name, s.Build, name)
		}
		if probe := s.HealthCheck.Test[3]; env(s, "OPS_ADDR") == "" || !strings.HasSuffix(probe, strings.TrimPrefix(env(s, "OPS_ADDR"), ":")+"/readyz") {
			t.Errorf("%s: probes %s, but OPS_ADDR is %q", name, probe, env(s, "OPS_ADDR"))
		}
	}
	edge := p.Services["edge"]
	if env(edge, "OPS_ADDR") == ":"+env(edge, "PORT") {
		t.Errorf("edge: its operator endpoints are on the users' port %s", env(edge, "PORT"))
	}
	if edge.StopGracePeriod == nil {
		t.Error("edge: no stop_grace_period: docker's 10 s would cut its drain short")
	}
	tokens := p.Services["tokens"]
	if env(tokens, "OPENTOK_KEY") != "12345" || env(tokens, "OPENTOK_SECRET") != "" {
		t.Errorf("tokens: OpenTok settings do not come from the environment / .env: key %q", env(tokens, "OPENTOK_KEY"))
	}

	lb := p.Services["lb"]
	if len(lb.Ports) != 1 || lb.Ports[0].Target != 80 || lb.Ports[0].Published != "18080" {
		t.Errorf("lb ports %+v, want BUDDYTOK_PORT to 80", lb.Ports)
	}
	if d, ok := lb.DependsOn["edge"]; !ok || d.Condition != types.ServiceConditionHealthy {
		t.Errorf("lb: depends on edge %+v, want condition service_healthy", d)
	}
	caddyfile := mounted(t, lb, "/etc/caddy/Caddyfile")
	if !slices.Contains(lb.Entrypoint, "/etc/caddy/Caddyfile") {
		t.Errorf("lb entrypoint %v does not read the mounted Caddyfile", lb.Entrypoint)
	}
	for _, want := range []string{"name edge", "port " + env(edge, "PORT"), "reverse_proxy"} {
		if !strings.Contains(caddyfile, want) {
			t.Errorf("Caddyfile does not balance the edges: no %q", want)
		}
	}

	nats := p.Services["nats"]
	conf := mounted(t, nats, "/etc/nats/buddytok.conf")
	if !slices.Contains(nats.Entrypoint, "/etc/nats/buddytok.conf") {
		t.Errorf("nats entrypoint %v does not read the mounted configuration", nats.Entrypoint)
	}
	for _, want := range []string{"sync_interval: always", "store_dir: /data", "http_port: 8222"} {
		if !strings.Contains(conf, want) {
			t.Errorf("NATS configuration lacks %q", want)
		}
	}
	if !slices.ContainsFunc(nats.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == "/data" && v.Type == types.VolumeTypeVolume }) {
		t.Errorf("nats: JetStream's /data is not on a named volume: %+v", nats.Volumes)
	}

	// NATS accepts the per-role users only, which nats-users makes before
	// it starts, into the volumes NATS and each service mount.
	if !strings.Contains(conf, `include "auth/users.conf"`) {
		t.Error(`the NATS configuration does not include "auth/users.conf": NATS would run without users`)
	}
	if got := volumesAt(nats, "/etc/nats/auth"); !slices.Equal(got, []string{"nats-users-server"}) {
		t.Errorf("nats mounts %v at /etc/nats/auth, want nats-users-server", got)
	}
	users := p.Services["nats-users"]
	if d, ok := nats.DependsOn["nats-users"]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
		t.Errorf("nats: depends on nats-users %+v, want condition service_completed_successfully", d)
	}
	if users.Restart != "no" || users.User != "0:0" || users.NetworkMode != "none" {
		t.Errorf("nats-users: restart %q, user %q, network %q; want a one-shot as root (to give the files to 65532), off the network", users.Restart, users.User, users.NetworkMode)
	}
	if !slices.Equal(users.Entrypoint, []string{"/usr/local/bin/presence", "nats-users", "/nats-users", "65532"}) {
		t.Errorf("nats-users entrypoint %v", users.Entrypoint)
	}
	for _, dir := range append([]string{"nats"}, services...) {
		want := "nats-users-" + dir
		if dir == "nats" {
			want = "nats-users-server"
		}
		if got := volumesAt(users, "/nats-users/"+dir); !slices.Equal(got, []string{want}) {
			t.Errorf("nats-users: mounts %v at /nats-users/%s, want %s", got, dir, want)
		}
	}
}

// volumesAt lists the named volumes s mounts at target.
func volumesAt(s types.ServiceConfig, target string) []string {
	var names []string
	for _, v := range s.Volumes {
		if v.Target == target && v.Type == types.VolumeTypeVolume {
			names = append(names, v.Source)
		}
	}
	return names
}

// The test override swaps the images and nothing else: what the compose
// test proves holds for the file operators run.
func TestOverrideChangesOnlyImages(t *testing.T) {
	t.Parallel()
	env := []string{"BUDDYTOK_TEST_TAG=t1"}
	base := load(t, env, composeFile)
	both := load(t, env, composeFile, overrideFile)
	for name, s := range base.Services {
		o, ok := both.Services[name]
		if !ok {
			t.Fatalf("the override drops %s", name)
		}
		// A service of one of BuddyTok's images gets the test's build of
		// that image; nats and lb get their own.
		want := name
		if repo, ok := strings.CutPrefix(s.Image, "buddytok/"); ok {
			want, _, _ = strings.Cut(repo, ":")
		}
		if o.Image != "buddytok-test/"+want+":t1" {
			t.Errorf("%s: override image %q, want buddytok-test/%s:t1", name, o.Image, want)
		}
		o.Image = s.Image
		a, _ := json.Marshal(s)
		b, _ := json.Marshal(o)
		if string(a) != string(b) {
			t.Errorf("%s: the override changes more than the image:\n file:     %s\n override: %s", name, a, b)
		}
	}
	if len(both.Services) != len(base.Services) {
		t.Errorf("the override adds services: %v", both.ServiceNames())
	}
}

func env(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}

// mounted returns the file the service mounts at target, read from the
// repository.
func mounted(t *testing.T, s types.ServiceConfig, target string) string {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target == target && v.Type == types.VolumeTypeBind {
			data, err := os.ReadFile(v.Source)
			if err != nil {
				t.Fatalf("%s mounts %s: %v", s.Name, target, err)
			}
			return string(data)
		}
	}
	t.Fatalf("%s mounts nothing at %s", s.Name, target)
	return ""
}

func sameSet(a, b []string) bool {
	a, b = slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b))
	return slices.Equal(a, b)
}
