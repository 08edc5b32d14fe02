// Package allinone wires a whole BuddyTok system into one process: a NATS
// server (embedded unless an external URL is given), replicas of every
// service and one or more edges, each replica on its own NATS connection as
// if it were its own process. The buddytok command runs one of each; the
// system tests run several and stop some mid-run.
package allinone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/embeddednats"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/opsserver"
	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/servicemain"
	"github.com/buddytok/buddytok/services/edge/edge"
	"github.com/buddytok/buddytok/services/invites/invites"
	"github.com/buddytok/buddytok/services/presence/presence"
	"github.com/buddytok/buddytok/services/tokens/tokens"
)

// Options describe the system to start.
type Options struct {
	NATSURL  string       // external NATS; empty starts an embedded server
	NATSAuth natsrpc.Auth // how to authenticate to the external NATS
	NATSPort int          // embedded server's port; 0 picks a free one
	StoreDir string       // embedded JetStream storage; empty: a temporary directory
	Replicas int          // replicas of each service (default 1)
	Edges    int          // edges (default 1)
	// Listen is the first edge's address; later edges listen on the same
	// host at a free port. Default 127.0.0.1:0.
	Listen string
	// OpsListen, if set, is where the process serves its operator
	// endpoints (/healthz, /readyz, /metrics): see System.OpsURL.
	OpsListen string
	Presence  presence.Config
	Invites   invites.Config
	Tokens    tokens.Config
	Edge      edge.Config
	Log       *slog.Logger
}

// Kind names a replica's service.
type Kind string

// The replica kinds: the services' own names.
var (
	Presence = Kind(presence.Program.Name)
	Invites  = Kind(invites.Program.Name)
	Tokens   = Kind(tokens.Program.Name)
	Edge     = Kind(edge.Program.Name)
)

// programs starts a replica of each service the way its own binary does
// (servicemain.Main runs the same Program), with the settings of Options
// instead of the environment. An edge (startEdge) is made by edge.New, its
// Program's constructor, for its address.
var programs = map[Kind]func(context.Context, *nats.Conn, Options, *slog.Logger, *metrics.Metrics) (servicemain.Runner, error){
	Presence: func(ctx context.Context, nc *nats.Conn, o Options, log *slog.Logger, m *metrics.Metrics) (servicemain.Runner, error) {
		return presence.Program.New(ctx, nc, o.Presence, log, m)
	},
	Invites: func(ctx context.Context, nc *nats.Conn, o Options, log *slog.Logger, m *metrics.Metrics) (servicemain.Runner, error) {
		return invites.Program.New(ctx, nc, o.Invites, log, m)
	},
	Tokens: func(ctx context.Context, nc *nats.Conn, o Options, log *slog.Logger, m *metrics.Metrics) (servicemain.Runner, error) {
		return tokens.Program.New(ctx, nc, o.Tokens, log, m)
	},
}

// System is a running all-in-one system.
type System struct {
	URL      string   // NATS URL
	EdgeURLs []string // http://host:port of each edge
	// Metrics are the whole process's, shared by every replica.
	Metrics *metrics.Metrics
	// OpsURL is http://host:port of the operator endpoints if
	// Options.OpsListen asked for them: /metrics serves Metrics, /readyz
	// checks every running edge.
	OpsURL string

	nats      *embeddednats.Server
	passwords map[string]string // of the embedded server's users
	opts      Options
	stopOps   func() error
	mu        sync.Mutex
	replicas  map[Kind][]*replica
}

type replica struct {
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	checks opsserver.Checks // an edge's
}

// DefaultStoreDir is where the buddytok command keeps the embedded server's
// JetStream data unless NATS_STORE_DIR says otherwise: a directory that
// outlives the process, so that a restart (an upgrade) keeps every user,
// invitation and chat and pages resume within the grace period. It follows
// the XDG base directories: $XDG_STATE_HOME/buddytok/nats, else
// ~/.local/state/buddytok/nats; getenv reads the environment.
func DefaultStoreDir(getenv func(string) string) (string, error) {
	if base := getenv("XDG_STATE_HOME"); filepath.IsAbs(base) {
		return filepath.Join(base, "buddytok", "nats"), nil
	}
	home := getenv("HOME")
	if !filepath.IsAbs(home) {
		return "", errors.New("no directory to keep state in: set NATS_STORE_DIR (or HOME, or XDG_STATE_HOME)")
	}
	return filepath.Join(home, ".local", "state", "buddytok", "nats"), nil
}

