package allinone_test

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

// waitFor bounds every wait on the system; a test that needs longer has
// found a bug, not a slow machine.
const waitFor = 15 * time.Second

// topology is a shape of the system the flows run on.
type topology struct {
	name            string
	edges, replicas int
}

var topologies = []topology{
	{name: "single", edges: 1, replicas: 1},
	{name: "replicated", edges: 2, replicas: 2},
}

// settings are fast timings for tests: a short grace and lease so that
// leaves happen within a second or two.
type settings struct {
	grace time.Duration
	// rapid lifts the per-connection rate limit, for tests that replay
	// many rounds on one connection far faster than a person could.
	rapid bool
	// video replaces the default (WebRTC) video provider.
	video tokens.Provider
	// logs, if set, receives every log line of the system as JSON.
	logs io.Writer
	// shutdown bounds an edge's shutdown (default waitFor).
	shutdown time.Duration
	// invites replaces the invites service's settings.
	invites invites.Config
	// ping is the edge's keepalive interval (default 5 s).
	ping time.Duration
	// sendQueueBytes bounds the edge's per-socket queue (default the protocol's).
	sendQueueBytes int
	// sendBuffer is each socket's kernel send buffer (default the protocol's).
	sendBuffer int
	// writeTimeout bounds one WebSocket write (default 5 s).
	writeTimeout time.Duration
	// joinTimeout is how long a connection may stay without a user
	// (default the protocol's).
	joinTimeout time.Duration
	// admission replaces the edge's admission limits; by default every
	// test user, all on loopback, may connect and join at any rate.
	admission *admission.Limits
	// noUsersAPI switches GET /api/users off.
	noUsersAPI bool
	// identity makes the edges require identity tokens.
	identity identity.Config
}

// unlimitedAddr lifts the per-address limits: the tests' users all connect
// from one address.
var unlimitedAddr = admission.Limits{ConnsPerAddr: -1, JoinRatePerAddr: -1, PenaltyMax: -1}

