package system_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/services/tokens/tokens"
	"github.com/buddytok/buddytok/test/kit"
)

// Each flow of docs/behaviour.md §2 runs on every topology; in the replicated one the
// users of a flow sit on different edges and every request may reach any
// service replica.
func TestFlows(t *testing.T) {
	t.Parallel()
	flows := []struct {
		name string
		run  func(t *testing.T, w *kit.World)
	}{
		{"1-join", flowJoin},
		{"2-live-list", flowLiveList},
		{"3-invite", flowInvite},
		{"4-cancel", flowCancel},
		{"5-receive", flowReceive},
		{"6-decline", flowDecline},
		{"7-accept", flowAccept},
		{"8-end-chat", flowEndChat},
		{"9-leave", flowLeave},
		{"9-resume", flowResume},
	}
	for _, top := range kit.Topologies {
		t.Run(top.Name, func(t *testing.T) {
			t.Parallel()
			for _, f := range flows {
				t.Run(f.name, func(t *testing.T) {
					t.Parallel()
					f.run(t, kit.Start(t, top, kit.Settings{Grace: 300e6}))
				})
			}
		})
	}
}

func flowJoin(t *testing.T, w *kit.World) {
	a := w.Join("Ann")
	v := a.View()
	if len(v.Users) != 1 || v.Me.Name != "Ann" || v.Me.State != protocol.StateAvailable || v.Secret == "" {
		t.Fatalf("alone: view %+v", v)
	}
	b := w.Join("Bob")
	w.Sees(kit.ID(a), protocol.StateAvailable, b)
	w.Sees(kit.ID(b), protocol.StateAvailable, a)
	if bv := b.View(); len(bv.Users) != 2 {
		t.Fatalf("Bob sees %d users, want 2", len(bv.Users))
	}
}

func flowLiveList(t *testing.T, w *kit.World) {
	alex1 := w.Join("Alex")
	zed := w.Join("Zed")
	alex2 := w.Join("  Alex ")
	w.Sees(kit.ID(alex2), protocol.StateAvailable, alex1, zed)

	resp, err := http.Get(w.Sys.EdgeURLs[len(w.Sys.EdgeURLs)-1] + "/api/users")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var users []protocol.User
	if err := json.NewDecoder(resp.Body).Decode(&users); err != nil {
		t.Fatal(err)
	}
	want := []string{kit.ID(alex1), kit.ID(alex2), kit.ID(zed)} // by name, then join time
	if len(users) != 3 {
		t.Fatalf("/api/users = %+v", users)
	}
	for i, u := range users {
		if u.ID != want[i] {
			t.Fatalf("/api/users order = %+v, want IDs %v", users, want)
		}
	}
	if users[0].Name != "Alex" || users[1].Name != "Alex" || users[0].ID == users[1].ID {
		t.Fatalf("two Alexes must be told apart by ID: %+v", users[:2])
	}

	// A state change reaches everyone without reload.
	ctx, cancel := w.WaitCtx()
	defer cancel()
	if _, err := zed.Invite(ctx, kit.ID(alex1)); err != nil {
		t.Fatal(err)
	}
	w.Sees(kit.ID(zed), protocol.StateInviting, alex1, alex2, zed)
}

