package system_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/cmd/buddytok/allinone"
	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
	"github.com/buddytok/buddytok/test/kit"
)

// userRecord reads a user's stored record, or reports that it is gone.
func userRecord(w *kit.World, st *state.Store, userID string) (state.User, bool) {
	w.T.Helper()
	ctx, cancel := w.WaitCtx()
	defer cancel()
	u, _, err := st.GetUser(ctx, protocol.Lobby, userID)
	if err != nil {
		return u, false
	}
	return u, true
}

// watchUser delivers every stored revision of a user's record (a deleted
// record as a zero User with ok false).
func watchUser(w *kit.World, st *state.Store, userID string) <-chan state.User {
	w.T.Helper()
	ctx, cancel := context.WithCancel(w.Ctx)
	w.T.Cleanup(cancel)
	kw, err := st.KV().Watch(ctx, state.UserKey(protocol.Lobby, userID), jetstream.UpdatesOnly())
	if err != nil {
		w.T.Fatal(err)
	}
	out := make(chan state.User, 64)
	go func() {
		defer func() { _ = kw.Stop() }()
		for e := range kw.Updates() {
			var u state.User
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				_ = json.Unmarshal(e.Value(), &u)
			}
			select {
			case out <- u:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// A live edge whose lease lapses once (NATS away, the process paused) must
// not lose its users: presence detaches them, and the edge, its sockets
// still open, attaches them again within the grace period. They stay
// online and can act.
func TestLapsedLeaseKeepsOpenSocketsOnline(t *testing.T) {
	t.Parallel()
	const grace = 500 * time.Millisecond
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: grace})
	st := w.Store()
	ann, bob := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(bob), protocol.StateAvailable, ann)
	rec, _ := userRecord(w, st, kit.ID(ann))
	changes := watchUser(w, st, kit.ID(ann))
	leases, err := st.JetStream().KeyValue(w.Ctx, state.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}

	// The lease lapses: it is gone, as if it had expired. Presence detaches
	// the edge's users unless the edge renews it first; try until it has.
	detached := false
	for !detached {
		if err := leases.Delete(w.Ctx, rec.Edge); err != nil {
			t.Fatal(err)
		}
		timeout := time.After(kit.WaitFor)
	wait:
		for {
			select {
			case u := <-changes:
				if u.ID != "" && !u.Connected {
					detached = true
					break wait
				}
			case <-time.After(time.Second):
				break wait // the lease came back before presence noticed; again
			case <-timeout:
				t.Fatal("presence never detached the edge's users")
			}
		}
	}
	ctx, cancel := w.WaitCtx()
	defer cancel()
	for {
		select {
		case u := <-changes:
			if u.ID == "" {
				t.Fatal("Ann was removed while her socket stayed open")
			}
			if !u.Connected {
				continue
			}
		case <-ctx.Done():
			t.Fatal("Ann was never attached again")
		}
		break
	}
	time.Sleep(3 * grace) // past the grace period the detach started
	if u, ok := userRecord(w, st, kit.ID(ann)); !ok || !u.Connected {
		t.Fatalf("Ann after the grace period: online %t, %+v", ok, u)
	}
	w.Invite(ann, bob)
	w.Sees(kit.ID(ann), protocol.StateInviting, bob)
	w.MustInvariants(st)
}

// No open socket may belong to a user who no longer exists: the edge
// closes it with 1001, so that the page reconnects and starts over.
func TestSocketOfARemovedUserIsClosed(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: 5 * time.Second})
	st := w.Store()
	ann, bob := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(bob), protocol.StateAvailable, ann)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	// Removed behind the edge's back, as a leave after a lapsed lease does.
	_, rev, err := st.GetUser(ctx, protocol.Lobby, kit.ID(ann))
	if err != nil {
		t.Fatal(err)
	}
	var txn state.Txn
	txn.Delete(state.UserKey(protocol.Lobby, kit.ID(ann)), rev)
	if err := st.Commit(ctx, &txn); err != nil {
		t.Fatal(err)
	}
	_, _ = ann.WaitView(ctx, func(client.View) bool { return false }) // returns once closed
	if code, closed := ann.CloseCode(); !closed || code != websocket.CloseGoingAway {
		t.Fatalf("Ann's socket: closed %t, code %d; want 1001", closed, code)
	}
	if _, closed := bob.CloseCode(); closed {
		t.Fatal("Bob's socket was closed too")
	}
}

// A user the state says an edge serves through a connection that edge no
// longer has (its disconnect report was lost, or its join timed out at the
// edge and committed after the edge reported it) is a ghost: the edge
// reports it again, with the secret it kept for the ended connection, and
// it leaves after the grace period.
func TestGhostUserOfALiveEdgeLeaves(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: 2 * time.Second})
	st := w.Store()
	ann, bob := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(bob), protocol.StateAvailable, ann)
	bobID := kit.ID(bob)
	updates := watchUser(w, st, bobID)
	_ = bob.Close()
	ctx, cancel := w.WaitCtx()
	defer cancel()
	for detached := false; !detached; {
		select {
		case u := <-updates:
			detached = !u.Connected
		case <-ctx.Done():
			t.Fatal("Bob was never detached")
		}
	}
	// Bob's record as if the report had been lost: attached to the
	// connection that ended.
	u, rev, err := st.GetUser(ctx, protocol.Lobby, bobID)
	if err != nil {
		t.Fatal(err)
	}
	u.Connected, u.DisconnectedAt = true, 0
	var txn state.Txn
	txn.Put(state.UserKey(protocol.Lobby, bobID), rev, u)
	if err := st.Commit(ctx, &txn); err != nil {
		t.Fatal(err)
	}
	w.Sees(bobID, "", ann)
	w.MustInvariants(st)
}

