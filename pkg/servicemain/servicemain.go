// Package servicemain is the whole main function of a BuddyTok service
// binary: read the environment, connect to NATS, run one replica and its
// operator endpoints until SIGINT/SIGTERM, exit non-zero with a clear
// message on failure.
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

// Readier is a Runner whose endpoints take requests once Ready is closed:
// a service's replica, whose /readyz reports opsserver.ServiceChecks.
type Readier interface {
	Runner
	Ready() <-chan struct{}
}

// Checker is a Runner that reports its own readiness checks for /readyz
// (the edge).
type Checker interface {
	Runner
	Checks(context.Context) map[string]bool
}

// OpsAddrSetting is where a process serves its operator endpoints:
// /healthz, /readyz and /metrics.
var OpsAddrSetting = config.String("OPS_ADDR", ":9090", "all",
	"where the process serves its operator endpoints, `/healthz`, `/readyz` and `/metrics`, apart from the port users reach. "+
		"Keep it off the internet",
	config.DefaultShown("all-in-one: `127.0.0.1:0` (a free loopback port, printed at start); services and edge: `:9090`"))

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
	opsAddr := OpsAddrSetting.Read(env)
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
	checks, err := readiness(nc, replica)
	if err != nil {
		return err
	}
	ops := opsserver.New(checks, m)
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

// readiness is what the /readyz of replica on nc checks.
func readiness(nc *nats.Conn, replica Runner) (opsserver.Checks, error) {
	switch r := replica.(type) {
	case Checker:
		return r.Checks, nil
	case Readier:
		return opsserver.ServiceChecks(nc, r.Ready())
	default:
		return nil, fmt.Errorf("servicemain: %T says neither when it is ready nor its checks", replica)
	}
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
