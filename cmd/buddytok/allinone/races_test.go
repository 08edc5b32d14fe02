package allinone_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// The races of docs/behaviour.md §3, each played many times with the racing requests
// sent at once from different connections (on different edges, served by
// different replicas). After every round the state must satisfy the
// invariants and every party must see the same outcome.

const raceRounds = 50

var replicated = topology{name: "replicated", edges: 2, replicas: 2}

// together runs fns at the same moment and returns their errors.
func together(fns ...func() error) []error {
	errs := make([]error, len(fns))
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	for i, fn := range fns {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			errs[i] = fn()
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	return errs
}

func TestRaceCancelVersusAccept(t *testing.T) {
	t.Parallel()
	w := mustWorld(t, replicated, settings{grace: 5e9, rapid: true})
	st := w.store()
	a, b := w.join("Ann"), w.join("Bob")
	w.sees(id(b), protocol.StateAvailable, a)
	wins := map[string]int{}
	for round := range raceRounds {
		ctx, cancel := w.wctx()
		defer cancel()
		inv, err := a.Invite(ctx, id(b))
		if err != nil {
			t.Fatalf("round %d: invite: %v", round, err)
		}
		w.waitView(b, "incoming", func(v client.View) bool { _, ok := v.Incoming[inv.ID]; return ok })
		var chat protocol.Chat
		errs := together(
			func() error { return a.Cancel(ctx, inv.ID) },
			func() (err error) { chat, err = b.Accept(ctx, inv.ID); return err },
		)
		cancelled, accepted := errs[0] == nil, errs[1] == nil
		if cancelled == accepted {
			t.Fatalf("round %d: cancel err %v, accept err %v: exactly one must win", round, errs[0], errs[1])
		}
		w.mustInvariants(st)
		if accepted {
			wins["accept"]++
			mustCode(t, errs[0], protocol.CodeNotFound)
			for _, c := range []*client.Client{a, b} {
				w.waitView(c, "same outcome: chat", func(v client.View) bool {
					return v.Chat != nil && v.Chat.ID == chat.ID && v.Outgoing == nil && len(v.Incoming) == 0
				})
			}
			if err := a.EndChat(ctx, chat.ID); err != nil {
				t.Fatal(err)
			}
		} else {
			wins["cancel"]++
			mustCode(t, errs[1], protocol.CodeNotFound)
		}
		for _, c := range []*client.Client{a, b} {
			w.waitView(c, "same outcome: both available", func(v client.View) bool {
				return v.Chat == nil && v.Outgoing == nil && len(v.Incoming) == 0 &&
					v.Users[id(a)].State == protocol.StateAvailable && v.Users[id(b)].State == protocol.StateAvailable
			})
		}
	}
	t.Logf("winners over %d rounds: %v", raceRounds, wins)
}

func TestRaceDoubleAccept(t *testing.T) {
	t.Parallel()
	w := mustWorld(t, replicated, settings{grace: 5e9, rapid: true})
	st := w.store()
	a, c, b := w.join("Ann"), w.join("Cy"), w.join("Bob")
	w.sees(id(b), protocol.StateAvailable, a, c)
	// Two accepts by the same user at the same moment, as from two tabs
	// or a double click. One connection's frames are handled in order, and
	// a second tab of the same user supersedes the first, so the requests
	// are sent straight to the invites service, as two edges would.
	nc, err := w.sys.ConnectAs(permissions.Edge, "test-as-an-edge")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for round := range raceRounds {
		ctx, cancel := w.wctx()
		defer cancel()
		ia, err := a.Invite(ctx, id(b))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		ic, err := c.Invite(ctx, id(b))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		var chats [2]protocol.Chat
		accept := func(inv string, chat *protocol.Chat) func() error {
			return func() error {
				return natsrpc.Call(ctx, nc, protocol.SubjectInvitesAccept, protocol.InvitationRequest{UserID: id(b), Invitation: inv, Secret: b.View().Secret}, chat)
			}
		}
		errs := together(accept(ia.ID, &chats[0]), accept(ic.ID, &chats[1]))
		snap := w.mustInvariants(st)
		if len(snap.Chats) != 1 {
			t.Fatalf("round %d: %d chats (errors %v)", round, len(snap.Chats), errs)
		}
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("round %d: accept errors %v: exactly one must succeed", round, errs)
		}
		for i, err := range errs {
			if err != nil {
				code := protocol.CodeOf(err)
				if code != protocol.CodeNotFound && code != protocol.CodeBusy {
					t.Fatalf("round %d: losing accept: %v", round, err)
				}
				continue
			}
			if err := b.EndChat(ctx, chats[i].ID); err != nil {
				t.Fatal(err)
			}
		}
		for _, x := range []*client.Client{a, b, c} {
			w.waitView(x, "all available", func(v client.View) bool {
				return v.Chat == nil && v.Outgoing == nil && len(v.Incoming) == 0 &&
					v.Users[id(a)].State == protocol.StateAvailable && v.Users[id(c)].State == protocol.StateAvailable &&
					v.Users[id(b)].State == protocol.StateAvailable
			})
		}
	}
}

