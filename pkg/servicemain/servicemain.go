// Package servicemain is the whole main function of a BuddyTok service
// binary: read the environment, connect to NATS, run one replica (and, for
// a service other than the edge, its operator endpoints) until
// SIGINT/SIGTERM, exit non-zero with a clear message on failure.
package servicemain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/config"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/opsserver"
	"github.com/buddytok/buddytok/pkg/permissions"
)

// Runner is a service replica.
type Runner interface {
	Run(ctx context.Context) error
}

// Readier is a Runner whose endpoints take requests once Ready is closed.
// Main serves the operator endpoints (opsserver) of a Readier on OPS_ADDR;
// a Runner that is not one serves its own (the edge).
type Readier interface {
	Runner
	Ready() <-chan struct{}
}

// opsAddrSetting is where a service serves /healthz, /readyz and /metrics.
var opsAddrSetting = config.String("OPS_ADDR", ":9090", "presence, invites, tokens",
	"where the service serves `/healthz`, `/readyz` and `/metrics` (the edge serves them on its own port)")

// Program is one BuddyTok service, as its own binary runs it (Main) and as
// the all-in-one does: its name, how it reads its settings from the
// environment, and how it builds a replica on a NATS connection. Each
// service package defines its own (presence.Program, edge.Program, ...).
type Program[C any] struct {
	Name          string
	ConfigFromEnv func(*config.Env) C
	New           func(context.Context, *nats.Conn, C, *slog.Logger, *metrics.Metrics) (Runner, error)
}

// Define makes the Program of a service whose constructor returns its own
// replica type.
func Define[C any, R Runner](name string, configFromEnv func(*config.Env) C,
	newReplica func(context.Context, *nats.Conn, C, *slog.Logger, *metrics.Metrics) (R, error)) Program[C] {
	return Program[C]{Name: name, ConfigFromEnv: configFromEnv,
		New: func(ctx context.Context, nc *nats.Conn, cfg C, log *slog.Logger, m *metrics.Metrics) (Runner, error) {
			r, err := newReplica(ctx, nc, cfg, log, m)
			if err != nil {
				return nil, err // not a Runner holding a nil replica
			}
			return r, nil
		}}
}

// Main runs svc until SIGINT or SIGTERM.
//
// `SERVICE probe URL` instead checks that URL answers 200 OK and exits 0 or
// 1: the health check of a container that holds nothing but the binary.
//
// `SERVICE nats-users DIR [OWNER]` makes the NATS users of a deployment
// (permissions.Provision, with the roles' files owned by the numeric user
// OWNER) and exits: the one-shot container docker-compose.yml runs before
// NATS starts.
func Main[C any](svc Program[C]) {
	if len(os.Args) == 3 && os.Args[1] == "probe" {
		os.Exit(probe(context.Background(), os.Args[2], os.Stderr))
	}
	if len(os.Args) >= 3 && len(os.Args) <= 4 && os.Args[1] == "nats-users" {
		if err := natsUsers(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if err := run(svc); err != nil {
		slog.Error(svc.Name+" stopped", "err", err)
		os.Exit(1)
	}
}

func run[C any](svc Program[C]) error {
	name := svc.Name
	env := config.FromOS()
	log := env.Logger().With("service", name)
	url := natsrpc.URLSetting.Read(env)
	auth := natsrpc.AuthFromEnv(env)
	auth.InboxPrefix = permissions.InboxPrefix(permissions.Role(name))
	opsAddr := opsAddrSetting.Read(env)
	cfg := svc.ConfigFromEnv(env)
	if err := env.Err(); err != nil {
		return err
	}
	log.Info("effective configuration", env.Effective())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := natsrpc.Connect(url, "buddytok-"+name, log, auth)
	if err != nil {
		return err
	}
	defer nc.Close()
	m := metrics.New()
	replica, err := svc.New(ctx, nc, cfg, log, m)
	if err != nil {
		return err
	}
	r, ok := replica.(Readier)
	if !ok {
		log.Info(name+" running", "nats", nc.ConnectedUrlRedacted())
		return replica.Run(ctx)
	}
	ops, err := opsserver.New(nc, r.Ready(), m, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", opsAddr)
	if err != nil {
		return fmt.Errorf("%s: operator endpoints: listen on %s (OPS_ADDR): %w", name, opsAddr, err)
	}
	log.Info(name+" running", "nats", nc.ConnectedUrlRedacted(), "ops", ln.Addr().String())
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	opsDone := make(chan error, 1)
	go func() { opsDone <- ops.Run(opsCtx, ln) }()
	err = replica.Run(ctx)
	// /healthz answers until the replica has drained.
	stopOps()
	return errors.Join(err, <-opsDone)
}

// natsUsers is `nats-users DIR [OWNER]`.
func natsUsers(args []string) error {
	owner := -1
	if len(args) == 2 {
		n, err := strconv.Atoi(args[1])
		if err != nil || n < 0 {
			return fmt.Errorf("nats-users: OWNER %q is not a numeric user ID", args[1])
		}
		owner = n
	}
	if err := permissions.Provision(args[0], owner); err != nil {
		return err
	}
	fmt.Printf("NATS users of every role are in %s\n", args[0])
	return nil
}