// Start starts the system; Close stops it.
func Start(ctx context.Context, opts Options) (sys *System, err error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	opts.Replicas, opts.Edges = max(opts.Replicas, 1), max(opts.Edges, 1)
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	sys = &System{URL: opts.NATSURL, Metrics: metrics.New(), opts: opts, replicas: map[Kind][]*replica{}}
	defer func() {
		if err != nil {
			sys.Close()
		}
	}()
	if sys.URL == "" {
		usersDir := ""
		if opts.StoreDir != "" {
			usersDir = UsersDir(opts.StoreDir)
		}
		if sys.passwords, err = passwords(usersDir); err != nil {
			return sys, err
		}
		srv, err := embeddednats.Start(embeddednats.Options{Port: opts.NATSPort, StoreDir: opts.StoreDir, Users: embeddednats.RoleUsers(sys.passwords, Admin)})
		if err != nil {
			return sys, err
		}
		sys.nats, sys.URL = srv, srv.ClientURL()
	}
	for i := range opts.Replicas {
		for _, kind := range []Kind{Tokens, Invites, Presence} {
			if err := sys.startService(ctx, opts, kind, i); err != nil {
				return sys, err
			}
		}
	}
	listen := opts.Listen
	for i := range opts.Edges {
		if i > 0 {
			host, _, _ := net.SplitHostPort(opts.Listen)
			listen = net.JoinHostPort(host, "0")
		}
		if err := sys.startEdge(ctx, opts, listen); err != nil {
			return sys, err
		}
	}
	if opts.OpsListen != "" {
		if err := sys.serveOps(opts.OpsListen); err != nil {
			return sys, err
		}
	}
	return sys, nil
}

// serveOps serves the operator endpoints on addr until Close.
func (sys *System) serveOps(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("operator endpoints: listen on %s (OPS_ADDR): %w", addr, err)
	}
	sys.OpsURL = "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- opsserver.New(sys.edgeChecks, sys.Metrics).Run(ctx, ln) }()
	sys.stopOps = func() error { cancel(); return <-done }
	return nil
}

// edgeChecks are the checks of every running edge: each holds when it
// holds for all of them.
func (sys *System) edgeChecks(ctx context.Context) map[string]bool {
	sys.mu.Lock()
	reps := slices.Clone(sys.replicas[Edge])
	sys.mu.Unlock()
	all := map[string]bool{"edge": false}
	for _, r := range reps {
		if r == nil {
			continue
		}
		all["edge"] = true
		for k, ok := range r.checks(ctx) {
			if held, seen := all[k]; !seen || held {
				all[k] = ok // false once any edge fails it
			}
		}
	}
	return all
}

// Connect opens a NATS connection with every permission (the embedded
// server's Admin, or the external server's credentials), for tools and
// tests.
func (sys *System) Connect(name string) (*nats.Conn, error) {
	a := sys.opts.NATSAuth
	if sys.nats != nil {
		a = natsrpc.Auth{User: Admin, Password: sys.passwords[Admin]}
	}
	return natsrpc.Connect(sys.URL, name, sys.opts.Log, a)
}

// ConnectAs opens a connection as role's user of the embedded server, with
// that role's permissions only.
func (sys *System) ConnectAs(role permissions.Role, name string) (*nats.Conn, error) {
	return natsrpc.Connect(sys.URL, name, sys.opts.Log, sys.auth(sys.opts, role))
}

// auth is how a replica of role connects: with the external NATS's
// credentials, or, to the embedded server, as its role's user; always with
// its role's inboxes.
func (sys *System) auth(opts Options, role permissions.Role) natsrpc.Auth {
	a := opts.NATSAuth
	if sys.nats != nil {
		a = natsrpc.Auth{User: string(role), Password: sys.passwords[string(role)]}
	}
	a.InboxPrefix = permissions.InboxPrefix(role)
	return a
}

func (sys *System) startService(ctx context.Context, opts Options, kind Kind, i int) error {
	log := opts.Log.With("service", string(kind), "replica", i)
	nc, err := natsrpc.Connect(sys.URL, fmt.Sprintf("buddytok-%s-%d", kind, i), log, sys.auth(opts, permissions.Role(kind)))
	if err != nil {
		return err
	}
	r, err := programs[kind](ctx, nc, opts, log, sys.Metrics)
	if err != nil {
		nc.Close()
		return err
	}
	return sys.run(ctx, kind, nc, r)
}

