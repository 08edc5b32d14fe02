// Package kit is what the system and browser tests need to play BuddyTok
// for real: the whole system in the test's process (embedded NATS with the
// roles' users, every service and one or more edges on free loopback ports,
// through allinone), with fast timings, and users that speak the real
// WebSocket protocol (pkg/client), with waits that have deadlines instead
// of sleeps.
package kit

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buddytok/buddytok/cmd/buddytok/allinone"
	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/latency"
	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/requestid"
	"github.com/buddytok/buddytok/pkg/state"
	"github.com/buddytok/buddytok/services/edge/admission"
	"github.com/buddytok/buddytok/services/edge/edge"
	"github.com/buddytok/buddytok/services/edge/identity"
	"github.com/buddytok/buddytok/services/invites/invites"
	"github.com/buddytok/buddytok/services/presence/presence"
	"github.com/buddytok/buddytok/services/tokens/tokens"
)

// WaitFor bounds every wait on the system; a test that needs longer has
// found a bug, not a slow machine.
const WaitFor = 15 * time.Second

// Topology is a shape of the system the flows run on.
type Topology struct {
	Name            string
	Edges, Replicas int
}

// Topologies are the shapes every flow runs on: one of everything, and two
// edges with two replicas of every service.
var Topologies = []Topology{
	{Name: "single", Edges: 1, Replicas: 1},
	{Name: "replicated", Edges: 2, Replicas: 2},
}

// Settings are fast timings for tests: a short grace and lease so that
// leaves happen within a second or two. The zero value is the default.
type Settings struct {
	// Grace is presence's grace period.
	Grace time.Duration
	// Rapid lifts the per-connection rate limit, for tests that replay
	// many rounds on one connection far faster than a person could.
	Rapid bool
	// Video replaces the default (WebRTC) video provider.
	Video tokens.Provider
	// Logs, if set, receives every log line of the system as JSON.
	Logs io.Writer
	// Shutdown bounds an edge's shutdown (default WaitFor).
	Shutdown time.Duration
	// Invites replaces the invites service's settings.
	Invites invites.Config
	// Ping is the edge's keepalive interval (default 5 s).
	Ping time.Duration
	// SendQueueBytes bounds the edge's per-socket queue (default the protocol's).
	SendQueueBytes int
	// SendBuffer is each socket's kernel send buffer (default the protocol's).
	SendBuffer int
	// WriteTimeout bounds one WebSocket write (default 5 s).
	WriteTimeout time.Duration
	// JoinTimeout is how long a connection may stay without a user
	// (default the protocol's).
	JoinTimeout time.Duration
	// Admission replaces the edge's admission limits; by default every
	// test user, all on loopback, may connect and join at any rate.
	Admission *admission.Limits
	// NoUsersAPI switches GET /api/users off.
	NoUsersAPI bool
	// Identity makes the edges require identity tokens.
	Identity identity.Config
	// RoomMaxUsers bounds each room's users (default presence's).
	RoomMaxUsers int
	// NoLobby closes the lobby.
	NoLobby bool
}

// UnlimitedAddr lifts the per-address limits: the tests' users all connect
// from one address.
var UnlimitedAddr = admission.Limits{ConnsPerAddr: -1, JoinRatePerAddr: -1, PenaltyMax: -1}

