// Command edge runs one BuddyTok edge replica: the web client, the
// WebSocket endpoint and the HTTP API. Settings come from the environment;
// see README.md.
package main

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/servicemain"
	"github.com/buddytok/buddytok/services/edge/edge"
)

func main() {
	servicemain.Main("edge", edge.ConfigFromEnv,
		func(ctx context.Context, nc *nats.Conn, cfg edge.Config, log *slog.Logger, m *metrics.Metrics) (servicemain.Runner, error) {
			return edge.New(ctx, nc, cfg, log, m)
		})
}