// A second tab that resumes a user (a duplicated tab copies its session)
// takes the user over: the first tab's connection is closed with 4001 and
// must not come back; the user stays online through the second.
func TestResumeSupersedesOtherConnection(t *testing.T) {
	t.Parallel()
	w := mustWorld(t, replicated, settings{grace: 300e6})
	a, b := w.join("Ann"), w.join("Bob")
	w.sees(id(b), protocol.StateAvailable, a)
	ctx, cancel := w.wctx()
	defer cancel()
	a2 := w.dial()
	if _, err := a2.Resume(ctx, id(a), a.View().Secret); err != nil {
		t.Fatal(err)
	}
	_, _ = a.WaitView(ctx, func(client.View) bool { return false }) // returns when closed
	if code, closed := a.CloseCode(); !closed || code != protocol.CloseSuperseded {
		t.Fatalf("first tab: closed %t with %d, want %d", closed, code, protocol.CloseSuperseded)
	}
	// Well past the grace period (a third user's leave shows it), Ann is
	// still online, through her second tab.
	c := w.join("Cy")
	w.sees(id(c), protocol.StateAvailable, b)
	cyID := id(c)
	_ = c.Close()
	w.sees(cyID, "", b)
	w.sees(a2.View().Me.ID, protocol.StateAvailable, b)
	if _, err := a2.Invite(ctx, id(b)); err != nil {
		t.Fatalf("the second tab cannot act: %v", err)
	}
}