func options(top topology, s settings) allinone.Options {
	log := slog.New(slog.DiscardHandler)
	switch {
	case s.logs != nil:
		log = slog.New(requestid.Handler(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	case os.Getenv("BUDDYTOK_TEST_LOG") != "":
		log = slog.New(requestid.Handler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
	admission := unlimitedAddr
	if s.admission != nil {
		admission = *s.admission
	}
	var fps float64
	if s.rapid {
		fps = 10000
	}
	return allinone.Options{
		Log:      log,
		Tokens:   tokens.Config{Provider: s.video},
		Invites:  s.invites,
		Edges:    top.edges,
		Replicas: top.replicas,
		Presence: presence.Config{Grace: s.grace, LeaseTTL: time.Second, SweepEvery: 25 * time.Millisecond, Replicas: 1},
		Edge: edge.Config{
			LeaseTTL: time.Second, PingEvery: cmp.Or(s.ping, 5*time.Second), WriteTimeout: cmp.Or(s.writeTimeout, 5*time.Second),
			RequestTimeout: 10 * time.Second, Replicas: 1, FramesPerSecond: fps, ShutdownTimeout: cmp.Or(s.shutdown, waitFor),
			ReconcileEvery: 100 * time.Millisecond, SendQueueBytes: s.sendQueueBytes, SendBuffer: s.sendBuffer,
			JoinTimeout: s.joinTimeout, Admission: admission, NoUsersAPI: s.noUsersAPI, Identity: s.identity,
		},
	}
}

// world is a running system plus helpers to play users on it.
type world struct {
	t   testing.TB
	sys *allinone.System
	ctx context.Context
	n   atomic.Int64 // tabs dialled, to spread them over the edges
}

func mustWorld(t testing.TB, top topology, s settings) *world {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	opts := options(top, s)
	if dir := os.Getenv("BUDDYTOK_TEST_LOGDIR"); dir != "" && s.logs == nil {
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
	return &world{t: t, sys: sys, ctx: ctx}
}

// wctx is a context for one wait.
func (w *world) wctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(w.ctx, waitFor)
}

// dial connects a new tab to an edge, spreading tabs across edges.
func (w *world) dial() *client.Client {
	w.t.Helper()
	url := w.sys.EdgeURLs[int(w.n.Add(1)-1)%len(w.sys.EdgeURLs)]
	ctx, cancel := w.wctx()
	defer cancel()
	c, err := client.Dial(ctx, url)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = c.Close() })
	return c
}

// join opens a tab and joins as name.
func (w *world) join(name string) *client.Client {
	w.t.Helper()
	c := w.dial()
	ctx, cancel := w.wctx()
	defer cancel()
	if _, err := c.Join(ctx, name); err != nil {
		w.t.Fatalf("join %s: %v", name, err)
	}
	return c
}

func id(c *client.Client) string { return c.View().Me.ID }

// sees waits until every observer's list shows user with the given state
// ("" means: not in the list at all).
func (w *world) sees(user string, st protocol.State, observers ...*client.Client) {
	w.t.Helper()
	for _, o := range observers {
		ctx, cancel := w.wctx()
		_, err := o.WaitView(ctx, func(v client.View) bool {
			u, ok := v.Users[user]
			if st == "" {
				return !ok
			}
			return ok && u.State == st
		})
		cancel()
		if err != nil {
			w.t.Fatalf("%s never saw %s as %q: %v (view %+v)", o.View().Me.Name, user, st, err, o.View().Users[user])
		}
	}
}

// waitView waits for a condition on one client's view.
func (w *world) waitView(c *client.Client, what string, pred func(client.View) bool) client.View {
	w.t.Helper()
	ctx, cancel := w.wctx()
	defer cancel()
	v, err := c.WaitView(ctx, pred)
	if err != nil {
		w.t.Fatalf("%s: %s: %v (view: outgoing %+v incoming %d chat %+v)", c.View().Me.Name, what, err, v.Outgoing, len(v.Incoming), v.Chat)
	}
	return v
}

// event waits for a directed event on c.
func (w *world) event(c *client.Client, what string, pred func(protocol.ServerFrame) bool) protocol.ServerFrame {
	w.t.Helper()
	ctx, cancel := w.wctx()
	defer cancel()
	f, err := c.WaitEvent(ctx, pred)
	if err != nil {
		w.t.Fatalf("%s: %s: %v", c.View().Me.Name, what, err)
	}
	return f
}

func isEnded(invID, reason string) func(protocol.ServerFrame) bool {
	return func(f protocol.ServerFrame) bool {
		return f.Type == protocol.TypeInvitationEnded && f.Invitation.ID == invID && f.Reason == reason
	}
}

// mustCode asserts that err is a protocol error with code.
func mustCode(t testing.TB, err error, code protocol.Code) {
	t.Helper()
	if protocol.CodeOf(err) != code || err == nil {
		t.Fatalf("got error %v, want code %s", err, code)
	}
}

// store opens the state bucket on a fresh connection, for checks.
func (w *world) store() *state.Store {
	w.t.Helper()
	nc, err := w.sys.Connect("test-store")
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(nc.Close)
	st, err := state.Open(w.ctx, nc, state.Options{})
	if err != nil {
		w.t.Fatal(err)
	}
	return st
}

// checkInvariants reads a consistent snapshot and checks docs/behaviour.md §3.
func checkInvariants(ctx context.Context, st *state.Store) (state.Snapshot, error) {
	snap, err := st.Snapshot(ctx)
	if err != nil {
		return snap, fmt.Errorf("snapshot: %w", err)
	}
	return snap, state.Check(snap)
}

func (w *world) mustInvariants(st *state.Store) state.Snapshot {
	w.t.Helper()
	snap, err := checkInvariants(w.ctx, st)
	if err != nil {
		w.t.Fatalf("invariants broken at seq %d:\n%v", snap.Sequence, err)
	}
	return snap
}

// invite has from invite to, and fails the test if that is refused.
func (w *world) invite(from, to *client.Client) protocol.Invitation {
	w.t.Helper()
	ctx, cancel := w.wctx()
	defer cancel()
	inv, err := from.Invite(ctx, id(to))
	if err != nil {
		w.t.Fatalf("%s invites %s: %v", from.View().Me.Name, to.View().Me.Name, err)
	}
	return inv
}

// chat has from invite to and to accept; it returns both.
func (w *world) chat(from, to *client.Client) (protocol.Invitation, protocol.Chat) {
	w.t.Helper()
	inv := w.invite(from, to)
	ctx, cancel := w.wctx()
	defer cancel()
	chat, err := to.Accept(ctx, inv.ID)
	if err != nil {
		w.t.Fatalf("%s accepts %s: %v", to.View().Me.Name, from.View().Me.Name, err)
	}
	return inv, chat
}

// latencies records how long the operations of a test took, as a person
// at a tab would measure them (request sent to answer received).
type latencies struct{ latency.Recorder }

func (l *latencies) add(d time.Duration) { l.Add(d) }

// report logs the distribution and, when BUDDYTOK_REPORT names a file (as
// scripts/soak-tests does), appends it there as one line. It asserts
// nothing: speed is measured, not tested.
func (l *latencies) report(t testing.TB) {
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
