package system_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/test/kit"
)

// The races of docs/behaviour.md §3, each played many times with the racing requests
// sent at once from different connections (on different edges, served by
// different replicas). After every round the state must satisfy the
// invariants and every party must see the same outcome.

const raceRounds = 50

var replicated = kit.Topology{Name: "replicated", Edges: 2, Replicas: 2}

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
	w := kit.Start(t, replicated, kit.Settings{Grace: 5e9, Rapid: true})
	st := w.Store()
	a, b := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(b), protocol.StateAvailable, a)
	wins := map[string]int{}
	for round := range raceRounds {
		ctx, cancel := w.WaitCtx()
		defer cancel()
		inv, err := a.Invite(ctx, kit.ID(b))
		if err != nil {
			t.Fatalf("round %d: invite: %v", round, err)
		}
		w.WaitView(b, "incoming", func(v client.View) bool { _, ok := v.Incoming[inv.ID]; return ok })
		var chat protocol.Chat
		errs := together(
			func() error { return a.Cancel(ctx, inv.ID) },
			func() (err error) { chat, err = b.Accept(ctx, inv.ID); return err },
		)
		cancelled, accepted := errs[0] == nil, errs[1] == nil
		if cancelled == accepted {
			t.Fatalf("round %d: cancel err %v, accept err %v: exactly one must win", round, errs[0], errs[1])
		}
		w.MustInvariants(st)
		if accepted {
			wins["accept"]++
			kit.MustCode(t, errs[0], protocol.CodeNotFound)
			for _, c := range []*client.Client{a, b} {
				w.WaitView(c, "same outcome: chat", func(v client.View) bool {
					return v.Chat != nil && v.Chat.ID == chat.ID && v.Outgoing == nil && len(v.Incoming) == 0
				})
			}
			if err := a.EndChat(ctx, chat.ID); err != nil {
				t.Fatal(err)
			}
		} else {
			wins["cancel"]++
			kit.MustCode(t, errs[1], protocol.CodeNotFound)
		}
		for _, c := range []*client.Client{a, b} {
			w.WaitView(c, "same outcome: both available", func(v client.View) bool {
				return v.Chat == nil && v.Outgoing == nil && len(v.Incoming) == 0 &&
					v.Users[kit.ID(a)].State == protocol.StateAvailable && v.Users[kit.ID(b)].State == protocol.StateAvailable
			})
		}
	}
	t.Logf("winners over %d rounds: %v", raceRounds, wins)
}

func TestRaceDoubleAccept(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, replicated, kit.Settings{Grace: 5e9, Rapid: true})
	st := w.Store()
	a, c, b := w.Join("Ann"), w.Join("Cy"), w.Join("Bob")
	w.Sees(kit.ID(b), protocol.StateAvailable, a, c)
	// Two accepts by the same user at the same moment, as from two tabs
	// or a double click. One connection's frames are handled in order, and
	// a second tab of the same user supersedes the first, so the requests
	// are sent straight to the invites service, as two edges would.
	nc, err := w.Sys.ConnectAs(permissions.Edge, "test-as-an-edge")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for round := range raceRounds {
		ctx, cancel := w.WaitCtx()
		defer cancel()
		ia, err := a.Invite(ctx, kit.ID(b))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		ic, err := c.Invite(ctx, kit.ID(b))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		var chats [2]protocol.Chat
		accept := func(inv string, chat *protocol.Chat) func() error {
			return func() error {
				return natsrpc.Call(ctx, nc, protocol.SubjectInvitesAccept, protocol.InvitationRequest{Room: protocol.Lobby, UserID: kit.ID(b), Invitation: inv, Secret: b.View().Secret}, chat)
			}
		}
		errs := together(accept(ia.ID, &chats[0]), accept(ic.ID, &chats[1]))
		snap := w.MustInvariants(st)
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
			w.WaitView(x, "all available", func(v client.View) bool {
				return v.Chat == nil && v.Outgoing == nil && len(v.Incoming) == 0 &&
					v.Users[kit.ID(a)].State == protocol.StateAvailable && v.Users[kit.ID(c)].State == protocol.StateAvailable &&
					v.Users[kit.ID(b)].State == protocol.StateAvailable
			})
		}
	}
}

// A second tab that resumes a user (a duplicated tab copies its session)
// takes the user over: the first tab's connection is closed with 4001 and
// must not come back; the user stays online through the second.
func TestResumeSupersedesOtherConnection(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, replicated, kit.Settings{Grace: 300e6})
	a, b := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(b), protocol.StateAvailable, a)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	a2 := w.Dial()
	if _, err := a2.Resume(ctx, kit.ID(a), a.View().Secret); err != nil {
		t.Fatal(err)
	}
	_, _ = a.WaitView(ctx, func(client.View) bool { return false }) // returns when closed
	if code, closed := a.CloseCode(); !closed || code != protocol.CloseSuperseded {
		t.Fatalf("first tab: closed %t with %d, want %d", closed, code, protocol.CloseSuperseded)
	}
	// Well past the grace period (a third user's leave shows it), Ann is
	// still online, through her second tab.
	c := w.Join("Cy")
	w.Sees(kit.ID(c), protocol.StateAvailable, b)
	cyID := kit.ID(c)
	_ = c.Close()
	w.Sees(cyID, "", b)
	w.Sees(a2.View().Me.ID, protocol.StateAvailable, b)
	if _, err := a2.Invite(ctx, kit.ID(b)); err != nil {
		t.Fatalf("the second tab cannot act: %v", err)
	}
}