func (sys *System) startEdge(ctx context.Context, opts Options, listen string) error {
	log := opts.Log.With("service", "edge")
	nc, err := natsrpc.Connect(sys.URL, "buddytok-edge", log, sys.auth(opts, permissions.Edge))
	if err != nil {
		return err
	}
	cfg := opts.Edge
	cfg.Listen = listen
	e, err := edge.New(ctx, nc, cfg, log, sys.Metrics)
	if err != nil {
		nc.Close()
		return err
	}
	sys.EdgeURLs = append(sys.EdgeURLs, "http://"+e.Addr().String())
	return sys.run(ctx, Edge, nc, e)
}

// run starts r and, if r says when it is ready, waits for that (or for
// startCtx to end), so that Start returns a system that takes requests.
func (sys *System) run(startCtx context.Context, kind Kind, nc *nats.Conn, r servicemain.Runner) error {
	ctx, cancel := context.WithCancel(context.Background())
	rep := &replica{nc: nc, cancel: cancel, done: make(chan error, 1)}
	if c, ok := r.(servicemain.Checker); ok {
		rep.checks = c.Checks
	}
	go func() { rep.done <- r.Run(ctx) }()
	sys.mu.Lock()
	sys.replicas[kind] = append(sys.replicas[kind], rep)
	sys.mu.Unlock()
	rd, ok := r.(servicemain.Readier)
	if !ok {
		return nil
	}
	select {
	case <-rd.Ready():
		return nil
	case err := <-rep.done:
		rep.done <- err // for stop
		return fmt.Errorf("%s stopped while starting: %w", kind, err)
	case <-startCtx.Done():
		return fmt.Errorf("%s: not ready: %w", kind, startCtx.Err())
	}
}

// AddReplica starts one more replica of a service (not an edge), as an
// operator scaling up or restarting one would.
func (sys *System) AddReplica(ctx context.Context, kind Kind) error {
	if kind == Edge {
		return errors.New("allinone: AddReplica starts services, not edges")
	}
	sys.mu.Lock()
	i := len(sys.replicas[kind])
	sys.mu.Unlock()
	return sys.startService(ctx, sys.opts, kind, i)
}

// RestartEdge stops edge i as a clean shutdown would (its pages are told
// to reconnect) and starts a new edge where it listened, as a restarted
// process would: EdgeURLs stay as they were.
func (sys *System) RestartEdge(ctx context.Context, i int) error {
	if i < 0 || i >= len(sys.EdgeURLs) {
		return fmt.Errorf("no edge %d", i)
	}
	addr := strings.TrimPrefix(sys.EdgeURLs[i], "http://")
	if err := sys.Stop(Edge, i); err != nil {
		return err
	}
	n := len(sys.EdgeURLs)
	if err := sys.startEdge(ctx, sys.opts, addr); err != nil {
		return err
	}
	sys.EdgeURLs = sys.EdgeURLs[:n]
	return nil
}

// Stop stops replica i of kind (in start order) as a clean shutdown
// would, and returns its Run error.
func (sys *System) Stop(kind Kind, i int) error {
	sys.mu.Lock()
	reps := sys.replicas[kind]
	if i < 0 || i >= len(reps) || reps[i] == nil {
		sys.mu.Unlock()
		return fmt.Errorf("no running %s replica %d", kind, i)
	}
	rep := reps[i]
	reps[i] = nil
	sys.mu.Unlock()
	return rep.stop()
}

// Kill stops replica i of kind the way a crash would look to the rest of
// the system: its NATS connection drops at once, nothing is cleaned up.
func (sys *System) Kill(kind Kind, i int) {
	sys.mu.Lock()
	reps := sys.replicas[kind]
	if i < 0 || i >= len(reps) || reps[i] == nil {
		sys.mu.Unlock()
		return
	}
	rep := reps[i]
	reps[i] = nil
	sys.mu.Unlock()
	rep.nc.Close()
	rep.cancel()
	<-rep.done
}

func (r *replica) stop() error {
	r.cancel()
	err := <-r.done
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	r.nc.Close()
	return err
}

// Close stops the edges first (so users are reported as disconnected),
// then the services, then the embedded NATS server.
func (sys *System) Close() error {
	var errs []error
	for _, kind := range []Kind{Edge, Presence, Invites, Tokens} {
		sys.mu.Lock()
		reps := sys.replicas[kind]
		sys.replicas[kind] = nil
		sys.mu.Unlock()
		for _, r := range reps {
			if r != nil {
				if err := r.stop(); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", kind, err))
				}
			}
		}
	}
	if sys.stopOps != nil {
		if err := sys.stopOps(); err != nil {
			errs = append(errs, err)
		}
		sys.stopOps = nil
	}
	if sys.nats != nil {
		sys.nats.Shutdown()
	}
	return errors.Join(errs...)
}
