package system_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/cmd/buddytok/allinone"
	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
	"github.com/buddytok/buddytok/test/kit"
)

// expectedRefusals are the answers a random operation may legitimately get
// when other users act at the same time. Anything else (internal,
// unavailable, a timeout) fails the test.
var expectedRefusals = []protocol.Code{
	protocol.CodeNotFound, protocol.CodeNotInRoom, protocol.CodeBusy, protocol.CodeNotAvailable,
	protocol.CodeConflict, protocol.CodeNotParty,
}

// player is one random user. It acts only on what its own view shows, like
// a person at a tab would, so its requests race with everyone else's.
type player struct {
	w   *kit.World
	rng *rand.Rand
	c   *client.Client
	// secret and userID of the current user, for resumes after a drop.
	userID, secret string
}

type tally struct {
	ops, refused, resumes, joins atomic.Int64
	took                         kit.Latencies
}

func (p *player) act(ctx context.Context, t *tally) error {
	if p.c == nil {
		return p.connect(ctx, t)
	}
	v := p.c.View()
	var err error
	switch r := p.rng.IntN(100); {
	case r < 3: // the tab closes or the network drops; later it comes back
		if p.rng.IntN(2) == 0 {
			err = p.c.Drop()
		} else {
			err = p.c.Close()
		}
		p.c = nil
		return err
	case v.Chat != nil && r < 35:
		if r < 15 {
			_, err = p.c.Credentials(ctx, v.Chat.ID)
		} else {
			err = p.c.EndChat(ctx, v.Chat.ID)
		}
	case v.Outgoing != nil && r < 40:
		err = p.c.Cancel(ctx, v.Outgoing.ID)
	case len(v.Incoming) > 0 && r < 75:
		ids := slices.Sorted(maps.Keys(v.Incoming))
		inv := ids[p.rng.IntN(len(ids))]
		if r < 55 {
			_, err = p.c.Accept(ctx, inv)
		} else {
			err = p.c.Decline(ctx, inv)
		}
	default:
		var targets []string
		for uid, u := range v.Users {
			if uid != v.Me.ID && u.State == protocol.StateAvailable {
				targets = append(targets, uid)
			}
		}
		if len(targets) == 0 {
			return nil
		}
		slices.Sort(targets)
		_, err = p.c.Invite(ctx, targets[p.rng.IntN(len(targets))])
	}
	t.ops.Add(1)
	if err != nil && slices.Contains(expectedRefusals, protocol.CodeOf(err)) {
		t.refused.Add(1)
		return nil
	}
	return err
}

// maxThink bounds a player's pause between operations; pauses are uniform
// in [0, maxThink). 20 players then offer about 100 operations a second,
// each of which reaches every player's list: about 2,000 frames a second,
// which a two-core machine busy with other test packages still serves
// under -race without a queue that only grows, so kit.Latencies measure the
// system. (The load grows with players squared: 32 players at a 300 ms
// maxThink made 5,000 frames a second, and on a slow CI machine requests
// ran out of their budget. The tests' state stream is a temporary store
// on tmpfs, BenchmarkCommit/store=temporary; on disk a commit of several
// keys costs milliseconds.)
const maxThink = 400 * time.Millisecond

func (p *player) thinkTime() time.Duration {
	return time.Duration(p.rng.Int64N(int64(maxThink)))
}

func (p *player) connect(ctx context.Context, t *tally) error {
	c := p.w.Dial()
	if p.userID != "" && p.rng.IntN(2) == 0 {
		_, err := c.Resume(ctx, p.userID, p.secret)
		switch {
		case err == nil:
			p.c = c
			t.resumes.Add(1)
			return nil
		case protocol.CodeOf(err) != protocol.CodeResumeFailed: // resume_failed: the grace ran out
			return err
		}
	}
	if _, err := c.Join(ctx, fmt.Sprintf("P%d", p.rng.IntN(1000))); err != nil {
		return err
	}
	v := c.View()
	p.c, p.userID, p.secret = c, v.Me.ID, v.Secret
	t.joins.Add(1)
	return nil
}

// checker reads consistent snapshots and checks the invariants until ctx
// ends, and reports how many it checked and the first violation.
func checker(ctx context.Context, st *state.Store) (checks int, err error) {
	for ctx.Err() == nil {
		began := time.Now()
		snap, serr := st.Snapshot(ctx)
		if serr != nil {
			if ctx.Err() != nil {
				break
			}
			return checks, serr
		}
		if cerr := state.Check(snap); cerr != nil {
			var dump strings.Builder
			for _, word := range strings.Fields(strings.NewReplacer(`"`, " ", "'", " ").Replace(cerr.Error())) {
				if len(word) == 16 && protocol.ValidID(word) {
					for _, k := range []string{state.UserKey(protocol.Lobby, word), state.InvitationKey(protocol.Lobby, word), state.ChatKey(protocol.Lobby, word)} {
						dump.WriteString(dumpKey(ctx, st, k))
					}
				}
			}
			return checks, fmt.Errorf("at sequence %d: %w\n%s", snap.Sequence, cerr, dump.String())
		}
		checks++
		// Throttle, so the checker does not starve the system it checks
		// on a two-core CI machine: a snapshot reads the whole stream,
		// which grows during the run, so the pause grows with it and the
		// checker reads at most a third of the time.
		select {
		case <-ctx.Done():
		case <-time.After(max(50*time.Millisecond, 2*time.Since(began))):
		}
	}
	return checks, nil
}

