package servicemain

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestProbe(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			_, _ = w.Write([]byte("ok"))
			return
		}
		http.Error(w, "nats: not connected", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	tests := []struct {
		name, url, want string
		code            int
	}{
		{"ready", srv.URL + "/readyz", "", 0},
		{"not ready", srv.URL + "/healthz", "503 Service Unavailable: nats: not connected", 1},
		{"nothing listening", closed.URL + "/readyz", "connection refused", 1},
		{"not a URL", "http://[::1", "probe:", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out strings.Builder
			if code := probe(context.Background(), tc.url, &out); code != tc.code || !strings.Contains(out.String(), tc.want) {
				t.Errorf("probe(%s) = %d, %q; want %d and %q", tc.url, code, out.String(), tc.code, tc.want)
			}
		})
	}
}
