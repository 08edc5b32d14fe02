// Package natstest gives tests real NATS, never a stand-in: an embedded
// server of their own (JetStream on, a free loopback port, its store on
// tmpfs where the machine has one), stopped when the test ends, with or
// without BuddyTok's per-role users and their permissions.
package natstest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/embeddednats"
	"github.com/buddytok/buddytok/pkg/freeport"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/servicemain"
)

// Start starts an embedded server for tb with opts and stops it when tb
// ends.
func Start(tb testing.TB, opts embeddednats.Options) *embeddednats.Server {
	tb.Helper()
	srv, err := embeddednats.Start(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	return srv
}

// Connect opens a connection to srv, closed when tb ends.
func Connect(tb testing.TB, srv *embeddednats.Server, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(srv.ClientURL(), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Conn starts a server of tb's own and connects to it.
func Conn(tb testing.TB) *nats.Conn {
	tb.Helper()
	return Connect(tb, Start(tb, embeddednats.Options{}))
}

// Roles is a server whose only users are BuddyTok's roles (and an admin),
// each with its permissions, as every deployment runs it.
type Roles struct {
	tb        testing.TB
	srv       *embeddednats.Server
	passwords map[string]string
}

// Admin is the user with every permission: for tests that read the state.
const Admin = "admin"

// StartRoles starts a server with the roles' users for tb.
func StartRoles(tb testing.TB) *Roles {
	tb.Helper()
	pw := permissions.NewPasswords(Admin)
	srv := Start(tb, embeddednats.Options{Users: embeddednats.RoleUsers(pw, Admin)})
	return &Roles{tb: tb, srv: srv, passwords: pw}
}

// As connects as role's user, with the role's inbox prefix, as its
// service connects: a request the role may not make fails here as it
// would in a deployment.
func (r *Roles) As(role permissions.Role) *nats.Conn {
	r.tb.Helper()
	return Connect(r.tb, r.srv, nats.UserInfo(string(role), r.passwords[string(role)]),
		nats.CustomInboxPrefix(permissions.InboxPrefix(role)), nats.Name(fmt.Sprint("test-", role)))
}

// Admin connects as the admin user.
func (r *Roles) Admin() *nats.Conn {
	r.tb.Helper()
	return Connect(r.tb, r.srv, nats.UserInfo(Admin, r.passwords[Admin]))
}

// Cluster starts an n-node NATS cluster with JetStream in this process, on
// loopback, and returns a connection to it that knows every node.
func Cluster(tb testing.TB, n int) *nats.Conn {
	tb.Helper()
	ports := make([]int, n)
	routes := make([]string, n)
	for i := range ports {
		p, err := freeport.Port()
		if err != nil {
			tb.Fatal(err)
		}
		ports[i], routes[i] = p, fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	urls := make([]string, n)
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   tb.TempDir(),
			NoSigs:     true,
			NoLog:      true,
			Cluster:    server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: ports[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		}
		ns, err := server.NewServer(opts)
		if err != nil {
			tb.Fatal(err)
		}
		ns.Start()
		tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		if !ns.ReadyForConnections(10 * time.Second) {
			tb.Fatalf("node %d not ready", i)
		}
		urls[i] = ns.ClientURL()
	}
	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Replica is a service replica, as the services' packages make them.
type Replica interface {
	Run(ctx context.Context) error
	Ready() <-chan struct{}
}

// Run runs each replica until tb ends, and returns once every one takes
// requests. A replica that stops before tb ends fails tb.
func Run(tb testing.TB, replicas ...Replica) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	tb.Cleanup(func() { cancel(); running.Wait() })
	for _, r := range replicas {
		running.Add(1)
		go func() {
			defer running.Done()
			if err := r.Run(ctx); ctx.Err() == nil {
				tb.Errorf("a replica stopped before the test ended: %v", err)
			}
		}()
	}
	deadline := time.After(30 * time.Second)
	for _, r := range replicas {
		select {
		case <-r.Ready():
		case <-deadline:
			tb.Fatal("a replica never became ready")
		}
	}
}

// WantCode fails tb unless err is a protocol error with code: the answer a
// service gives a refused request.
func WantCode(tb testing.TB, err error, code protocol.Code) {
	tb.Helper()
	if err == nil || protocol.CodeOf(err) != code {
		tb.Fatalf("got %v, want %s", err, code)
	}
}

// NewReplica makes a replica of the service program with cfg, connected
// as the service's role, logging nowhere; Run runs it.
func NewReplica[C any](tb testing.TB, roles *Roles, program servicemain.Program[C], cfg C) Replica {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := program.New(ctx, roles.As(permissions.Role(program.Name)), cfg, slog.New(slog.DiscardHandler), metrics.New())
	if err != nil {
		tb.Fatalf("%s: %v", program.Name, err)
	}
	replica, ok := r.(Replica)
	if !ok {
		tb.Fatalf("a %s replica does not say when it is ready", program.Name)
	}
	return replica
}
