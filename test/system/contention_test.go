package system_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/services/invites/invites"
	"github.com/buddytok/buddytok/test/kit"
)

// A popular user invited by many people at the same moment: every one of
// those invitations changes the invitee's record, so they contend for one
// key on every replica. Each must still be made (the invitee may hold any
// number), none may be refused as a conflict or time out, and then the
// invitee accepts one and every other inviter is told and freed.
func TestPopularInviteeIsInvitedByEveryoneAtOnce(t *testing.T) {
	t.Parallel()
	const inviters = 100
	w := kit.Start(t, replicated, kit.Settings{Grace: 5e9})
	st := w.Store()
	star := w.Join("Star")
	fans := make([]*client.Client, inviters)
	for i := range fans {
		fans[i] = w.Join(fmt.Sprintf("Fan%02d", i))
	}
	for _, f := range fans {
		w.Sees(kit.ID(star), protocol.StateAvailable, f)
	}
	ctx, cancel := w.WaitCtx()
	defer cancel()
	var took kit.Latencies
	calls := make([]func() error, inviters)
	for i, f := range fans {
		calls[i] = func() error {
			started := time.Now()
			_, err := f.Invite(ctx, kit.ID(star))
			took.Add(time.Since(started))
			return err
		}
	}
	for i, err := range together(calls...) {
		if err != nil {
			t.Errorf("Fan%02d's invitation: %v", i, err)
		}
	}
	took.Report(t)
	if t.Failed() {
		t.FailNow()
	}
	v := w.WaitView(star, "every invitation", func(v client.View) bool { return len(v.Incoming) == inviters })
	w.MustInvariants(st)

	var first string
	for inv := range v.Incoming {
		first = inv
		break
	}
	if _, err := star.Accept(ctx, first); err != nil {
		t.Fatalf("accept: %v", err)
	}
	for _, f := range fans {
		w.WaitView(f, "freed or chatting", func(v client.View) bool { return v.Outgoing == nil })
	}
	snap := w.MustInvariants(st)
	if n := len(snap.Invitations); n != 0 {
		t.Fatalf("%d invitations still pending after the accept", n)
	}
}

// A user holds at most MaxIncoming pending invitations: one more is
// refused with a clear code (so that an accept, which ends all the others
// in one batch, always fits the server's batch limit), and room made by an
// answer can be taken again.
func TestPendingInvitationsAreCapped(t *testing.T) {
	t.Parallel()
	const limit = 3
	w := kit.Start(t, replicated, kit.Settings{Grace: 5e9, Invites: invites.Config{MaxIncoming: limit}})
	star := w.Join("Star")
	fans := make([]*client.Client, limit+2)
	for i := range fans {
		fans[i] = w.Join(fmt.Sprintf("Fan%d", i))
		w.Sees(kit.ID(star), protocol.StateAvailable, fans[i])
	}
	ctx, cancel := w.WaitCtx()
	defer cancel()
	var first protocol.Invitation
	for i, f := range fans {
		inv, err := f.Invite(ctx, kit.ID(star))
		switch {
		case i < limit && err != nil:
			t.Fatalf("invitation %d: %v", i+1, err)
		case i == 0:
			first = inv
		case i >= limit && protocol.CodeOf(err) != protocol.CodeTooManyInvited:
			t.Fatalf("invitation %d over the limit of %d: got %v, want %s", i+1, limit, err, protocol.CodeTooManyInvited)
		}
	}
	if v := fans[limit].View(); v.Me.State != protocol.StateAvailable || v.Outgoing != nil {
		t.Fatalf("a refused inviter must stay available: %+v", v.Me)
	}
	if err := star.Decline(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := fans[limit].Invite(ctx, kit.ID(star)); err != nil {
		t.Fatalf("an invitation after a decline made room: %v", err)
	}
	w.MustInvariants(w.Store())
}

// A user who leaves while holding more invitations than one step of a
// leave ends goes in several steps: every inviter is told and freed, and
// nothing is left behind.
func TestLeaveEndsManyInvitationsInSteps(t *testing.T) {
	t.Parallel()
	const fansN = 7
	w := kit.Start(t, replicated, kit.Settings{Grace: 0, Invites: invites.Config{LeaveBatch: 2}})
	st := w.Store()
	star := w.Join("Star")
	fans := make([]*client.Client, fansN)
	invs := make([]protocol.Invitation, fansN)
	for i := range fans {
		fans[i] = w.Join(fmt.Sprintf("Fan%d", i))
		w.Sees(kit.ID(star), protocol.StateAvailable, fans[i])
		invs[i] = w.Invite(fans[i], star)
	}
	starID := kit.ID(star)
	_ = star.Close()
	for i, f := range fans {
		w.Event(f, "the invitation ends: Star left", kit.IsEnded(invs[i].ID, protocol.ReasonLeft))
		w.WaitView(f, "available again", func(v client.View) bool { return v.Outgoing == nil && v.Me.State == protocol.StateAvailable })
	}
	w.Sees(starID, "", fans...)
	snap := w.MustInvariants(st)
	if n := len(snap.Invitations); n != 0 {
		t.Fatalf("%d invitations left after the leave", n)
	}
}
