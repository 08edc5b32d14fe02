// Package servicemain is the whole main function of a BuddyTok service
// binary: read the environment, connect to NATS, run one replica until
// SIGINT/SIGTERM, exit non-zero with a clear message on failure.
package servicemain

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/config"
	"github.com/buddytok/buddytok/pkg/natsrpc"
)

// Runner is a service replica.
type Runner interface {
	Run(ctx context.Context) error
}

// Main runs the service called name. configFromEnv reads its settings;
// newService builds the replica on a NATS connection.
func Main[C any](name string, configFromEnv func(*config.Env) C,
	newService func(context.Context, *nats.Conn, C, *slog.Logger) (Runner, error)) {
	if err := run(name, configFromEnv, newService); err != nil {
		slog.Error(name+" stopped", "err", err)
		os.Exit(1)
	}
}

func run[C any](name string, configFromEnv func(*config.Env) C,
	newService func(context.Context, *nats.Conn, C, *slog.Logger) (Runner, error)) error {
	env := config.FromOS()
	log := env.Logger().With("service", name)
	url := env.String("NATS_URL", "nats://127.0.0.1:4222")
	cfg := configFromEnv(env)
	if err := env.Err(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := natsrpc.Connect(url, "buddytok-"+name, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := newService(ctx, nc, cfg, log)
	if err != nil {
		return err
	}
	log.Info(name+" running", "nats", nc.ConnectedUrlRedacted())
	return svc.Run(ctx)
}
