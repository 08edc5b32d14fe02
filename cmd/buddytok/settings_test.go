package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/buddytok/buddytok/pkg/config"
)

// The settings table of docs/operations.md lies between these lines, made
// from the declarations of every setting this binary reads.
const (
	settingsBegin = "<!-- settings: made from their declarations (config.Declared); BUDDYTOK_UPDATE_DOCS=1 go test -run TestSettingsTable ./cmd/buddytok rewrites it -->"
	settingsEnd   = "<!-- end of settings -->"
)

// settingsTable is the Markdown table of every declared setting.
func settingsTable() string {
	var b strings.Builder
	b.WriteString("| variable | default | used by | meaning |\n|---|---|---|---|\n")
	for _, s := range config.Declared() {
		def := "—"
		switch {
		case s.DefaultIsProse:
			def = s.Default
		case s.Default != "":
			def = "`" + s.Default + "`"
		}
		meaning := s.Meaning
		if s.Secret {
			meaning += "; a secret: never logged, and may be given in a file named by `" + s.Name + "_FILE` instead"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", s.Name, def, s.Users, meaning)
	}
	return b.String()
}

// docs/operations.md's table of settings is the one the declarations make:
// a setting added, removed or changed in the code changes the page.
func TestSettingsTable(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "operations.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before, rest, ok := strings.Cut(string(doc), settingsBegin+"\n")
	table, after, ok2 := strings.Cut(rest, settingsEnd)
	if !ok || !ok2 {
		t.Fatalf("%s has no settings table between %q and %q", path, settingsBegin, settingsEnd)
	}
	want := settingsTable()
	if table == want {
		return
	}
	if os.Getenv("BUDDYTOK_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(path, []byte(before+settingsBegin+"\n"+want+settingsEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s's settings table differs from the declarations; run BUDDYTOK_UPDATE_DOCS=1 go test -run TestSettingsTable ./cmd/buddytok\ngot:\n%s\nwant:\n%s", path, table, want)
}

// declared reports whether name is a setting some process reads: a
// declared one, or NAME_FILE for a declared secret NAME.
func declared(name string) bool {
	if _, ok := config.Lookup(name); ok {
		return true
	}
	if strings.HasSuffix(name, "_") { // a family: NATS_TLS_*
		return slices.ContainsFunc(config.Declared(), func(s config.Setting) bool { return strings.HasPrefix(s.Name, name) })
	}
	s, ok := config.Lookup(strings.TrimSuffix(name, "_FILE"))
	return ok && s.Secret && strings.HasSuffix(name, "_FILE")
}

// given reports whether env gives the setting s, or its file.
func given(env map[string]bool, s config.Setting) bool {
	return env[s.Name] || s.Secret && env[s.Name+"_FILE"]
}

// The pages that tell operators about settings name none that does not
// exist.
func TestDocsNameOnlyDeclaredSettings(t *testing.T) {
	t.Parallel()
	setting := regexp.MustCompile("`([A-Z][A-Z0-9]*_[A-Z0-9_]+)")
	for _, path := range []string{"README.md", "docs/operations.md", "docs/security.md", "docs/opentok.md", "docs/scaling.md", "docs/resilience.md"} {
		doc, err := os.ReadFile(filepath.Join("..", "..", path))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range setting.FindAllStringSubmatch(string(doc), -1) {
			if !declared(m[1]) && !notSettings[m[1]] {
				t.Errorf("%s names the setting %s, which no process reads", path, m[1])
			}
		}
	}
}

// notSettings are upper-case names the pages mention that are not
// BuddyTok settings.
var notSettings = map[string]bool{
	"XDG_STATE_HOME": true, "XDG_CONFIG_HOME": true, "XDG_DATA_HOME": true, "CHROME_PATH": true,
	"BUDDYTOK_TEST_LOGDIR": true, "BUDDYTOK_CLUSTER_LONG": true, "BUDDYTOK_CLUSTER_LOGS": true,
	"BUDDYTOK_SCREENSHOTS": true, "BUDDYTOK_FUZZTIME": true, "BUDDYTOK_UPDATE_DOCS": true,
	"GOMAXPROCS": true, "GOMEMLIMIT": true, "GOGC": true, "GOWORK": true,
}

// The services docker-compose.yml runs, and the settings each is given.
func composeEnvironments(t *testing.T) map[string]map[string]bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	service := regexp.MustCompile(`^  ([a-z][a-z0-9-]*):\s*$`)
	variable := regexp.MustCompile(`^      ([A-Z][A-Z0-9_]*):`)
	envs := map[string]map[string]bool{}
	current, inEnv := "", false
	for _, line := range strings.Split(string(data), "\n") {
		if m := service.FindStringSubmatch(line); m != nil {
			current, inEnv = m[1], false
			continue
		}
		switch {
		case strings.TrimSpace(line) == "environment:":
			inEnv = true
			if envs[current] == nil {
				envs[current] = map[string]bool{}
			}
		case inEnv && variable.MatchString(line):
			envs[current][variable.FindStringSubmatch(line)[1]] = true
		case !strings.HasPrefix(line, "      ") && strings.TrimSpace(line) != "" && !strings.HasPrefix(strings.TrimSpace(line), "#"):
			inEnv = false
		}
	}
	return envs
}

// The Deployments of the Kubernetes base, and the settings each is given
// (its env and the shared ConfigMap).
func kubernetesEnvironments(t *testing.T) map[string]map[string]bool {
	t.Helper()
	base := filepath.Join("..", "..", "deploy", "kubernetes", "base")
	configMap, err := os.ReadFile(filepath.Join(base, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	shared := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  ([A-Z][A-Z0-9_]*):`).FindAllStringSubmatch(string(configMap), -1) {
		shared[m[1]] = true
	}
	envs := map[string]map[string]bool{}
	for _, role := range []string{"presence", "invites", "tokens", "edge"} {
		data, err := os.ReadFile(filepath.Join(base, role+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]bool{}
		for name := range shared {
			env[name] = true
		}
		for _, m := range regexp.MustCompile(`(?m)^\s+- name: ([A-Z][A-Z0-9_]*)\s*$`).FindAllStringSubmatch(string(data), -1) {
			env[m[1]] = true
		}
		envs[role] = env
	}
	return envs
}

// docker-compose.yml and the Kubernetes manifests give BuddyTok's services
// only settings that exist, and every one a deployment needs.
func TestDeploymentsGiveDeclaredSettings(t *testing.T) {
	t.Parallel()
	roles := []string{"presence", "invites", "tokens", "edge"}
	for name, envs := range map[string]map[string]map[string]bool{
		"docker-compose.yml":      composeEnvironments(t),
		"deploy/kubernetes/base/": kubernetesEnvironments(t),
	} {
		for _, role := range roles {
			env, ok := envs[role]
			if !ok {
				t.Errorf("%s runs no %s", name, role)
				continue
			}
			for v := range env {
				if !declared(v) {
					t.Errorf("%s gives %s the setting %s, which no process reads", name, role, v)
				}
			}
			for _, s := range config.Declared() {
				if s.Deployed && !given(env, s) {
					t.Errorf("%s does not give %s the setting %s", name, role, s.Name)
				}
			}
		}
		for role := range envs {
			if !slices.Contains(roles, role) && role != "nats-users" && role != "lb" {
				t.Errorf("%s: a service %s this test does not know", name, role)
			}
		}
	}
}
