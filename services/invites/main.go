// Command invites runs one replica of the BuddyTok invites service.
// Settings come from the environment; see README.md.
package main

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/servicemain"
	"github.com/buddytok/buddytok/services/invites/invites"
)

func main() {
	servicemain.Main("invites", invites.ConfigFromEnv,
		func(ctx context.Context, nc *nats.Conn, cfg invites.Config, log *slog.Logger, m *metrics.Metrics) (servicemain.Runner, error) {
			return invites.New(ctx, nc, cfg, log, m)
		})
}
