package system_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
	"github.com/buddytok/buddytok/test/kit"
)

// A connection with the edge's NATS permissions (a leaked edge credential)
// can do what an edge does and nothing else: it cannot write the state,
// publish any user's events, remove a user, make a video session, answer
// requests in a service's place, or read another role's replies. Every
// other test of this package runs its services under these permissions
// too, which shows they are enough.
func TestEdgePermissions(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second})
	ann, bob := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(bob), protocol.StateAvailable, ann)

	var mu sync.Mutex
	var denied []string
	nc, err := w.Sys.ConnectAs(permissions.Edge, "test-leaked-edge")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			mu.Lock()
			denied = append(denied, err.Error())
			mu.Unlock()
		}
	})
	isDenied := func(what string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, d := range denied {
			if strings.Contains(d, what) {
				return true
			}
		}
		return false
	}
	deniedSoon := func(op, subject string) {
		t.Helper()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(kit.WaitFor)
		for !isDenied(subject) {
			if time.Now().After(deadline) {
				t.Fatalf("%s %s: not refused by the server", op, subject)
			}
			time.Sleep(10 * time.Millisecond) // the server's refusal arrives asynchronously
		}
	}
	annRec, _, err := w.Store().GetUser(w.Ctx, protocol.Lobby, kit.ID(ann))
	if err != nil {
		t.Fatal(err)
	}
	for _, subject := range []string{
		"$KV." + state.Bucket + "." + state.UserKey(protocol.Lobby, kit.ID(ann)), // write the state
		"$KV." + state.LeaseBucket + "." + annRec.Edge,                           // forge or end Ann's edge's lease
		protocol.EventSubject(protocol.Lobby, kit.ID(ann)),                       // send Ann an event
		protocol.SubjectInvitesLeave,                                             // remove a user
		protocol.SubjectTokensSession,                                            // make a video session
		"$JS.API.STREAM.DELETE.KV_" + state.Bucket,                               // delete the state
		"$JS.API.STREAM.PURGE.KV_" + state.Bucket,
		"$JS.API.STREAM.UPDATE.KV_" + state.Bucket,
	} {
		if err := nc.Publish(subject, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		deniedSoon("publish", subject)
	}
	for _, subject := range []string{
		protocol.SubjectPresenceJoin, // answer joins as presence
		"buddytok.invites.>",         // or invitations
		"_INBOX.>",                   // anyone's replies
		permissions.InboxPrefix(permissions.Presence) + ".>", // presence's replies
		"$KV.>",
	} {
		if _, err := nc.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		deniedSoon("subscribe", subject)
	}
	// With the edge's permissions it may call what edges call, but it can
	// act only for a user whose connection it serves: each request proves
	// that with the user's resume secret, which only that edge holds.
	// Knowing Ann's ID (every buddy list shows it) is not enough.
	ctx, cancel := w.WaitCtx()
	defer cancel()
	forbidden(t, ctx, nc, []call{
		{"invite as Ann, no secret", protocol.SubjectInvitesInvite, protocol.InviteRequest{Room: protocol.Lobby, From: kit.ID(ann), To: kit.ID(bob)}},
		{"invite as Ann, a guessed secret", protocol.SubjectInvitesInvite, protocol.InviteRequest{Room: protocol.Lobby, From: kit.ID(ann), To: kit.ID(bob), Secret: protocol.NewSecret()}},
		{"invite as Ann, Bob's secret", protocol.SubjectInvitesInvite, protocol.InviteRequest{Room: protocol.Lobby, From: kit.ID(ann), To: kit.ID(bob), Secret: bob.View().Secret}},
	})
	// Nothing changed, and the system still serves everyone.
	w.Sees(kit.ID(ann), protocol.StateAvailable, bob)
	inv := w.Invite(ann, bob)
	w.Sees(kit.ID(ann), protocol.StateInviting, bob)
	forbidden(t, ctx, nc, []call{
		{"cancel Ann's invitation as Ann", protocol.SubjectInvitesCancel, protocol.InvitationRequest{Room: protocol.Lobby, UserID: kit.ID(ann), Invitation: inv.ID, Secret: protocol.NewSecret()}},
		{"accept it as Bob", protocol.SubjectInvitesAccept, protocol.InvitationRequest{Room: protocol.Lobby, UserID: kit.ID(bob), Invitation: inv.ID, Secret: ann.View().Secret}},
		{"decline it as Bob", protocol.SubjectInvitesDecline, protocol.InvitationRequest{Room: protocol.Lobby, UserID: kit.ID(bob), Invitation: inv.ID, Secret: protocol.NewSecret()}},
	})
	chat, err := bob.Accept(ctx, inv.ID)
	if err != nil {
		t.Fatal(err)
	}
	forbidden(t, ctx, nc, []call{
		{"Ann's video credentials", protocol.SubjectTokensCredentials, protocol.ChatRequest{Room: protocol.Lobby, UserID: kit.ID(ann), Chat: chat.ID, Secret: protocol.NewSecret()}},
		{"a signal as Ann", protocol.SubjectTokensSignal, protocol.SignalRequest{Room: protocol.Lobby, UserID: kit.ID(ann), Chat: chat.ID, Data: []byte(`{"sdp":"x"}`), Secret: protocol.NewSecret()}},
		{"end the chat as Bob", protocol.SubjectInvitesEnd, protocol.ChatRequest{Room: protocol.Lobby, UserID: kit.ID(bob), Chat: chat.ID, Secret: protocol.NewSecret()}},
	})
	w.Sees(kit.ID(ann), protocol.StateChatting, bob)

	// The state the credential may read shows which edge and connection
	// serve Ann; that does not let it report her gone or move her, which
	// would end her chat after the grace period.
	store, err := state.Open(ctx, nc, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	before, _, err := store.GetUser(ctx, protocol.Lobby, kit.ID(ann))
	if err != nil {
		t.Fatal(err)
	}
	forbidden(t, ctx, nc, []call{
		{"report Ann disconnected, no secret", protocol.SubjectPresenceDisconnect, protocol.DisconnectRequest{Room: protocol.Lobby, UserID: kit.ID(ann), Conn: before.Conn}},
		{"report Ann disconnected, a guessed secret", protocol.SubjectPresenceDisconnect, protocol.DisconnectRequest{Room: protocol.Lobby, UserID: kit.ID(ann), Conn: before.Conn, Secret: protocol.NewSecret()}},
		{"report Ann disconnected, Bob's secret", protocol.SubjectPresenceDisconnect, protocol.DisconnectRequest{Room: protocol.Lobby, UserID: kit.ID(ann), Conn: before.Conn, Secret: bob.View().Secret}},
		{"attach Ann to another edge", protocol.SubjectPresenceAttach, protocol.AttachRequest{Room: protocol.Lobby, UserID: kit.ID(ann), Edge: protocol.NewID(), Conn: protocol.NewID(), Secret: bob.View().Secret}},
	})
	after, _, err := store.GetUser(ctx, protocol.Lobby, kit.ID(ann))
	if err != nil {
		t.Fatal(err)
	}
	if !after.Connected || after.Conn != before.Conn || after.Edge != before.Edge {
		t.Errorf("Ann's record changed: %+v, was %+v", after, before)
	}
	w.Sees(kit.ID(ann), protocol.StateChatting, bob)
}

// call is a request a connection makes, named for the test's messages.
type call struct {
	name    string
	subject string
	req     any
}

// forbidden checks that each call is refused as not acting for its user.
func forbidden(t *testing.T, ctx context.Context, nc *nats.Conn, calls []call) {
	t.Helper()
	for _, c := range calls {
		if err := natsrpc.Call(ctx, nc, c.subject, c.req, nil); protocol.CodeOf(err) != protocol.CodeForbidden {
			t.Errorf("%s: %v, want forbidden", c.name, err)
		}
	}
}
