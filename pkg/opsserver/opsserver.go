// Package opsserver is the small HTTP server every BuddyTok process runs
// for its operators, apart from the port its users reach: /healthz (the
// process is alive), /readyz (it takes requests, by the checks it names)
// and /metrics (Prometheus).
package opsserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/state"
)

// Checks says, by name, what a process needs to take requests and whether
// it has it; /readyz answers 200 when every one is true.
type Checks func(context.Context) map[string]bool

// Server serves the operator endpoints of one process.
type Server struct {
	checks  Checks
	metrics *metrics.Metrics
}

// New returns a Server whose /readyz reports checks and whose /metrics
// serves m.
func New(checks Checks, m *metrics.Metrics) *Server {
	return &Server{checks: checks, metrics: m}
}

// ServiceChecks are the checks of a service replica on nc whose endpoints
// take requests once ready is closed: NATS connected, its endpoints
// subscribed, the state bucket reachable.
func ServiceChecks(nc *nats.Conn, ready <-chan struct{}) (Checks, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("opsserver: %w", err)
	}
	return func(ctx context.Context) map[string]bool {
		checks := map[string]bool{"nats": nc.IsConnected(), "endpoints": false, "state_bucket": false}
		select {
		case <-ready:
			checks["endpoints"] = true
		default:
		}
		if kv, err := js.KeyValue(ctx, state.Bucket); err == nil {
			_, err = kv.Status(ctx)
			checks["state_bucket"] = err == nil
		}
		return checks
	}, nil
}

// Handler routes the three paths.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.metrics.Handler())
	return mux
}

// readyTimeout bounds the checks of one /readyz.
const readyTimeout = 2 * time.Second

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	checks := s.checks(ctx)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(Status(checks))
	_ = json.NewEncoder(w).Encode(checks)
}

// Status is the HTTP status of a /readyz that found checks: 200 when every
// one holds, else 503.
func Status(checks map[string]bool) int {
	for _, ok := range checks {
		if !ok {
			return http.StatusServiceUnavailable
		}
	}
	return http.StatusOK
}

// Run serves on ln until ctx ends.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("opsserver: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("opsserver: shutdown: %w", err)
	}
	return nil
}