func flowInvite(t *testing.T, w *kit.World) {
	a, b, c := w.Join("Ann"), w.Join("Bob"), w.Join("Cy")
	w.Sees(kit.ID(c), protocol.StateAvailable, a, b)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	inv := w.Invite(a, b)
	if inv.From != kit.ID(a) || inv.To != kit.ID(b) || inv.FromName != "Ann" {
		t.Fatalf("invitation = %+v", inv)
	}
	w.Sees(kit.ID(a), protocol.StateInviting, a, b, c)
	w.Sees(kit.ID(b), protocol.StateAvailable, a, c) // an invitee stays available
	w.WaitView(b, "incoming invitation", func(v client.View) bool { _, ok := v.Incoming[inv.ID]; return ok })

	_, err := a.Invite(ctx, kit.ID(c))
	kit.MustCode(t, err, protocol.CodeBusy) // one outgoing invitation at a time
	_, err = c.Invite(ctx, kit.ID(a))
	kit.MustCode(t, err, protocol.CodeNotAvailable) // nobody can invite an inviting user
	_, err = a.Invite(ctx, kit.ID(a))
	kit.MustCode(t, err, protocol.CodeSelfInvite)
	_, err = c.Invite(ctx, "nosuchuser")
	kit.MustCode(t, err, protocol.CodeNotInRoom)
	w.MustInvariants(w.Store())
}

func flowCancel(t *testing.T, w *kit.World) {
	a, b := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(b), protocol.StateAvailable, a)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	inv := w.Invite(a, b)
	w.WaitView(b, "incoming", func(v client.View) bool { return len(v.Incoming) == 1 })
	if err := a.Cancel(ctx, inv.ID); err != nil {
		t.Fatal(err)
	}
	w.Event(b, "cancel notice", kit.IsEnded(inv.ID, protocol.ReasonCancelled))
	w.WaitView(b, "invitation gone", func(v client.View) bool { return len(v.Incoming) == 0 })
	w.Sees(kit.ID(a), protocol.StateAvailable, a, b)
	kit.MustCode(t, a.Cancel(ctx, inv.ID), protocol.CodeNotFound) // already gone
	w.MustInvariants(w.Store())
}

func flowReceive(t *testing.T, w *kit.World) {
	a, b, c := w.Join("Ann"), w.Join("Bob"), w.Join("Cy")
	w.Sees(kit.ID(b), protocol.StateAvailable, a, c)
	ia := w.Invite(a, b)
	ic := w.Invite(c, b)
	v := w.WaitView(b, "two invitations", func(v client.View) bool { return len(v.Incoming) == 2 })
	if v.Incoming[ia.ID].FromName != "Ann" || v.Incoming[ic.ID].FromName != "Cy" || v.Incoming[ia.ID].CreatedAt == 0 {
		t.Fatalf("incoming = %+v", v.Incoming)
	}
}

func flowDecline(t *testing.T, w *kit.World) {
	a, b := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(b), protocol.StateAvailable, a)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	inv := w.Invite(a, b)
	w.WaitView(b, "incoming", func(v client.View) bool { return len(v.Incoming) == 1 })
	kit.MustCode(t, a.Decline(ctx, inv.ID), protocol.CodeNotParty) // the inviter cannot decline
	if err := b.Decline(ctx, inv.ID); err != nil {
		t.Fatal(err)
	}
	w.Event(a, "decline notice", kit.IsEnded(inv.ID, protocol.ReasonDeclined))
	w.WaitView(a, "outgoing gone", func(v client.View) bool { return v.Outgoing == nil })
	w.WaitView(b, "incoming gone", func(v client.View) bool { return len(v.Incoming) == 0 })
	w.Sees(kit.ID(a), protocol.StateAvailable, a, b)
	w.MustInvariants(w.Store())
}