// The grace period is measured on the NATS server's time stamps, not on
// the wall clock of whichever replica wrote the detach: a detach written by
// a replica whose clock runs an hour behind still leaves the user the whole
// grace period to resume.
func TestGraceIgnoresReplicaClocks(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: 5 * time.Second})
	st := w.Store()
	ann := w.Join("Ann")
	annView := ann.View()
	_ = ann.Close()
	ctx, cancel := w.WaitCtx()
	defer cancel()
	var u state.User
	var rev uint64
	for {
		var err error
		u, rev, err = st.GetUser(ctx, protocol.Lobby, annView.Me.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !u.Connected {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("Ann was never detached")
		case <-time.After(10 * time.Millisecond):
		}
	}
	u.DisconnectedAt = time.Now().Add(-time.Hour).UnixMilli()
	var txn state.Txn
	txn.Put(state.UserKey(protocol.Lobby, u.ID), rev, u)
	if err := st.Commit(ctx, &txn); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // many sweeps, well within the grace period
	again := w.Dial()
	if _, err := again.Resume(ctx, annView.Me.ID, annView.Secret); err != nil {
		t.Fatalf("resume within the grace period: %v", err)
	}
}

// What a page must know follows from the state, not from the directed
// events: a change committed without any event (its publisher died right
// after the commit) still reaches both parties' views, through the sync
// frames their edges derive from the state's changes.
func TestChangesReachPagesWithoutTheirEvents(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, replicated, kit.Settings{Grace: 5 * time.Second})
	st := w.Store()
	ann, bob := w.Join("Ann"), w.Join("Bob") // on different edges
	w.Sees(kit.ID(bob), protocol.StateAvailable, ann)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	annRec, annRev, err := st.GetUser(ctx, protocol.Lobby, kit.ID(ann))
	if err != nil {
		t.Fatal(err)
	}
	bobRec, bobRev, err := st.GetUser(ctx, protocol.Lobby, kit.ID(bob))
	if err != nil {
		t.Fatal(err)
	}

	// An invitation, as the invites service commits it; no event follows.
	inv := protocol.Invitation{ID: protocol.NewID(), From: annRec.ID, FromName: annRec.Name, To: bobRec.ID, ToName: bobRec.Name, CreatedAt: time.Now().UnixMilli()}
	annRec.State, annRec.Outgoing = protocol.StateInviting, inv.ID
	bobRec.Incoming = []string{inv.ID}
	var txn state.Txn
	txn.Put(state.InvitationKey(protocol.Lobby, inv.ID), 0, inv)
	txn.Put(state.UserKey(protocol.Lobby, annRec.ID), annRev, annRec)
	txn.Put(state.UserKey(protocol.Lobby, bobRec.ID), bobRev, bobRec)
	if err := st.Commit(ctx, &txn); err != nil {
		t.Fatal(err)
	}
	w.WaitView(ann, "her invitation, with no event", func(v client.View) bool { return v.Outgoing != nil && v.Outgoing.ID == inv.ID })
	w.WaitView(bob, "the invitation, with no event", func(v client.View) bool { _, ok := v.Incoming[inv.ID]; return ok })

	// Bob accepts: the chat starts for both whatever happens to the events.
	if _, err := bob.Accept(ctx, inv.ID); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{ann, bob} {
		w.WaitView(c, "in the chat", func(v client.View) bool {
			return v.Chat != nil && v.Outgoing == nil && len(v.Incoming) == 0
		})
	}

	// The chat ends behind the services' back (as an end whose events
	// were lost): both views follow.
	chatID := ann.View().Chat.ID
	annRec, annRev, _ = st.GetUser(ctx, protocol.Lobby, kit.ID(ann))
	bobRec, bobRev, _ = st.GetUser(ctx, protocol.Lobby, kit.ID(bob))
	_, chatRev, err := st.GetChat(ctx, protocol.Lobby, chatID)
	if err != nil {
		t.Fatal(err)
	}
	var end state.Txn
	end.Delete(state.ChatKey(protocol.Lobby, chatID), chatRev)
	end.Put(state.UserKey(protocol.Lobby, annRec.ID), annRev, annRec.Available())
	end.Put(state.UserKey(protocol.Lobby, bobRec.ID), bobRev, bobRec.Available())
	if err := st.Commit(ctx, &end); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{ann, bob} {
		w.WaitView(c, "out of the chat, with no event", func(v client.View) bool {
			return v.Chat == nil && v.Me.State == protocol.StateAvailable
		})
	}
	w.MustInvariants(st)
}

// An accept while the tokens service is out of reach (restarting) is
// answered unavailable and changes nothing: the invitation stays pending,
// and the same accept succeeds once tokens is back. Only a refusal of the
// video provider itself ends the invitation (video_failed).
func TestAcceptWhileTokensIsDownCanBeRetried(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: 5 * time.Second})
	ann, bob := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(bob), protocol.StateAvailable, ann)
	inv := w.Invite(ann, bob)
	if err := w.Sys.Stop(allinone.Tokens, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := w.WaitCtx()
	defer cancel()
	_, err := bob.Accept(ctx, inv.ID)
	kit.MustCode(t, err, protocol.CodeUnavailable)
	w.WaitView(ann, "still inviting", func(v client.View) bool { return v.Outgoing != nil && v.Outgoing.ID == inv.ID })
	if err := w.Sys.AddReplica(ctx, allinone.Tokens); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Accept(ctx, inv.ID); err != nil {
		t.Fatalf("accept once tokens is back: %v", err)
	}
	for _, c := range []*client.Client{ann, bob} {
		w.WaitView(c, "in the chat", func(v client.View) bool { return v.Chat != nil })
	}
}