// randomRun plays players for opsEach operations each; midRun, if set,
// runs once when about half of the operations are done.
func randomRun(t *testing.T, w *kit.World, players, opsEach int, seed uint64, midRun func()) {
	st := w.Store()
	ctx, cancel := context.WithTimeout(w.Ctx, 2*time.Minute)
	defer cancel()
	checkCtx, stopChecks := context.WithCancel(ctx)
	type result struct {
		checks int
		err    error
	}
	checked := make(chan result, 1)
	go func() { n, err := checker(checkCtx, st); checked <- result{n, err} }()

	var t0 tally
	var wg sync.WaitGroup
	var once sync.Once
	errs := make(chan error, players)
	half := int64(players * opsEach / 2)
	ps := make([]*player, players)
	for i := range players {
		ps[i] = &player{w: w, rng: rand.New(rand.NewPCG(seed, uint64(i)))}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range opsEach {
				// A person looks before they click: each player pauses
				// between operations, so the run stays a race between
				// people rather than a flood no deployment would see.
				select {
				case <-ctx.Done():
					errs <- fmt.Errorf("player %d op %d: %w", i, n, ctx.Err())
					return
				case <-time.After(ps[i].thinkTime()):
				}
				opCtx, cancelOp := context.WithTimeout(ctx, kit.WaitFor)
				started := time.Now()
				err := ps[i].act(opCtx, &t0)
				t0.took.Add(time.Since(started))
				cancelOp()
				if err != nil {
					errs <- fmt.Errorf("player %d op %d: %w", i, n, err)
					return
				}
				if midRun != nil && t0.ops.Load() >= half {
					once.Do(midRun)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	stopChecks()
	res := <-checked
	if res.err != nil {
		t.Fatalf("invariant checker after %d clean checks: %v", res.checks, res.err)
	}
	t.Logf("%d operations (%d refused as expected), %d joins, %d resumes; %d invariant checks during the run",
		t0.ops.Load(), t0.refused.Load(), t0.joins.Load(), t0.resumes.Load(), res.checks)
	t0.took.Report(t)
	if res.checks == 0 {
		t.Fatal("the checker never completed a check during the run")
	}

	// Once the last grace periods have run out, the state must hold and
	// every connected tab must show exactly what the state says.
	snap := quiesce(w, st)
	for i, p := range ps {
		if p.c == nil {
			continue
		}
		wctx, cancel := w.WaitCtx()
		v, err := p.c.WaitView(wctx, func(v client.View) bool { return v.Differs(snap) == nil })
		cancel()
		if err != nil {
			t.Errorf("player %d (%s) never matched the state: %v; last difference: %v", i, v.Me.ID, err, v.Differs(snap))
		}
	}
}

// quiesce waits until no user is within a grace period (every user
// record is connected), then returns that state, checked.
func quiesce(w *kit.World, st *state.Store) state.Snapshot {
	w.T.Helper()
	ctx, cancel := w.WaitCtx()
	defer cancel()
	watch, err := st.KV().WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		w.T.Fatal(err)
	}
	defer func() { _ = watch.Stop() }()
	for {
		snap := w.MustInvariants(st)
		settled := true
		for _, u := range snap.Users {
			settled = settled && u.Connected
		}
		if settled {
			return snap
		}
		select {
		case <-ctx.Done():
			w.T.Fatalf("users still detached after %s", kit.WaitFor)
		case <-watch.Updates():
		}
	}
}

// The random runs are not parallel: each offers a steady load and its
// operations must finish within their budget, so each runs alone in this
// package (parallel tests start once the serial ones are done), not
// beside another load on a two-core machine.

func TestRandomOperationsKeepInvariants(t *testing.T) {
	w := kit.Start(t, replicated, kit.Settings{Grace: 300 * time.Millisecond})
	randomRun(t, w, 20, 160, 1, nil)
}

// Stopping one replica of every service in the middle of a run must not
// fail a single request: the other replicas take over.
func TestReplicaStopMidRun(t *testing.T) {
	w := kit.Start(t, replicated, kit.Settings{Grace: 300 * time.Millisecond})
	randomRun(t, w, 16, 80, 2, func() {
		for _, k := range []allinone.Kind{allinone.Presence, allinone.Invites, allinone.Tokens} {
			if err := w.Sys.Stop(k, 0); err != nil {
				t.Errorf("stop %s: %v", k, err)
			}
		}
	})
}
