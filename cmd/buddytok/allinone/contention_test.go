package allinone_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// A popular user invited by many people at the same moment: every one of
// those invitations changes the invitee's record, so they contend for one
// key on every replica. Each must still be made (the invitee may hold any
// number), none may be refused as a conflict or time out, and then the
// invitee accepts one and every other inviter is told and freed.
func TestPopularInviteeIsInvitedByEveryoneAtOnce(t *testing.T) {
	t.Parallel()
	const inviters = 100
	w := mustWorld(t, replicated, settings{grace: 5e9})
	st := w.store()
	star := w.join("Star")
	fans := make([]*client.Client, inviters)
	for i := range fans {
		fans[i] = w.join(fmt.Sprintf("Fan%02d", i))
	}
	for _, f := range fans {
		w.sees(id(star), protocol.StateAvailable, f)
	}
	ctx, cancel := w.wctx()
	defer cancel()
	var took latencies
	calls := make([]func() error, inviters)
	for i, f := range fans {
		calls[i] = func() error {
			started := time.Now()
			_, err := f.Invite(ctx, id(star))
			took.add(time.Since(started))
			return err
		}
	}
	for i, err := range together(calls...) {
		if err != nil {
			t.Errorf("Fan%02d's invitation: %v", i, err)
		}
	}
	took.report(t)
	if t.Failed() {
		t.FailNow()
	}
	v := w.waitView(star, "every invitation", func(v client.View) bool { return len(v.Incoming) == inviters })
	w.mustInvariants(st)

	var first string
	for inv := range v.Incoming {
		first = inv
		break
	}
	if _, err := star.Accept(ctx, first); err != nil {
		t.Fatalf("accept: %v", err)
	}
	for _, f := range fans {
		w.waitView(f, "freed or chatting", func(v client.View) bool { return v.Outgoing == nil })
	}
	snap := w.mustInvariants(st)
	if n := len(snap.Invitations); n != 0 {
		t.Fatalf("%d invitations still pending after the accept", n)
	}
}
