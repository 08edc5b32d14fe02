package tokens

import (
	"strings"
	"testing"

	"github.com/buddytok/buddytok/pkg/config"
	"github.com/buddytok/buddytok/pkg/protocol"
)

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	const secret = "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		name    string
		env     map[string]string
		mode    string // "" means the configuration must be refused
		problem string
	}{
		{"no credentials: WebRTC", map[string]string{}, protocol.ModeWebRTC, ""},
		{"credentials: OpenTok", map[string]string{"OPENTOK_KEY": "123", "OPENTOK_SECRET": secret}, protocol.ModeOpenTok, ""},
		{"JWT tokens", map[string]string{"OPENTOK_KEY": "123", "OPENTOK_SECRET": secret, "OPENTOK_TOKEN_TYPE": "JWT"}, protocol.ModeOpenTok, ""},
		{"key without secret", map[string]string{"OPENTOK_KEY": "123"}, "", "must both be set"},
		{"secret without key", map[string]string{"OPENTOK_SECRET": secret}, "", "must both be set"},
		{"malformed secret", map[string]string{"OPENTOK_KEY": "123", "OPENTOK_SECRET": "hunter2"}, "", "40 hexadecimal"},
		{"unparseable API URL", map[string]string{"OPENTOK_KEY": "123", "OPENTOK_SECRET": secret, "OPENTOK_API_URL": "http://[::1"}, "", "API URL"},
		{"unknown token type", map[string]string{"OPENTOK_KEY": "123", "OPENTOK_SECRET": secret, "OPENTOK_TOKEN_TYPE": "t9"}, "", "t1 or jwt"},
		{"URL without credentials", map[string]string{"OPENTOK_API_URL": "https://example.com"}, "", "OPENTOK_KEY"},
		{"WebRTC with a TURN server", map[string]string{"ICE_SERVERS": `[{"urls":"turn:t.example.org","username":"u","credential":"p"}]`}, protocol.ModeWebRTC, ""},
		{"a malformed ICE_SERVERS", map[string]string{"ICE_SERVERS": `[{"urls":"http://t.example.org"}]`}, "", "scheme"},
		{"ICE_SERVERS with OpenTok", map[string]string{"OPENTOK_KEY": "123", "OPENTOK_SECRET": secret, "ICE_SERVERS": `[{"urls":"stun:s.example.org"}]`}, "", "OpenTok brings its own"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := config.FromMap(tc.env)
			cfg := ConfigFromEnv(env)
			err := env.Err()
			if tc.mode == "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("got %v, want an error about %q", err, tc.problem)
				}
				if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), secret) {
					t.Fatalf("error reveals the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			mode := protocol.ModeWebRTC
			if cfg.Provider != nil {
				mode = cfg.Provider.Mode()
			}
			if mode != tc.mode {
				t.Fatalf("mode %s, want %s", mode, tc.mode)
			}
		})
	}
}
