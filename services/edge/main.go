// Command edge runs one BuddyTok edge replica: the web client, the
// WebSocket endpoint and the HTTP API. Settings come from the environment;
// see README.md.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/servicemain"
	"github.com/buddytok/buddytok/services/edge/edge"
)

type listeningEdge struct {
	e  *edge.Edge
	ln net.Listener
}

func (l listeningEdge) Run(ctx context.Context) error { return l.e.Run(ctx, l.ln) }

func main() {
	servicemain.Main("edge", edge.ConfigFromEnv,
		func(ctx context.Context, nc *nats.Conn, cfg edge.Config, log *slog.Logger, m *metrics.Metrics) (servicemain.Runner, error) {
			e, err := edge.New(ctx, nc, cfg, log, m)
			if err != nil {
				return nil, err
			}
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return nil, fmt.Errorf("edge: listen on %s: %w", cfg.Listen, err)
			}
			log.Info("edge listening", "addr", ln.Addr().String())
			return listeningEdge{e, ln}, nil
		})
}