// Options are the allinone.Options of a system of shape top with
// settings s.
func Options(top Topology, s Settings) allinone.Options {
	log := slog.New(slog.DiscardHandler)
	switch {
	case s.Logs != nil:
		log = slog.New(requestid.Handler(slog.NewJSONHandler(s.Logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	case os.Getenv("BUDDYTOK_TEST_LOG") != "":
		log = slog.New(requestid.Handler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
	admission := UnlimitedAddr
	if s.Admission != nil {
		admission = *s.Admission
	}
	var fps float64
	if s.Rapid {
		fps = 10000
	}
	return allinone.Options{
		OpsListen: "127.0.0.1:0",
		Log:       log,
		Tokens:    tokens.Config{Provider: s.Video},
		Invites:   s.Invites,
		Edges:     top.Edges,
		Replicas:  top.Replicas,
		Presence:  presence.Config{Grace: s.Grace, LeaseTTL: time.Second, SweepEvery: 25 * time.Millisecond, Replicas: 1, RoomMaxUsers: s.RoomMaxUsers},
		Edge: edge.Config{
			LeaseTTL: time.Second, PingEvery: cmp.Or(s.Ping, 5*time.Second), WriteTimeout: cmp.Or(s.WriteTimeout, 5*time.Second),
			RequestTimeout: 10 * time.Second, Replicas: 1, FramesPerSecond: fps, ShutdownTimeout: cmp.Or(s.Shutdown, WaitFor),
			ReconcileEvery: 100 * time.Millisecond, SendQueueBytes: s.SendQueueBytes, SendBuffer: s.SendBuffer,
			JoinTimeout: s.JoinTimeout, Admission: admission, NoUsersAPI: s.NoUsersAPI, Identity: s.Identity, NoLobby: s.NoLobby,
		},
	}
}

// World is a running system plus helpers to play users on it.
type World struct {
	T   testing.TB
	Sys *allinone.System
	Ctx context.Context // ends when the test does, or after 3 minutes
	n   atomic.Int64    // tabs dialled, to spread them over the edges
}

// Start starts a system of shape top with settings s for t, and stops it
// when t ends.
func Start(t testing.TB, top Topology, s Settings) *World {
	t.Helper()
	return StartWith(t, Options(top, s), s.Logs != nil)
}

// StartWith starts a system with opts for t (for a test that changes
// what Options gives), and stops it when t ends. Unless ownLog, with
// BUDDYTOK_TEST_LOGDIR set, the system logs there, one file per test.
func StartWith(t testing.TB, opts allinone.Options, ownLog bool) *World {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	if dir := os.Getenv("BUDDYTOK_TEST_LOGDIR"); dir != "" && !ownLog {
		// One file per test, at Info, for a failure on a CI machine: slow
		// requests, lapsed leases and reconciles are logged there.
		f, err := os.Create(filepath.Join(dir, strings.NewReplacer("/", "_").Replace(t.Name())+".log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		opts.Log = slog.New(requestid.Handler(slog.NewJSONHandler(f, nil)))
	}
	sys, err := allinone.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start system: %v", err)
	}
	t.Cleanup(func() {
		if err := sys.Close(); err != nil {
			t.Errorf("close system: %v", err)
		}
	})
	return &World{T: t, Sys: sys, Ctx: ctx}
}

// WaitCtx is a context for one wait.
func (w *World) WaitCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(w.Ctx, WaitFor)
}

// Dial connects a new tab to an edge, spreading tabs across edges.
func (w *World) Dial() *client.Client {
	w.T.Helper()
	url := w.Sys.EdgeURLs[int(w.n.Add(1)-1)%len(w.Sys.EdgeURLs)]
	ctx, cancel := w.WaitCtx()
	defer cancel()
	c, err := client.Dial(ctx, url)
	if err != nil {
		w.T.Fatal(err)
	}
	w.T.Cleanup(func() { _ = c.Close() })
	return c
}

// Join opens a tab and joins as name.
func (w *World) Join(name string) *client.Client {
	w.T.Helper()
	c := w.Dial()
	ctx, cancel := w.WaitCtx()
	defer cancel()
	if _, err := c.Join(ctx, name); err != nil {
		w.T.Fatalf("join %s: %v", name, err)
	}
	return c
}

// JoinRoom opens a tab on edge (an index of Sys.EdgeURLs) and joins room
// as name.
func (w *World) JoinRoom(name, room string, edge int) *client.Client {
	w.T.Helper()
	ctx, cancel := w.WaitCtx()
	defer cancel()
	c, err := client.Dial(ctx, w.Sys.EdgeURLs[edge%len(w.Sys.EdgeURLs)])
	if err != nil {
		w.T.Fatal(err)
	}
	w.T.Cleanup(func() { _ = c.Close() })
	if _, err := c.JoinRoom(ctx, name, room); err != nil {
		w.T.Fatalf("join %s in %s: %v", name, room, err)
	}
	return c
}

// ID is the user ID of c's tab.
func ID(c *client.Client) string { return c.View().Me.ID }

// Sees waits until every observer's list shows user with the given state
// ("" means: not in the list at all).
func (w *World) Sees(user string, st protocol.State, observers ...*client.Client) {
	w.T.Helper()
	for _, o := range observers {
		ctx, cancel := w.WaitCtx()
		_, err := o.WaitView(ctx, func(v client.View) bool {
			u, ok := v.Users[user]
			if st == "" {
				return !ok
			}
			return ok && u.State == st
		})
		cancel()
		if err != nil {
			w.T.Fatalf("%s never saw %s as %q: %v (view %+v)", o.View().Me.Name, user, st, err, o.View().Users[user])
		}
	}
}

// WaitView waits for a condition on one client's view.
func (w *World) WaitView(c *client.Client, what string, pred func(client.View) bool) client.View {
	w.T.Helper()
	ctx, cancel := w.WaitCtx()
	defer cancel()
	v, err := c.WaitView(ctx, pred)
	if err != nil {
		w.T.Fatalf("%s: %s: %v (view: outgoing %+v incoming %d chat %+v)", c.View().Me.Name, what, err, v.Outgoing, len(v.Incoming), v.Chat)
	}
	return v
}

// Event waits for a directed event on c.
func (w *World) Event(c *client.Client, what string, pred func(protocol.ServerFrame) bool) protocol.ServerFrame {
	w.T.Helper()
	ctx, cancel := w.WaitCtx()
	defer cancel()
	f, err := c.WaitEvent(ctx, pred)
	if err != nil {
		w.T.Fatalf("%s: %s: %v", c.View().Me.Name, what, err)
	}
	return f
}

// IsEnded matches the event that ends invitation invID for reason.
func IsEnded(invID, reason string) func(protocol.ServerFrame) bool {
	return func(f protocol.ServerFrame) bool {
		return f.Type == protocol.TypeInvitationEnded && f.Invitation.ID == invID && f.Reason == reason
	}
}

// MustCode asserts that err is a protocol error with code.
func MustCode(t testing.TB, err error, code protocol.Code) {
	t.Helper()
	natstest.WantCode(t, err, code)
}

// Store opens the state bucket on a fresh connection, for checks.
func (w *World) Store() *state.Store {
	w.T.Helper()
	nc, err := w.Sys.Connect("test-store")
	if err != nil {
		w.T.Fatal(err)
	}
	w.T.Cleanup(nc.Close)
	st, err := state.Open(w.Ctx, nc, state.Options{})
	if err != nil {
		w.T.Fatal(err)
	}
	return st
}

// CheckInvariants reads a consistent snapshot and checks docs/behaviour.md §3.
func CheckInvariants(ctx context.Context, st *state.Store) (state.Snapshot, error) {
	snap, err := st.Snapshot(ctx)
	if err != nil {
		return snap, fmt.Errorf("snapshot: %w", err)
	}
	return snap, state.Check(snap)
}

func (w *World) MustInvariants(st *state.Store) state.Snapshot {
	w.T.Helper()
	snap, err := CheckInvariants(w.Ctx, st)
	if err != nil {
		w.T.Fatalf("invariants broken at seq %d:\n%v", snap.Sequence, err)
	}
	return snap
}

// Invite has from invite to, and fails the test if that is refused.
func (w *World) Invite(from, to *client.Client) protocol.Invitation {
	w.T.Helper()
	ctx, cancel := w.WaitCtx()
	defer cancel()
	inv, err := from.Invite(ctx, ID(to))
	if err != nil {
		w.T.Fatalf("%s invites %s: %v", from.View().Me.Name, to.View().Me.Name, err)
	}
	return inv
}

// Chat has from invite to and to accept; it returns both.
func (w *World) Chat(from, to *client.Client) (protocol.Invitation, protocol.Chat) {
	w.T.Helper()
	inv := w.Invite(from, to)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	chat, err := to.Accept(ctx, inv.ID)
	if err != nil {
		w.T.Fatalf("%s accepts %s: %v", to.View().Me.Name, from.View().Me.Name, err)
	}
	return inv, chat
}

// Latencies records how long the operations of a test took, as a person
// at a tab would measure them (request sent to answer received).
type Latencies struct{ latency.Recorder }

// Report logs the distribution and, when BUDDYTOK_REPORT names a file (as
// scripts/soak-tests does), appends it there as one line. It asserts
// nothing: speed is measured, not tested.
func (l *Latencies) Report(t testing.TB) {
	s := l.Summary()
	if s.Count == 0 {
		return
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
	line := fmt.Sprintf("%s: %d requests, p50 %s, p99 %s, slowest %s", t.Name(), s.Count, ms(s.P50), ms(s.P99), ms(s.Max))
	t.Log(line)
	if path := os.Getenv("BUDDYTOK_REPORT"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Errorf("report: %v", err)
			return
		}
		defer f.Close()
		if _, err := fmt.Fprintln(f, line); err != nil {
			t.Errorf("report: %v", err)
		}
	}
}
