package config_test

import (
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
