package config_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/config"
)

func TestEnv(t *testing.T) {
	t.Parallel()
	env := config.FromMap(map[string]string{
		"PORT": "9090", "BAD_PORT": "http", "BIG_PORT": "70000",
		"GRACE": "2s", "BAD_GRACE": "soon", "ORIGINS": " https://a.example , ,https://b.example ",
		"BLANK": "   ",
	})
	if got := env.Int("PORT", 8080, 0, 65535); got != 9090 {
		t.Errorf("PORT = %d", got)
	}
	if got := env.Int("UNSET", 8080, 0, 65535); got != 8080 {
		t.Errorf("default = %d", got)
	}
	if got := env.Duration("GRACE", time.Second, 0, time.Hour); got != 2*time.Second {
		t.Errorf("GRACE = %v", got)
	}
	if got := env.String("BLANK", "dflt"); got != "dflt" {
		t.Errorf("blank value = %q, want the default", got)
	}
	if got := env.List("ORIGINS"); len(got) != 2 || got[0] != "https://a.example" || got[1] != "https://b.example" {
		t.Errorf("ORIGINS = %q", got)
	}
	if err := env.Err(); err != nil {
		t.Fatalf("no problems yet, got %v", err)
	}
	env.Int("BAD_PORT", 8080, 0, 65535)
	env.Int("BIG_PORT", 8080, 0, 65535)
	env.Duration("BAD_GRACE", time.Second, 0, time.Hour)
	err := env.Err()
	for _, want := range []string{"BAD_PORT", "BIG_PORT", "BAD_GRACE"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}

// The configuration a process logs at start shows every setting it read,
// marks defaults, and never shows a secret or a password in a URL.
func TestEffectiveConfiguration(t *testing.T) {
	t.Parallel()
	env := config.FromMap(map[string]string{
		"PORT": "9090", "OPENTOK_SECRET": "s3cr3t-value",
		"NATS_URL": "nats://app:hunter2@n1:4222,nats://n2:4222",
	})
	env.Int("PORT", 8080, 0, 65535)
	env.Duration("GRACE_PERIOD", 5*time.Second, 0, time.Hour)
	env.Secret("OPENTOK_SECRET")
	env.Secret("OTHER_SECRET")
	env.String("NATS_URL", "")
	env.String("OPENTOK_API_URL", "")
	env.Int("PORT", 1, 0, 65535) // read twice, listed once
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("effective configuration", env.Effective())
	var line struct {
		Config map[string]string `json:"config"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ key, want string }{
		{"PORT", "9090"},
		{"GRACE_PERIOD", "5s (default)"},
		{"OPENTOK_SECRET", "(set, not shown)"},
		{"OTHER_SECRET", "(not set)"},
		{"NATS_URL", "nats://app:xxxxx@n1:4222,nats://n2:4222"},
		{"OPENTOK_API_URL", "(not set)"},
	}
	for _, tt := range tests {
		if got := line.Config[tt.key]; got != tt.want {
			t.Errorf("%s = %q, want %q", tt.key, got, tt.want)
		}
	}
	if len(line.Config) != len(tests) {
		t.Errorf("config has %d settings, want %d: %v", len(line.Config), len(tests), line.Config)
	}
	for _, secret := range []string{"s3cr3t", "hunter2"} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("the log line shows %q: %s", secret, buf.String())
		}
	}
}

// A secret may come from a file named by KEY_FILE (a mounted Docker or
// Kubernetes secret), never from both places, and never empty.
func TestSecretFromFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pw, blank := file("pw", "s3cr3t\n"), file("blank", " \n")
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    string
		wantErr string
	}{
		{"from the variable", map[string]string{"NATS_PASSWORD": "v"}, "v", ""},
		{"from a file", map[string]string{"NATS_PASSWORD_FILE": pw}, "s3cr3t", ""},
		{"unset", map[string]string{}, "", ""},
		{"both", map[string]string{"NATS_PASSWORD": "v", "NATS_PASSWORD_FILE": pw}, "", "both set"},
		{"a missing file", map[string]string{"NATS_PASSWORD_FILE": filepath.Join(dir, "none")}, "", "NATS_PASSWORD_FILE"},
		{"an empty file", map[string]string{"NATS_PASSWORD_FILE": blank}, "", "is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := config.FromMap(tc.env)
			got := env.Secret("NATS_PASSWORD")
			err := env.Err()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("%q, %v; want %q", got, err, tc.want)
			}
			var buf bytes.Buffer
			slog.New(slog.NewTextHandler(&buf, nil)).Info("x", env.Effective())
			if strings.Contains(buf.String(), "s3cr3t") {
				t.Errorf("the effective configuration shows the secret: %s", buf.String())
			}
		})
	}
}
