package invites

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/servicemain"
)

// Program is the invites service as its binary (servicemain.Main) and the
// all-in-one start it.
var Program = servicemain.Program[Config]{
	Name:          protocol.ServiceInvites,
	ConfigFromEnv: ConfigFromEnv,
	New: func(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger, m *metrics.Metrics) (servicemain.Runner, error) {
		return New(ctx, nc, cfg, log, m)
	},
}