func flowAccept(t *testing.T, w *kit.World) {
	a, b, c, d, e := w.Join("Ann"), w.Join("Bob"), w.Join("Cy"), w.Join("Dee"), w.Join("Eve")
	w.Sees(kit.ID(e), protocol.StateAvailable, a, b, c, d)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	ia := w.Invite(a, b)
	ic := w.Invite(c, b)
	w.WaitView(b, "two invitations", func(v client.View) bool { return len(v.Incoming) == 2 })
	// Bob, holding two invitations, invites Dee; Eve invites Dee too.
	ib := w.Invite(b, d)
	ie := w.Invite(e, d)

	chat, err := b.Accept(ctx, ia.ID)
	if err != nil {
		t.Fatal(err)
	}
	if chat.Parties != [2]string{kit.ID(a), kit.ID(b)} || chat.Mode != protocol.ModeWebRTC {
		t.Fatalf("chat = %+v", chat)
	}
	for _, u := range []string{kit.ID(a), kit.ID(b)} {
		w.Sees(u, protocol.StateChatting, a, b, c, d, e)
	}
	w.Sees(kit.ID(c), protocol.StateAvailable, a, b, c, d, e)
	w.Event(c, "Cy's invitation declined automatically", kit.IsEnded(ic.ID, protocol.ReasonBusy))
	w.Event(d, "Bob's invitation cancelled automatically", kit.IsEnded(ib.ID, protocol.ReasonCancelled))
	w.WaitView(d, "only Eve's invitation left", func(v client.View) bool {
		_, ok := v.Incoming[ie.ID]
		return len(v.Incoming) == 1 && ok
	})
	for _, p := range []*clientPair{{a, true}, {b, false}} {
		w.WaitView(p.c, "in the chat", func(v client.View) bool { return v.Chat != nil && v.Chat.ID == chat.ID })
		cred, err := p.c.Credentials(ctx, chat.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cred.ChatID != chat.ID || cred.SessionID == "" || cred.Initiator != p.initiator {
			t.Fatalf("credentials = %+v", cred)
		}
	}
	_, err = c.Credentials(ctx, chat.ID)
	kit.MustCode(t, err, protocol.CodeNotParty) // tokens only for the two parties

	// WebRTC signals reach the other party only.
	if err := a.Signal(ctx, chat.ID, json.RawMessage(`{"sdp":"offer"}`)); err != nil {
		t.Fatal(err)
	}
	sig := w.Event(b, "signal", func(f protocol.ServerFrame) bool { return f.Type == protocol.TypeSignal })
	if sig.From != kit.ID(a) || string(sig.Data) != `{"sdp":"offer"}` {
		t.Fatalf("signal = %+v", sig)
	}
	kit.MustCode(t, c.Signal(ctx, chat.ID, json.RawMessage(`{}`)), protocol.CodeNotParty)
	w.MustInvariants(w.Store())
}

type clientPair struct {
	c         *client.Client
	initiator bool
}

func flowEndChat(t *testing.T, w *kit.World) {
	a, b, c := w.Join("Ann"), w.Join("Bob"), w.Join("Cy")
	w.Sees(kit.ID(c), protocol.StateAvailable, a, b)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	for round, ender := range []*client.Client{b, a} {
		inv, err := a.Invite(ctx, kit.ID(b))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		chat, err := b.Accept(ctx, inv.ID)
		if err != nil {
			t.Fatal(err)
		}
		w.Sees(kit.ID(a), protocol.StateChatting, a, b, c)
		kit.MustCode(t, c.EndChat(ctx, chat.ID), protocol.CodeNotParty)
		if err := ender.EndChat(ctx, chat.ID); err != nil {
			t.Fatal(err)
		}
		for _, u := range []*client.Client{a, b} {
			w.Event(u, "chat ended", func(f protocol.ServerFrame) bool {
				return f.Type == protocol.TypeChatEnded && f.Chat.ID == chat.ID && f.Reason == protocol.ReasonEnded
			})
			w.Sees(kit.ID(u), protocol.StateAvailable, a, b, c)
		}
	}
	w.MustInvariants(w.Store())
}

func flowLeave(t *testing.T, w *kit.World) {
	a, b, c, d := w.Join("Ann"), w.Join("Bob"), w.Join("Cy"), w.Join("Dee")
	w.Sees(kit.ID(d), protocol.StateAvailable, a, b, c)
	// Ann chats with Bob; Cy invites Dee.
	_, chat := w.Chat(a, b)
	ic := w.Invite(c, d)
	w.Sees(kit.ID(c), protocol.StateInviting, a, b, d)

	// Ann closes her tab: she disappears and Bob's chat ends.
	annID := kit.ID(a)
	_ = a.Close()
	w.Sees(annID, "", b, c, d)
	w.Event(b, "chat ended by leave", func(f protocol.ServerFrame) bool {
		return f.Type == protocol.TypeChatEnded && f.Chat.ID == chat.ID && f.Reason == protocol.ReasonLeft
	})
	w.Sees(kit.ID(b), protocol.StateAvailable, b, c, d)

	// Dee loses her network while invited: Cy's invitation ends.
	deeID := kit.ID(d)
	_ = d.Drop()
	w.Sees(deeID, "", b, c)
	w.Event(c, "invitation ended by leave", kit.IsEnded(ic.ID, protocol.ReasonLeft))
	w.Sees(kit.ID(c), protocol.StateAvailable, b, c)

	// Cy invites Bob, then leaves: Bob's invitation disappears.
	ic2 := w.Invite(c, b)
	w.WaitView(b, "incoming", func(v client.View) bool { return len(v.Incoming) == 1 })
	_ = c.Close()
	w.Event(b, "invitation from leaver ended", kit.IsEnded(ic2.ID, protocol.ReasonLeft))
	w.WaitView(b, "alone", func(v client.View) bool { return len(v.Users) == 1 && len(v.Incoming) == 0 })
	w.MustInvariants(w.Store())
}

func flowResume(t *testing.T, w *kit.World) {
	a, b, c := w.Join("Ann"), w.Join("Bob"), w.Join("Cy")
	w.Sees(kit.ID(c), protocol.StateAvailable, a, b)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	_, chat := w.Chat(a, b)
	av := w.WaitView(a, "in chat", func(v client.View) bool { return v.Chat != nil })

	// Ann's tab reloads; Cy's closes just after. Cy's leave, once Bob sees
	// it, proves Ann's grace period has run out too.
	_ = a.Drop()
	cyID := kit.ID(c)
	_ = c.Drop()
	w.Dial() // skip an edge, so the reconnect lands on another one
	a2 := w.Dial()
	_, err := a2.Resume(ctx, av.Me.ID, strings.Repeat("0", 64))
	kit.MustCode(t, err, protocol.CodeResumeFailed) // nobody resumes without the secret
	if _, err := a2.Resume(ctx, av.Me.ID, av.Secret); err != nil {
		t.Fatal(err)
	}
	v := a2.View()
	if v.Me.ID != av.Me.ID || v.Chat == nil || v.Chat.ID != chat.ID || v.Me.State != protocol.StateChatting {
		t.Fatalf("resumed view = %+v", v)
	}
	w.Sees(cyID, "", b, a2)
	w.Sees(av.Me.ID, protocol.StateChatting, b, a2)
	snap := w.MustInvariants(w.Store())
	if u := snap.Users[av.Me.ID]; !u.Connected || u.Chat != chat.ID {
		t.Fatalf("resumed user record = %+v", u)
	}
}

// In WebRTC mode each party's credentials carry the deployment's STUN and
// TURN servers (ICE_SERVERS), for its peer connection.
func TestWebRTCCredentialsCarryIceServers(t *testing.T) {
	t.Parallel()
	ice := []protocol.IceServer{
		{URLs: []string{"stun:stun.example.org:3478"}},
		{URLs: []string{"turn:turn.example.org:3478"}, Username: "u", Credential: "p"},
	}
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second, Video: tokens.WebRTC{IceServers: ice}})
	ann, bob := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(bob), protocol.StateAvailable, ann)
	_, chat := w.Chat(ann, bob)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	for _, c := range []*client.Client{ann, bob} {
		cred, err := c.Credentials(ctx, chat.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cred.Mode != protocol.ModeWebRTC || !reflect.DeepEqual(cred.IceServers, ice) {
			t.Fatalf("credentials %+v, want the ICE servers %+v", cred, ice)
		}
	}
}
