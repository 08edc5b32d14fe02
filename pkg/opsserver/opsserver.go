// Package opsserver is the small HTTP server every BuddyTok service other
// than the edge runs for its operators: /healthz (the process is alive),
// /readyz (it takes requests: NATS connected, the state bucket reachable,
// its endpoints subscribed) and /metrics (Prometheus). The edge serves the
// same three paths on its own listener.
package opsserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/state"
)

// Server serves the operator endpoints of one process.
type Server struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	ready   <-chan struct{}
	metrics *metrics.Metrics
	log     *slog.Logger
}

// New returns a Server for a process on nc whose endpoints take requests
// once ready is closed.
func New(nc *nats.Conn, ready <-chan struct{}, m *metrics.Metrics, log *slog.Logger) (*Server, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("opsserver: %w", err)
	}
	return &Server{nc: nc, js: js, ready: ready, metrics: m, log: log}, nil
}

// Handler routes the three paths.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.metrics.Handler())
	return mux
}

// readyTimeout bounds the bucket check of one /readyz.
const readyTimeout = 2 * time.Second

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	checks := map[string]bool{"nats": s.nc.IsConnected(), "endpoints": false, "state_bucket": false}
	select {
	case <-s.ready:
		checks["endpoints"] = true
	default:
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if kv, err := s.js.KeyValue(ctx, state.Bucket); err == nil {
		_, err = kv.Status(ctx)
		checks["state_bucket"] = err == nil
	}
	status := http.StatusOK
	for _, ok := range checks {
		if !ok {
			status = http.StatusServiceUnavailable
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(checks)
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
