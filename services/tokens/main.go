// Command tokens runs one replica of the BuddyTok tokens service.
// Settings come from the environment; see README.md.
package main

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/servicemain"
	"github.com/buddytok/buddytok/services/tokens/tokens"
)

func main() {
	servicemain.Main("tokens", tokens.ConfigFromEnv,
		func(ctx context.Context, nc *nats.Conn, cfg tokens.Config, log *slog.Logger, m *metrics.Metrics) (servicemain.Runner, error) {
			return tokens.New(ctx, nc, cfg, log, m)
		})
}
