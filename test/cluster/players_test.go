package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// refusals are answers a random operation may get because other users act
// at the same moment; they change nothing and are not failures.
var refusals = []protocol.Code{
	protocol.CodeNotFound, protocol.CodeNotInRoom, protocol.CodeBusy, protocol.CodeNotAvailable,
	protocol.CodeConflict, protocol.CodeNotParty, protocol.CodeTooManyInvited,
}

// tally counts what the players met, by the fault under way.
type tally struct {
	mu         sync.Mutex
	ops        int
	refused    int
	retryable  map[string]int // fault -> requests that failed in a way worth retrying
	joins      int
	resumes    int
	lost       []string                   // users whose resume was refused: lost
	unexpected []string                   // failures that are not retryable
	outages    map[string][]time.Duration // fault -> time from losing a connection to resuming
	fault      string                     // the fault under way, if any
}

func newTally() *tally {
	return &tally{retryable: map[string]int{}, outages: map[string][]time.Duration{}, fault: "none"}
}

func (t *tally) setFault(name string) {
	t.mu.Lock()
	t.fault = name
	t.mu.Unlock()
}

func (t *tally) add(f func(t *tally)) {
	t.mu.Lock()
	f(t)
	t.mu.Unlock()
}

// player is one simulated person at a tab: it acts on what its view shows,
// and when its connection fails it does what the page does: reconnect to
// an edge and resume with its secret.
type player struct {
	i    int
	rng  *rand.Rand
	urls []string
	t    *tally

	c              *client.Client
	url            string // the edge c is connected to
	userID, secret string
	downSince      time.Time // when the connection was lost; zero while connected
	awayUntil      time.Time // a person who closed the tab comes back then
	owes           bool      // a request failed retryably and nothing succeeded since
}

const opTimeout = 6 * time.Second

// step makes one move: reconnect if needed, else one random operation.
func (p *player) step(ctx context.Context) {
	if p.c != nil {
		if _, closed := p.c.CloseCode(); closed {
			p.lose()
		}
	}
	if p.c == nil {
		if time.Now().Before(p.awayUntil) {
			return
		}
		p.connect(ctx)
		return
	}
	opCtx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	v := p.c.View()
	var err error
	switch r := p.rng.IntN(100); {
	case r < 2: // the tab closes or the network drops; the person comes back
		if p.rng.IntN(2) == 0 {
			_ = p.c.Drop()
		} else {
			_ = p.c.Close()
		}
		p.c = nil
		p.awayUntil = time.Now().Add(time.Duration(p.rng.Int64N(int64(3 * time.Second))))
		return
	case v.Chat != nil && r < 40:
		if r < 20 {
			_, err = p.c.Credentials(opCtx, v.Chat.ID)
		} else {
			err = p.c.EndChat(opCtx, v.Chat.ID)
		}
	case v.Outgoing != nil && r < 45:
		err = p.c.Cancel(opCtx, v.Outgoing.ID)
	case len(v.Incoming) > 0 && r < 80:
		ids := slices.Sorted(maps.Keys(v.Incoming))
		inv := ids[p.rng.IntN(len(ids))]
		if r < 60 {
			_, err = p.c.Accept(opCtx, inv)
		} else {
			err = p.c.Decline(opCtx, inv)
		}
	default:
		var targets []string
		for uid, u := range v.Users {
			if uid != v.Me.ID && u.State == protocol.StateAvailable {
				targets = append(targets, uid)
			}
		}
		if len(targets) == 0 {
			return
		}
		slices.Sort(targets)
		_, err = p.c.Invite(opCtx, targets[p.rng.IntN(len(targets))])
	}
	p.outcome(ctx, err)
}

// outcome files the result of one request.
func (p *player) outcome(ctx context.Context, err error) {
	code := protocol.CodeOf(err)
	switch {
	case err == nil:
		p.owes = false
		p.t.add(func(t *tally) { t.ops++ })
	case slices.Contains(refusals, code):
		p.owes = false
		p.t.add(func(t *tally) { t.ops++; t.refused++ })
	case code == protocol.CodeUnavailable:
		p.owes = true
		p.t.add(func(t *tally) { t.ops++; t.retryable[t.fault]++ })
	case errors.Is(err, client.ErrClosed), errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil,
		!errors.As(err, new(*protocol.Error)) && ctx.Err() == nil:
		// No answer, or the socket failed (a write timed out): the edge
		// is gone, paused or cut off. Do what the page does: drop the
		// socket, reconnect and resume.
		p.owes = true
		p.t.add(func(t *tally) { t.ops++; t.retryable[t.fault]++ })
		_ = p.c.Drop()
		p.lose()
	case ctx.Err() != nil:
	default:
		p.t.add(func(t *tally) {
			t.ops++
			t.unexpected = append(t.unexpected, fmt.Sprintf("player %d (%s) during %q: %v", p.i, p.userID, t.fault, err))
		})
	}
}

func (p *player) lose() {
	if p.c != nil {
		_ = p.c.Drop()
	}
	p.c = nil
	if p.downSince.IsZero() {
		p.downSince = time.Now()
	}
}

// connect reconnects to a random edge and resumes the player's user, or
// joins as a new one.
func (p *player) connect(ctx context.Context) {
	opCtx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	url := p.urls[p.rng.IntN(len(p.urls))]
	c, err := client.Dial(opCtx, url)
	if err != nil {
		return // that edge is down: another next time
	}
	if p.userID != "" {
		_, err := c.Resume(opCtx, p.userID, p.secret)
		switch code := protocol.CodeOf(err); {
		case err == nil:
			p.c, p.url, p.owes = c, url, false
			down := p.downSince
			p.downSince = time.Time{}
			p.t.add(func(t *tally) {
				t.resumes++
				if !down.IsZero() {
					t.outages[t.fault] = append(t.outages[t.fault], time.Since(down))
				}
			})
			return
		case code == protocol.CodeResumeFailed:
			p.t.add(func(t *tally) {
				t.lost = append(t.lost, fmt.Sprintf("player %d: user %s could not resume during %q", p.i, p.userID, t.fault))
			})
			p.userID = ""
		default: // unavailable, no answer: keep the secret, try again
			p.owes = true
			p.t.add(func(t *tally) { t.retryable[t.fault]++ })
			_ = c.Drop()
			return
		}
	}
	if _, err := c.Join(opCtx, fmt.Sprintf("P%03d", p.i)); err != nil {
		p.owes = true
		p.t.add(func(t *tally) { t.retryable[t.fault]++ })
		_ = c.Drop()
		return
	}
	v := c.View()
	p.c, p.url, p.userID, p.secret, p.owes, p.downSince = c, url, v.Me.ID, v.Secret, false, time.Time{}
	p.t.add(func(t *tally) { t.joins++ })
}
