package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// fault is one failure the system must survive; do injects it and returns
// once the failed part is back.
type fault struct {
	name string
	do   func(sys *system)
}

func faults(sys *system) []fault {
	t := sys.t
	restart := func(p *proc) {
		if err := p.start(); err != nil {
			t.Error(err)
		}
	}
	return []fault{
		{"SIGKILL of a presence, an invites and a tokens replica", func(sys *system) {
			for _, name := range serviceNames {
				sys.services[name][0].kill()
			}
			time.Sleep(2 * time.Second)
			for _, name := range serviceNames {
				restart(sys.services[name][0])
			}
		}},
		{"SIGKILL of an edge", func(sys *system) {
			sys.edges[0].kill()
			time.Sleep(2 * time.Second)
			restart(sys.edges[0].proc)
		}},
		{"SIGTERM of an edge: it drains, its users resume on the others", func(sys *system) {
			// SHUTDOWN_TIMEOUT is 5s, and the lease is dropped in at most 2s more.
			if err := sys.edges[0].stop(10 * time.Second); err != nil {
				t.Error(err)
			}
			restart(sys.edges[0].proc)
		}},
		{"SIGSTOP of an edge past its lease, then SIGCONT", func(sys *system) {
			sys.edges[1].signal(syscall.SIGSTOP)
			time.Sleep(2*leaseTTL + time.Second)
			sys.edges[1].signal(syscall.SIGCONT)
		}},
		{"SIGSTOP of an invites replica past the lease, then SIGCONT", func(sys *system) {
			sys.services[protocol.ServiceInvites][1].signal(syscall.SIGSTOP)
			time.Sleep(2*leaseTTL + time.Second)
			sys.services[protocol.ServiceInvites][1].signal(syscall.SIGCONT)
		}},
		{"SIGSTOP of a presence replica past the lease, then SIGCONT", func(sys *system) {
			sys.services[protocol.ServicePresence][1].signal(syscall.SIGSTOP)
			time.Sleep(2*leaseTTL + time.Second)
			sys.services[protocol.ServicePresence][1].signal(syscall.SIGCONT)
		}},
		{"rolling restart of every service replica by SIGTERM", func(sys *system) {
			nc := sys.connect()
			defer nc.Close()
			for _, name := range serviceNames {
				for _, p := range sys.services[name] {
					if err := p.stop(15 * time.Second); err != nil {
						t.Error(err)
					}
					restart(p)
					for deadline := time.Now().Add(time.Minute); pingService(nc, name) < len(sys.services[name]) && time.Now().Before(deadline); {
						time.Sleep(100 * time.Millisecond)
					}
				}
			}
		}},
		{"SIGKILL of a NATS node", func(sys *system) {
			n := sys.nats[1]
			n.kill()
			time.Sleep(3 * time.Second)
			restart(n.proc)
			if err := n.awaitReady(time.Minute); err != nil {
				t.Error(err)
			}
		}},
		{"silent partition of an edge from NATS past its lease, then healed", func(sys *system) {
			sys.cut(true)
			time.Sleep(2*leaseTTL + 2*time.Second)
			sys.cut(false)
		}},
		{"rolling restart of the NATS cluster", func(sys *system) {
			for _, n := range sys.nats {
				if err := n.stop(30 * time.Second); err != nil {
					t.Error(err)
				}
				restart(n.proc)
				if err := n.awaitReady(time.Minute); err != nil {
					t.Error(err)
				}
				time.Sleep(time.Second)
			}
		}},
	}
}