func TestRaceMutualInvite(t *testing.T) {
	t.Parallel()
	w := mustWorld(t, replicated, settings{grace: 5e9, rapid: true})
	st := w.store()
	a, b := w.join("Ann"), w.join("Bob")
	w.sees(id(b), protocol.StateAvailable, a)
	w.sees(id(a), protocol.StateAvailable, b)
	for round := range raceRounds {
		ctx, cancel := w.wctx()
		defer cancel()
		var invs [2]protocol.Invitation
		errs := together(
			func() (err error) { invs[0], err = a.Invite(ctx, id(b)); return err },
			func() (err error) { invs[1], err = b.Invite(ctx, id(a)); return err },
		)
		snap := w.mustInvariants(st)
		if errs[0] == nil && errs[1] == nil {
			t.Fatalf("round %d: both invitations pending towards each other", round)
		}
		for i, err := range errs {
			if err == nil {
				if err := []*client.Client{a, b}[i].Cancel(ctx, invs[i].ID); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if code := protocol.CodeOf(err); code != protocol.CodeNotAvailable && code != protocol.CodeBusy {
				t.Fatalf("round %d: refused invite has unclear reason: %v", round, err)
			}
		}
		if len(snap.Invitations) > 1 {
			t.Fatalf("round %d: %d invitations", round, len(snap.Invitations))
		}
		for _, x := range []*client.Client{a, b} {
			w.waitView(x, "both available", func(v client.View) bool {
				return v.Users[id(a)].State == protocol.StateAvailable && v.Users[id(b)].State == protocol.StateAvailable
			})
		}
	}
}

// The leave races need leaves to happen quickly: no grace period.
func TestRaceLeaves(t *testing.T) {
	t.Parallel()
	w := mustWorld(t, replicated, settings{grace: 0, rapid: true})
	st := w.store()
	observer := w.join("Olga")
	for round := range raceRounds {
		ctx, cancel := w.wctx()
		defer cancel()
		// Invitee leaves while the inviter cancels.
		a, b := w.join("Ann"), w.join("Bob")
		w.sees(id(b), protocol.StateAvailable, a)
		inv := w.invite(a, b)
		errs := together(
			func() error { return b.Drop() },
			func() error { return a.Cancel(ctx, inv.ID) },
		)
		if errs[1] != nil {
			mustCode(t, errs[1], protocol.CodeNotFound) // the leave won
		}
		w.sees(id(b), "", a, observer)
		w.sees(id(a), protocol.StateAvailable, a, observer)
		w.mustInvariants(st)

		// Inviter leaves while the invitee accepts.
		c := w.join("Cy")
		w.sees(id(c), protocol.StateAvailable, a)
		inv = w.invite(a, c)
		w.waitView(c, "incoming", func(v client.View) bool { return len(v.Incoming) == 1 })
		errs = together(
			func() error { return a.Drop() },
			func() error { _, err := c.Accept(ctx, inv.ID); return err },
		)
		if errs[1] != nil && protocol.CodeOf(errs[1]) != protocol.CodeNotFound {
			t.Fatalf("round %d: accept against a leave: %v", round, errs[1])
		}
		w.sees(id(a), "", c, observer)
		w.sees(id(c), protocol.StateAvailable, c, observer)
		w.waitView(c, "no chat, no invitation", func(v client.View) bool { return v.Chat == nil && len(v.Incoming) == 0 })
		w.mustInvariants(st)
		_ = c.Close()
		w.sees(id(c), "", observer)
	}
}

func TestNonPartiesAreRefused(t *testing.T) {
	t.Parallel()
	w := mustWorld(t, replicated, settings{grace: 5e9, rapid: true})
	a, b, m := w.join("Ann"), w.join("Bob"), w.join("Mallory")
	w.sees(id(m), protocol.StateAvailable, a, b)
	ctx, cancel := w.wctx()
	defer cancel()
	inv := w.invite(a, b)
	mustCode(t, m.Cancel(ctx, inv.ID), protocol.CodeNotParty)
	mustCode(t, m.Decline(ctx, inv.ID), protocol.CodeNotParty)
	_, err := m.Accept(ctx, inv.ID)
	mustCode(t, err, protocol.CodeNotParty)
	_, err = a.Accept(ctx, inv.ID) // the inviter cannot accept their own invitation
	mustCode(t, err, protocol.CodeNotParty)
	chat, err := b.Accept(ctx, inv.ID)
	if err != nil {
		t.Fatal(err)
	}
	mustCode(t, m.EndChat(ctx, chat.ID), protocol.CodeNotParty)
	_, err = m.Credentials(ctx, chat.ID)
	mustCode(t, err, protocol.CodeNotParty)
	mustCode(t, m.Signal(ctx, chat.ID, []byte(`{"x":1}`)), protocol.CodeNotParty)
	// Mallory cannot resume as Ann, with any secret.
	m2 := w.dial()
	_, err = m2.Resume(ctx, id(a), strings.Repeat("a", 64))
	mustCode(t, err, protocol.CodeResumeFailed)
	snap := w.mustInvariants(w.store())
	if len(snap.Chats) != 1 || snap.Users[id(a)].State != protocol.StateChatting {
		t.Fatalf("a refused request changed state: %+v", snap)
	}
}