func TestRaceMutualInvite(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, replicated, kit.Settings{Grace: 5e9, Rapid: true})
	st := w.Store()
	a, b := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(b), protocol.StateAvailable, a)
	w.Sees(kit.ID(a), protocol.StateAvailable, b)
	for round := range raceRounds {
		ctx, cancel := w.WaitCtx()
		defer cancel()
		var invs [2]protocol.Invitation
		errs := together(
			func() (err error) { invs[0], err = a.Invite(ctx, kit.ID(b)); return err },
			func() (err error) { invs[1], err = b.Invite(ctx, kit.ID(a)); return err },
		)
		snap := w.MustInvariants(st)
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
			w.WaitView(x, "both available", func(v client.View) bool {
				return v.Users[kit.ID(a)].State == protocol.StateAvailable && v.Users[kit.ID(b)].State == protocol.StateAvailable
			})
		}
	}
}

// The leave races need leaves to happen quickly: no grace period.
func TestRaceLeaves(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, replicated, kit.Settings{Grace: 0, Rapid: true})
	st := w.Store()
	observer := w.Join("Olga")
	for round := range raceRounds {
		ctx, cancel := w.WaitCtx()
		defer cancel()
		// Invitee leaves while the inviter cancels.
		a, b := w.Join("Ann"), w.Join("Bob")
		w.Sees(kit.ID(b), protocol.StateAvailable, a)
		inv := w.Invite(a, b)
		errs := together(
			func() error { return b.Drop() },
			func() error { return a.Cancel(ctx, inv.ID) },
		)
		if errs[1] != nil {
			kit.MustCode(t, errs[1], protocol.CodeNotFound) // the leave won
		}
		w.Sees(kit.ID(b), "", a, observer)
		w.Sees(kit.ID(a), protocol.StateAvailable, a, observer)
		w.MustInvariants(st)

		// Inviter leaves while the invitee accepts.
		c := w.Join("Cy")
		w.Sees(kit.ID(c), protocol.StateAvailable, a)
		inv = w.Invite(a, c)
		w.WaitView(c, "incoming", func(v client.View) bool { return len(v.Incoming) == 1 })
		errs = together(
			func() error { return a.Drop() },
			func() error { _, err := c.Accept(ctx, inv.ID); return err },
		)
		if errs[1] != nil && protocol.CodeOf(errs[1]) != protocol.CodeNotFound {
			t.Fatalf("round %d: accept against a leave: %v", round, errs[1])
		}
		w.Sees(kit.ID(a), "", c, observer)
		w.Sees(kit.ID(c), protocol.StateAvailable, c, observer)
		w.WaitView(c, "no chat, no invitation", func(v client.View) bool { return v.Chat == nil && len(v.Incoming) == 0 })
		w.MustInvariants(st)
		_ = c.Close()
		w.Sees(kit.ID(c), "", observer)
	}
}

func TestNonPartiesAreRefused(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, replicated, kit.Settings{Grace: 5e9, Rapid: true})
	a, b, m := w.Join("Ann"), w.Join("Bob"), w.Join("Mallory")
	w.Sees(kit.ID(m), protocol.StateAvailable, a, b)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	inv := w.Invite(a, b)
	kit.MustCode(t, m.Cancel(ctx, inv.ID), protocol.CodeNotParty)
	kit.MustCode(t, m.Decline(ctx, inv.ID), protocol.CodeNotParty)
	_, err := m.Accept(ctx, inv.ID)
	kit.MustCode(t, err, protocol.CodeNotParty)
	_, err = a.Accept(ctx, inv.ID) // the inviter cannot accept their own invitation
	kit.MustCode(t, err, protocol.CodeNotParty)
	chat, err := b.Accept(ctx, inv.ID)
	if err != nil {
		t.Fatal(err)
	}
	kit.MustCode(t, m.EndChat(ctx, chat.ID), protocol.CodeNotParty)
	_, err = m.Credentials(ctx, chat.ID)
	kit.MustCode(t, err, protocol.CodeNotParty)
	kit.MustCode(t, m.Signal(ctx, chat.ID, []byte(`{"x":1}`)), protocol.CodeNotParty)
	// Mallory cannot resume as Ann, with any secret.
	m2 := w.Dial()
	_, err = m2.Resume(ctx, kit.ID(a), strings.Repeat("a", 64))
	kit.MustCode(t, err, protocol.CodeResumeFailed)
	snap := w.MustInvariants(w.Store())
	if len(snap.Chats) != 1 || snap.Users[kit.ID(a)].State != protocol.StateChatting {
		t.Fatalf("a refused request changed state: %+v", snap)
	}
}