// TestClusterSurvivesFaults is the promise of the design with real
// processes: any replica serves any user, and losing any one process (or a
// NATS node, or an edge's network) loses nobody. 200 users act at random
// while the faults happen one after another; the invariant checker runs
// throughout. BUDDYTOK_CLUSTER_LONG=10m runs random faults for that long.
func TestClusterSurvivesFaults(t *testing.T) {
	const users = 200
	sys := startSystem(t, 2, 3)
	nc := sys.connect()
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	st := sys.store(ctx, nc)

	tl := newTally()
	loadCtx, stopLoad := context.WithCancel(ctx)
	checkCtx, stopChecks := context.WithCancel(ctx)
	violations := make(chan error, 1)
	checked := make(chan checkResult, 1)
	go func() { checked <- checkThroughout(checkCtx, st, violations) }()

	players := make([]*player, users)
	var wg sync.WaitGroup
	for i := range players {
		players[i] = &player{i: i, rng: rand.New(rand.NewPCG(uint64(i), 7)), urls: sys.edgeURLs(), t: tl}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := players[i]
			for loadCtx.Err() == nil {
				p.step(loadCtx)
				select {
				case <-loadCtx.Done():
				case <-time.After(500*time.Millisecond + time.Duration(p.rng.Int64N(int64(2*time.Second)))):
				}
			}
		}()
	}

	time.Sleep(10 * time.Second) // everyone joined and busy
	var schedule []fault
	all := faults(sys)
	if d, err := time.ParseDuration(os.Getenv("BUDDYTOK_CLUSTER_LONG")); err == nil && d > 0 {
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			f := all[rng.IntN(len(all))]
			runFault(t, sys, tl, f, time.Duration(rng.Int64N(int64(8*time.Second))))
		}
	} else {
		schedule = all
		for _, f := range schedule {
			runFault(t, sys, tl, f, 3*time.Second)
		}
	}
	stopLoad()
	wg.Wait()
	sys.awaitHealthy(2, time.Minute)

	// Every tab comes back and shows exactly the state; every user can act.
	for _, p := range players {
		p.rejoin(t, ctx)
	}
	snap := settle(t, ctx, st)
	// Every tab gets the same 30 s, together: one edge that fell behind
	// fails the test in 30 s with each of its tabs named, not in 30 s a tab.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	var matched sync.WaitGroup
	for _, p := range players {
		matched.Add(1)
		go func() {
			defer matched.Done()
			v, err := p.c.WaitView(wctx, func(v client.View) bool { return v.Differs(snap) == nil })
			if err != nil {
				t.Errorf("player %d (edge %s) never matched the state: %v; last difference: %v", p.i, p.url, err, v.Differs(snap))
			}
		}()
	}
	matched.Wait()
	cancel()
	everyoneCanAct(t, ctx, players)
	for _, name := range serviceNames {
		for _, p := range sys.services[name] {
			checkOps(t, p)
		}
	}

	// Everyone leaves: nothing may stay behind (no ghost, no invitation
	// stuck pending, no chat).
	for _, p := range players {
		_ = p.c.Close()
	}
	empty := awaitEmpty(t, ctx, st, grace+20*time.Second)
	stopChecks()
	res := <-checked
	checks := res.checks
	select {
	case err := <-violations:
		t.Errorf("invariant violated: %v", err)
	default:
	}

	tl.mu.Lock()
	defer tl.mu.Unlock()
	t.Logf("%d users, %d operations (%d refused by races), %d joins, %d resumes, %d invariant checks; after everyone left: %s",
		users, tl.ops, tl.refused, tl.joins, tl.resumes, checks, empty)
	for _, f := range append([]fault{{name: "none"}}, all...) {
		if n, o := tl.retryable[f.name], tl.outages[f.name]; n > 0 || len(o) > 0 {
			slices.Sort(o)
			worst := time.Duration(0)
			if len(o) > 0 {
				worst = o[len(o)-1]
			}
			t.Logf("%-62s retryable failures %4d, resumes after a lost connection %4d, longest %s", f.name, n, len(o), worst.Round(time.Millisecond))
		}
	}
	longest := time.Duration(0)
	for _, o := range tl.outages {
		for _, d := range o {
			longest = max(longest, d)
		}
	}
	report(t, fmt.Sprintf("cluster: %d users, %d operations, %d resumes, %d lost, %d unexpected failures, longest interruption %s, %d invariant checks",
		users, tl.ops, tl.resumes, len(tl.lost), len(tl.unexpected), longest.Round(time.Millisecond), checks))
	for _, s := range tl.lost {
		t.Error("lost: " + s)
	}
	for _, s := range tl.unexpected {
		t.Error("unexpected failure: " + s)
	}
	if checks == 0 {
		t.Errorf("the invariant checker never completed a check (%d snapshots failed, the last with %v)", res.failed, res.last)
	}
}

func runFault(t *testing.T, sys *system, tl *tally, f fault, after time.Duration) {
	t.Logf("fault: %s", f.name)
	tl.setFault(f.name)
	started := time.Now()
	f.do(sys)
	sys.awaitHealthy(2, time.Minute)
	// Let the tabs that lost their connection come back.
	time.Sleep(after)
	t.Logf("  healthy again after %s", time.Since(started).Round(time.Millisecond))
	tl.setFault("none")
}

// checkThroughout checks the invariants on consistent snapshots until ctx
// ends; a snapshot that cannot be read (NATS restarting) is tried again.
type checkResult struct {
	checks, failed int
	last           error
}

