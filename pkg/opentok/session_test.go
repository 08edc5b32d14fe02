package opentok_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/opentok"
	"github.com/buddytok/buddytok/pkg/opentok/opentoktest"
)

const (
	key    = "4567"
	secret = "0123456789abcdef0123456789abcdef01234567"
)

func mustClient(t *testing.T, cfg opentok.Config) *opentok.Client {
	t.Helper()
	c, err := opentok.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCreateSessionRequest(t *testing.T) {
	t.Parallel()
	srv := opentoktest.NewServer(key, secret)
	defer srv.Close()
	c := mustClient(t, opentok.Config{APIKey: key, APISecret: secret, APIURL: srv.URL})
	ctx := context.Background()

	id, err := c.CreateSession(ctx, opentok.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := opentok.ValidateSessionOwner(id, key); err != nil {
		t.Fatalf("session %q: %v", id, err)
	}
	id2, err := c.CreateSession(ctx, opentok.SessionOptions{
		MediaMode: opentok.Routed, ArchiveMode: opentok.ArchiveAlways, Location: "10.1.2.3",
	})
	if err != nil || id2 == id {
		t.Fatalf("second session %q: %v", id2, err)
	}
	reqs := srv.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	first, second := reqs[0], reqs[1]
	if first.Method != "POST" || first.Path != "/session/create" || first.Refused != "" {
		t.Fatalf("request %+v", first)
	}
	if first.Form.Get("p2p.preference") != "enabled" || first.Form.Get("archiveMode") != "manual" || first.Form.Has("location") {
		t.Fatalf("default form %v: want relayed, manual archiving, no location", first.Form)
	}
	if second.Form.Get("p2p.preference") != "disabled" || second.Form.Get("archiveMode") != "always" || second.Form.Get("location") != "10.1.2.3" {
		t.Fatalf("routed form %v", second.Form)
	}
	if first.Header.Get("Accept") != "application/json" {
		t.Fatalf("Accept %q", first.Header.Get("Accept"))
	}
	// A fresh, short-lived auth JWT per request.
	if first.Claims["ist"] != "project" || first.Claims["iss"] != key || first.Claims["jti"] == second.Claims["jti"] {
		t.Fatalf("auth claims %v / %v", first.Claims, second.Claims)
	}
}

func TestCreateSessionOptionsChecked(t *testing.T) {
	t.Parallel()
	srv := opentoktest.NewServer(key, secret)
	defer srv.Close()
	c := mustClient(t, opentok.Config{APIKey: key, APISecret: secret, APIURL: srv.URL})
	for _, o := range []opentok.SessionOptions{
		{ArchiveMode: opentok.ArchiveAlways},
		{Location: "not an ip"},
		{Location: "::1"},
		{MediaMode: "sideways"},
	} {
		if _, err := c.CreateSession(context.Background(), o); !errors.Is(err, opentok.ErrBadOptions) {
			t.Errorf("%+v: got %v, want ErrBadOptions", o, err)
		}
	}
	if n := len(srv.Requests()); n != 0 {
		t.Fatalf("%d requests sent for invalid options", n)
	}
}

func TestCreateSessionErrors(t *testing.T) {
	t.Parallel()
	wrongSecret := "fedcba9876543210fedcba9876543210fedcba98"
	closed := opentoktest.RefusedURL(t)
	tests := []struct {
		name     string
		setup    func(*opentoktest.Server)
		cfg      func(url string) opentok.Config
		want     error
		requests int
		message  string
	}{
		{"wrong secret is 403, not retried", nil,
			func(u string) opentok.Config { return opentok.Config{APIKey: key, APISecret: wrongSecret, APIURL: u} },
			opentok.ErrAuth, 1, "Invalid signature"},
		{"wrong key is 403", nil,
			func(u string) opentok.Config { return opentok.Config{APIKey: "999", APISecret: secret, APIURL: u} },
			opentok.ErrAuth, 1, "Issuer not found"},
		{"500 then success", func(s *opentoktest.Server) { s.FailNext(1) },
			func(u string) opentok.Config { return opentok.Config{APIKey: key, APISecret: secret, APIURL: u} },
			nil, 2, ""},
		{"500 every time: bounded retries", func(s *opentoktest.Server) { s.FailNext(100) },
			func(u string) opentok.Config { return opentok.Config{APIKey: key, APISecret: secret, APIURL: u} },
			opentok.ErrUnavailable, 3, ""},
		{"timeout", func(s *opentoktest.Server) { s.Delay(5 * time.Second) },
			func(u string) opentok.Config {
				return opentok.Config{APIKey: key, APISecret: secret, APIURL: u, Timeout: 100 * time.Millisecond, Retries: -1}
			},
			opentok.ErrUnavailable, -1, ""},
		{"connection refused", nil,
			func(string) opentok.Config { return opentok.Config{APIKey: key, APISecret: secret, APIURL: closed} },
			opentok.ErrUnavailable, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := opentoktest.NewServer(key, secret)
			defer srv.Close()
			if tc.setup != nil {
				tc.setup(srv)
			}
			c := mustClient(t, tc.cfg(srv.URL))
			_, err := c.CreateSession(context.Background(), opentok.SessionOptions{})
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.requests >= 0 && len(srv.Requests()) != tc.requests {
				t.Fatalf("%d requests, want %d", len(srv.Requests()), tc.requests)
			}
			var apiErr *opentok.APIError
			if tc.message != "" && (!errors.As(err, &apiErr) || apiErr.Message != tc.message) {
				t.Fatalf("error %v, want API message %q", err, tc.message)
			}
			for _, s := range []string{secret, wrongSecret} {
				if err != nil && strings.Contains(err.Error(), s) {
					t.Fatalf("error reveals a secret: %v", err)
				}
			}
		})
	}
}

func TestCreateSessionHonoursContext(t *testing.T) {
	t.Parallel()
	srv := opentoktest.NewServer(key, secret)
	defer srv.Close()
	srv.Delay(5 * time.Second)
	c := mustClient(t, opentok.Config{APIKey: key, APISecret: secret, APIURL: srv.URL})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.CreateSession(ctx, opentok.SessionOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("returned after %v despite a 100ms context", d)
	}
}

func TestDecodeT1(t *testing.T) {
	t.Parallel()
	c := mustClient(t, opentok.Config{APIKey: key, APISecret: secret})
	sid := opentoktest.NewSessionID(key)
	tok, err := c.T1Token(sid, opentok.TokenOptions{ConnectionData: `{"name":"Ann"}`})
	if err != nil {
		t.Fatal(err)
	}
	got, err := opentoktest.DecodeT1(tok, secret)
	if err != nil {
		t.Fatal(err)
	}
	if got.PartnerID != key || got.Data.Get("session_id") != sid || got.Data.Get("connection_data") != `{"name":"Ann"}` {
		t.Fatalf("decoded %+v", got)
	}
	if _, err := opentoktest.DecodeT1(tok, "fedcba9876543210fedcba9876543210fedcba98"); !errors.Is(err, opentoktest.ErrBadToken) {
		t.Fatalf("wrong secret: %v", err)
	}
}
