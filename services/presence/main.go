// Command presence runs one replica of the BuddyTok presence service.
// Settings come from the environment; see README.md.
package main

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/servicemain"
	"github.com/buddytok/buddytok/services/presence/presence"
)

func main() {
	servicemain.Main("presence", presence.ConfigFromEnv,
		func(ctx context.Context, nc *nats.Conn, cfg presence.Config, log *slog.Logger, m *metrics.Metrics) (servicemain.Runner, error) {
			return presence.New(ctx, nc, cfg, log, m)
		})
}