func checkThroughout(ctx context.Context, st *state.Store, violations chan<- error) checkResult {
	var res checkResult
	for ctx.Err() == nil {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		snap, err := st.Snapshot(sctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			res.failed++
			res.last = err
		}
		if err == nil {
			if cerr := state.Check(snap); cerr != nil {
				select {
				case violations <- fmt.Errorf("at sequence %d: %w\n%s", snap.Sequence, cerr, evidence(ctx, st, cerr)):
				default:
				}
			}
			res.checks++
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	return res
}

// rejoin makes sure the player is connected, resuming its user.
func (p *player) rejoin(t *testing.T, ctx context.Context) {
	deadline := time.Now().Add(time.Minute)
	for p.c == nil || closed(p.c) {
		if time.Now().After(deadline) {
			t.Fatalf("player %d could not reconnect", p.i)
		}
		p.awayUntil = time.Time{}
		p.c = nil
		p.connect(ctx)
		if p.c == nil {
			time.Sleep(200 * time.Millisecond)
		}
	}
}

func closed(c *client.Client) bool {
	_, cl := c.CloseCode()
	return cl
}

// settle waits until no user is in a grace period and returns that state.
func settle(t *testing.T, ctx context.Context, st *state.Store) state.Snapshot {
	deadline := time.Now().Add(grace + 30*time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		snap, err := st.Snapshot(sctx)
		cancel()
		if err != nil {
			t.Logf("settling: snapshot failed: %v", err)
			if time.Now().After(deadline) {
				t.Fatalf("the state still cannot be read")
			}
		}
		if err == nil {
			detached := 0
			for _, u := range snap.Users {
				if !u.Connected {
					detached++
				}
			}
			if detached == 0 {
				if err := state.Check(snap); err != nil {
					t.Fatalf("invariants: %v", err)
				}
				return snap
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d users still detached", detached)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// everyoneCanAct has every user end what it is in (as a person would: look,
// act, look again), then invite a neighbour who declines: every one of
// these requests must succeed or be refused for a reason the view then
// shows; a retryable failure is retried.
func everyoneCanAct(t *testing.T, ctx context.Context, players []*player) {
	retryable := func(err error) bool {
		return protocol.CodeOf(err) == protocol.CodeUnavailable || errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil
	}
	do := func(p *player, what string, op func(context.Context) error) bool {
		deadline := time.Now().Add(time.Minute)
		for {
			opCtx, cancel := context.WithTimeout(ctx, opTimeout)
			err := op(opCtx)
			cancel()
			if err == nil {
				return true
			}
			if !retryable(err) || time.Now().After(deadline) {
				code, closed := p.c.CloseCode()
				t.Errorf("player %d (%s): %s: %v (socket closed %t, code %d)", p.i, p.userID, what, err, closed, code)
				return false
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	available := func(v client.View) bool {
		return v.Chat == nil && v.Outgoing == nil && len(v.Incoming) == 0 && v.Me.State == protocol.StateAvailable
	}
	// makeAvailable ends whatever p is in. A request the player gave up on
	// during the load may still commit a little later (the edge waits
	// longer than the player did): the page then shows it, and so does the
	// view this acts on.
	makeAvailable := func(p *player) bool {
		deadline := time.Now().Add(time.Minute)
		for v := p.c.View(); !available(v); v = p.c.View() {
			if time.Now().After(deadline) {
				t.Errorf("player %d never became available: %+v", p.i, v)
				return false
			}
			// A refusal (not_found: the other side acted first) is fine:
			// the view shows the outcome in a moment.
			ignoreGone := func(err error) error {
				if protocol.CodeOf(err) == protocol.CodeNotFound {
					return nil
				}
				return err
			}
			ok := true
			switch {
			case v.Chat != nil:
				ok = do(p, "end its chat", func(ctx context.Context) error { return ignoreGone(p.c.EndChat(ctx, v.Chat.ID)) })
			case v.Outgoing != nil:
				ok = do(p, "cancel its invitation", func(ctx context.Context) error { return ignoreGone(p.c.Cancel(ctx, v.Outgoing.ID)) })
			case len(v.Incoming) > 0:
				for id := range v.Incoming {
					ok = do(p, "decline", func(ctx context.Context) error { return ignoreGone(p.c.Decline(ctx, id)) })
					break
				}
			}
			if !ok {
				return false
			}
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, _ = p.c.WaitView(wctx, func(n client.View) bool { return available(n) || viewChanged(v, n) })
			cancel()
		}
		return true
	}
	for _, p := range players {
		makeAvailable(p)
	}
	for i := 0; i+1 < len(players); i += 2 {
		from, to := players[i], players[i+1]
		var inv protocol.Invitation
		invited := false
		for attempt := 0; attempt < 5 && !invited; attempt++ {
			if !makeAvailable(from) || !makeAvailable(to) {
				break
			}
			opCtx, cancel := context.WithTimeout(ctx, opTimeout)
			var err error
			inv, err = from.c.Invite(opCtx, to.c.View().Me.ID)
			cancel()
			switch code := protocol.CodeOf(err); {
			case err == nil:
				invited = true
			case code == protocol.CodeBusy, code == protocol.CodeNotAvailable, retryable(err):
				// A late commit made one of them busy, or NATS hiccupped:
				// look again and retry.
				time.Sleep(200 * time.Millisecond)
			default:
				t.Errorf("player %d (%s): invite its neighbour: %v", from.i, from.userID, err)
				attempt = 5
			}
		}
		if !invited {
			t.Errorf("player %d could not invite player %d", from.i, to.i)
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if _, err := to.c.WaitView(wctx, func(v client.View) bool { _, ok := v.Incoming[inv.ID]; return ok }); err != nil {
			t.Errorf("player %d never saw the invitation: %v", to.i, err)
		}
		cancel()
		// not_found: a request of the load that committed late (an accept
		// of another invitation declines this one) ended it first; the
		// view then no longer shows it.
		do(to, "decline", func(ctx context.Context) error {
			err := to.c.Decline(ctx, inv.ID)
			if protocol.CodeOf(err) == protocol.CodeNotFound {
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				if _, werr := to.c.WaitView(wctx, func(v client.View) bool { _, ok := v.Incoming[inv.ID]; return !ok }); werr == nil {
					return nil
				}
			}
			return err
		})
	}
}

func viewChanged(a, b client.View) bool {
	return (a.Chat == nil) != (b.Chat == nil) || (a.Outgoing == nil) != (b.Outgoing == nil) || len(a.Incoming) != len(b.Incoming)
}

// awaitEmpty waits until the state holds no user, invitation or chat.
func awaitEmpty(t *testing.T, ctx context.Context, st *state.Store, limit time.Duration) string {
	deadline := time.Now().Add(limit)
	started := time.Now()
	for {
		attempt := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		snap, err := st.Snapshot(sctx)
		cancel()
		if err != nil {
			t.Logf("while leaving: snapshot failed after %s: %v", time.Since(attempt).Round(time.Millisecond), err)
			if time.Now().After(deadline) {
				t.Fatalf("after %s the state still cannot be read", limit)
			}
		}
		if err == nil {
			if err := state.Check(snap); err != nil {
				t.Errorf("invariants while leaving: %v", err)
			}
			if len(snap.Users)+len(snap.Invitations)+len(snap.Chats) == 0 {
				return fmt.Sprintf("state empty %s after the last tab closed", time.Since(started).Round(time.Millisecond))
			}
			if time.Now().After(deadline) {
				var ids []string
				for id, u := range snap.Users {
					ids = append(ids, fmt.Sprintf("%s(connected %t edge %s)", id, u.Connected, u.Edge))
				}
				t.Fatalf("after %s: %d users (%s), %d invitations, %d chats remain", limit, len(snap.Users), strings.Join(ids, " "), len(snap.Invitations), len(snap.Chats))
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// report appends a summary line to $BUDDYTOK_REPORT (scripts/soak-tests
// collects them). It asserts nothing.
func report(t *testing.T, line string) {
	t.Log(line)
	path := os.Getenv("BUDDYTOK_REPORT")
	if path == "" {
		return
	}
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

// evidence dumps, right after a violation is seen, the stored history of
// every record the violation names, so that a failed run says whether the
// state was wrong (the bad revisions are there) or the snapshot was.
func evidence(ctx context.Context, st *state.Store, violation error) string {
	var b strings.Builder
	for _, word := range strings.Fields(strings.NewReplacer(`"`, " ", "'", " ", ":", " ").Replace(violation.Error())) {
		if len(word) != 16 || !protocol.ValidID(word) {
			continue
		}
		for _, key := range []string{state.UserKey(protocol.Lobby, word), state.InvitationKey(protocol.Lobby, word), state.ChatKey(protocol.Lobby, word)} {
			hist, err := st.KV().History(ctx, key)
			if err != nil {
				continue
			}
			for _, e := range hist {
				fmt.Fprintf(&b, "  %s rev=%d op=%v at %s %s\n", key, e.Revision(), e.Operation(), e.Created().Format("15:04:05.000"), e.Value())
			}
		}
	}
	return b.String()
}

// checkOps reads a service replica's operator endpoints after the run: it
// is ready, and its metrics count the requests it handled since it last
// started.
func checkOps(t *testing.T, p *proc) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(p.ops + "/readyz")
	if err != nil {
		t.Errorf("%s: /readyz: %v", p.name, err)
		return
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s: /readyz: %s", p.name, resp.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	samples, err := metrics.Scrape(ctx, p.ops)
	if err != nil {
		t.Errorf("%s: /metrics: %v", p.name, err)
		return
	}
	var handled float64
	for sample, v := range samples {
		if strings.HasPrefix(sample, "buddytok_requests_seconds_count{") {
			handled += v
		}
	}
	if handled == 0 {
		t.Errorf("%s: its metrics count no request handled", p.name)
	}
	t.Logf("%s: %g requests handled since it last started", p.name, handled)
}
