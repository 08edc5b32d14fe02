package system_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/buddytok/buddytok/test/kit"
	"github.com/fasthttp/websocket"
)

// Every answer of the edge carries the security headers, and the page's
// Content-Security-Policy fits its video mode: in WebRTC mode (this
// system's) nothing but the edge itself, once the mode is known.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second})
	get := func(path string) http.Header {
		t.Helper()
		resp, err := http.Get(w.Sys.EdgeURLs[0] + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header
	}
	for _, path := range []string{"/", "/app.js", "/healthz", "/api/users", "/nothing-here"} {
		h := get(path)
		for name, want := range map[string]string{
			"X-Content-Type-Options": "nosniff",
			"X-Frame-Options":        "DENY",
			"Referrer-Policy":        "no-referrer",
		} {
			if got := h.Get(name); got != want {
				t.Errorf("%s: %s = %q, want %q", path, name, got, want)
			}
		}
		csp := h.Get("Content-Security-Policy")
		for _, d := range []string{"default-src 'self'", "object-src 'none'", "frame-ancestors 'none'", "base-uri 'none'"} {
			if !strings.Contains(csp, d) {
				t.Errorf("%s: Content-Security-Policy %q lacks %q", path, csp, d)
			}
		}
		if !strings.Contains(h.Get("Permissions-Policy"), "camera=(self)") {
			t.Errorf("%s: Permissions-Policy %q", path, h.Get("Permissions-Policy"))
		}
	}
	// Before the mode is known the policy lets opentok.js load; once a
	// join told the edge it is WebRTC, nothing outside the edge is allowed.
	w.Join("Ann")
	csp := get("/").Get("Content-Security-Policy")
	if strings.Contains(csp, "opentok") || !strings.Contains(csp, "script-src 'self';") {
		t.Errorf("WebRTC mode: Content-Security-Policy %q allows more than the edge", csp)
	}
}

// The edge's own origin must match in scheme, host and port: a page served
// over https elsewhere on the same host name, or a proxy header from
// someone the edge does not trust, does not pass.
func TestOriginSchemeAndPort(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second})
	base := w.Sys.EdgeURLs[0] // http://127.0.0.1:PORT
	url := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	host := strings.TrimPrefix(base, "http://")
	for _, tc := range []struct {
		name   string
		header http.Header
		ok     bool
	}{
		{"own origin", http.Header{"Origin": {base}}, true},
		{"own host over https", http.Header{"Origin": {"https://" + host}}, false},
		{"own host, other port", http.Header{"Origin": {"http://127.0.0.1:1"}}, false},
		{"https claimed by an untrusted peer", http.Header{"Origin": {"https://" + host}, "X-Forwarded-Proto": {"https"}}, false},
		{"the null origin", http.Header{"Origin": {"null"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(w.Ctx, kit.WaitFor)
			defer cancel()
			ws, resp, err := websocket.DefaultDialer.DialContext(ctx, url, tc.header)
			if tc.ok != (err == nil) {
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				t.Fatalf("allowed %t (status %d, %v), want %t", err == nil, status, err, tc.ok)
			}
			if ws != nil {
				_ = ws.Close()
			}
			if !tc.ok && (resp == nil || resp.StatusCode != http.StatusForbidden) {
				t.Fatalf("refused without a 403: %+v", resp)
			}
		})
	}
}

// GET /api/users is limited per address (a burst of 5, then 1 a second)
// and can be switched off.
func TestUsersAPILimits(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second})
	var statuses []int
	for range 8 {
		resp, err := http.Get(w.Sys.EdgeURLs[0] + "/api/users")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	}
	if statuses[0] != http.StatusOK || statuses[len(statuses)-1] != http.StatusTooManyRequests {
		t.Fatalf("statuses %v: want the first served and the last refused", statuses)
	}

	off := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second, NoUsersAPI: true})
	resp, err := http.Get(off.Sys.EdgeURLs[0] + "/api/users")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatal("/api/users switched off, still served")
	}
}
