package allinone_test

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
)

// Each flow of docs/behaviour.md §2 runs on every topology; in the replicated one the
// users of a flow sit on different edges and every request may reach any
// service replica.
func TestFlows(t *testing.T) {
	t.Parallel()
	flows := []struct {
		name string
		run  func(t *testing.T, w *world)
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
	for _, top := range topologies {
		t.Run(top.name, func(t *testing.T) {
			t.Parallel()
			for _, f := range flows {
				t.Run(f.name, func(t *testing.T) {
					t.Parallel()
					f.run(t, mustWorld(t, top, settings{grace: 300e6}))
				})
			}
		})
	}
}

func flowJoin(t *testing.T, w *world) {
	a := w.join("Ann")
	v := a.View()
	if len(v.Users) != 1 || v.Me.Name != "Ann" || v.Me.State != protocol.StateAvailable || v.Secret == "" {
		t.Fatalf("alone: view %+v", v)
	}
	b := w.join("Bob")
	w.sees(id(a), protocol.StateAvailable, b)
	w.sees(id(b), protocol.StateAvailable, a)
	if bv := b.View(); len(bv.Users) != 2 {
		t.Fatalf("Bob sees %d users, want 2", len(bv.Users))
	}
}

func flowLiveList(t *testing.T, w *world) {
	alex1 := w.join("Alex")
	zed := w.join("Zed")
	alex2 := w.join("  Alex ")
	w.sees(id(alex2), protocol.StateAvailable, alex1, zed)

	resp, err := http.Get(w.sys.EdgeURLs[len(w.sys.EdgeURLs)-1] + "/api/users")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var users []protocol.User
	if err := json.NewDecoder(resp.Body).Decode(&users); err != nil {
		t.Fatal(err)
	}
	want := []string{id(alex1), id(alex2), id(zed)} // by name, then join time
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
	ctx, cancel := w.wctx()
	defer cancel()
	if _, err := zed.Invite(ctx, id(alex1)); err != nil {
		t.Fatal(err)
	}
	w.sees(id(zed), protocol.StateInviting, alex1, alex2, zed)
}

func flowInvite(t *testing.T, w *world) {
	a, b, c := w.join("Ann"), w.join("Bob"), w.join("Cy")
	w.sees(id(c), protocol.StateAvailable, a, b)
	ctx, cancel := w.wctx()
	defer cancel()
	inv := w.invite(a, b)
	if inv.From != id(a) || inv.To != id(b) || inv.FromName != "Ann" {
		t.Fatalf("invitation = %+v", inv)
	}
	w.sees(id(a), protocol.StateInviting, a, b, c)
	w.sees(id(b), protocol.StateAvailable, a, c) // an invitee stays available
	w.waitView(b, "incoming invitation", func(v client.View) bool { _, ok := v.Incoming[inv.ID]; return ok })

	_, err := a.Invite(ctx, id(c))
	mustCode(t, err, protocol.CodeBusy) // one outgoing invitation at a time
	_, err = c.Invite(ctx, id(a))
	mustCode(t, err, protocol.CodeNotAvailable) // nobody can invite an inviting user
	_, err = a.Invite(ctx, id(a))
	mustCode(t, err, protocol.CodeSelfInvite)
	_, err = c.Invite(ctx, "nosuchuser")
	mustCode(t, err, protocol.CodeNotFound)
	w.mustInvariants(w.store())
}

func flowCancel(t *testing.T, w *world) {
	a, b := w.join("Ann"), w.join("Bob")
	w.sees(id(b), protocol.StateAvailable, a)
	ctx, cancel := w.wctx()
	defer cancel()
	inv := w.invite(a, b)
	w.waitView(b, "incoming", func(v client.View) bool { return len(v.Incoming) == 1 })
	if err := a.Cancel(ctx, inv.ID); err != nil {
		t.Fatal(err)
	}
	w.event(b, "cancel notice", isEnded(inv.ID, protocol.ReasonCancelled))
	w.waitView(b, "invitation gone", func(v client.View) bool { return len(v.Incoming) == 0 })
	w.sees(id(a), protocol.StateAvailable, a, b)
	mustCode(t, a.Cancel(ctx, inv.ID), protocol.CodeNotFound) // already gone
	w.mustInvariants(w.store())
}

func flowReceive(t *testing.T, w *world) {
	a, b, c := w.join("Ann"), w.join("Bob"), w.join("Cy")
	w.sees(id(b), protocol.StateAvailable, a, c)
	ia := w.invite(a, b)
	ic := w.invite(c, b)
	v := w.waitView(b, "two invitations", func(v client.View) bool { return len(v.Incoming) == 2 })
	if v.Incoming[ia.ID].FromName != "Ann" || v.Incoming[ic.ID].FromName != "Cy" || v.Incoming[ia.ID].CreatedAt == 0 {
		t.Fatalf("incoming = %+v", v.Incoming)
	}
}

func flowDecline(t *testing.T, w *world) {
	a, b := w.join("Ann"), w.join("Bob")
	w.sees(id(b), protocol.StateAvailable, a)
	ctx, cancel := w.wctx()
	defer cancel()
	inv := w.invite(a, b)
	w.waitView(b, "incoming", func(v client.View) bool { return len(v.Incoming) == 1 })
	mustCode(t, a.Decline(ctx, inv.ID), protocol.CodeNotParty) // the inviter cannot decline
	if err := b.Decline(ctx, inv.ID); err != nil {
		t.Fatal(err)
	}
	w.event(a, "decline notice", isEnded(inv.ID, protocol.ReasonDeclined))
	w.waitView(a, "outgoing gone", func(v client.View) bool { return v.Outgoing == nil })
	w.waitView(b, "incoming gone", func(v client.View) bool { return len(v.Incoming) == 0 })
	w.sees(id(a), protocol.StateAvailable, a, b)
	w.mustInvariants(w.store())
}

func flowAccept(t *testing.T, w *world) {
	a, b, c, d, e := w.join("Ann"), w.join("Bob"), w.join("Cy"), w.join("Dee"), w.join("Eve")
	w.sees(id(e), protocol.StateAvailable, a, b, c, d)
	ctx, cancel := w.wctx()
	defer cancel()
	ia := w.invite(a, b)
	ic := w.invite(c, b)
	w.waitView(b, "two invitations", func(v client.View) bool { return len(v.Incoming) == 2 })
	// Bob, holding two invitations, invites Dee; Eve invites Dee too.
	ib := w.invite(b, d)
	ie := w.invite(e, d)

	chat, err := b.Accept(ctx, ia.ID)
	if err != nil {
		t.Fatal(err)
	}
	if chat.Parties != [2]string{id(a), id(b)} || chat.Mode != protocol.ModeWebRTC {
		t.Fatalf("chat = %+v", chat)
	}
	for _, u := range []string{id(a), id(b)} {
		w.sees(u, protocol.StateChatting, a, b, c, d, e)
	}
	w.sees(id(c), protocol.StateAvailable, a, b, c, d, e)
	w.event(c, "Cy's invitation declined automatically", isEnded(ic.ID, protocol.ReasonBusy))
	w.event(d, "Bob's invitation cancelled automatically", isEnded(ib.ID, protocol.ReasonCancelled))
	w.waitView(d, "only Eve's invitation left", func(v client.View) bool {
		_, ok := v.Incoming[ie.ID]
		return len(v.Incoming) == 1 && ok
	})
	for _, p := range []*clientPair{{a, true}, {b, false}} {
		w.waitView(p.c, "in the chat", func(v client.View) bool { return v.Chat != nil && v.Chat.ID == chat.ID })
		cred, err := p.c.Credentials(ctx, chat.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cred.ChatID != chat.ID || cred.SessionID == "" || cred.Initiator != p.initiator {
			t.Fatalf("credentials = %+v", cred)
		}
	}
	_, err = c.Credentials(ctx, chat.ID)
	mustCode(t, err, protocol.CodeNotParty) // tokens only for the two parties

	// WebRTC signals reach the other party only.
	if err := a.Signal(ctx, chat.ID, json.RawMessage(`{"sdp":"offer"}`)); err != nil {
		t.Fatal(err)
	}
	sig := w.event(b, "signal", func(f protocol.ServerFrame) bool { return f.Type == protocol.TypeSignal })
	if sig.From != id(a) || string(sig.Data) != `{"sdp":"offer"}` {
		t.Fatalf("signal = %+v", sig)
	}
	mustCode(t, c.Signal(ctx, chat.ID, json.RawMessage(`{}`)), protocol.CodeNotParty)
	w.mustInvariants(w.store())
}

type clientPair struct {
	c         *client.Client
	initiator bool
}

func flowEndChat(t *testing.T, w *world) {
	a, b, c := w.join("Ann"), w.join("Bob"), w.join("Cy")
	w.sees(id(c), protocol.StateAvailable, a, b)
	ctx, cancel := w.wctx()
	defer cancel()
	for round, ender := range []*client.Client{b, a} {
		inv, err := a.Invite(ctx, id(b))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		chat, err := b.Accept(ctx, inv.ID)
		if err != nil {
			t.Fatal(err)
		}
		w.sees(id(a), protocol.StateChatting, a, b, c)
		mustCode(t, c.EndChat(ctx, chat.ID), protocol.CodeNotParty)
		if err := ender.EndChat(ctx, chat.ID); err != nil {
			t.Fatal(err)
		}
		for _, u := range []*client.Client{a, b} {
			w.event(u, "chat ended", func(f protocol.ServerFrame) bool {
				return f.Type == protocol.TypeChatEnded && f.Chat.ID == chat.ID && f.Reason == protocol.ReasonEnded
			})
			w.sees(id(u), protocol.StateAvailable, a, b, c)
		}
	}
	w.mustInvariants(w.store())
}

func flowLeave(t *testing.T, w *world) {
	a, b, c, d := w.join("Ann"), w.join("Bob"), w.join("Cy"), w.join("Dee")
	w.sees(id(d), protocol.StateAvailable, a, b, c)
	// Ann chats with Bob; Cy invites Dee.
	_, chat := w.chat(a, b)
	ic := w.invite(c, d)
	w.sees(id(c), protocol.StateInviting, a, b, d)

	// Ann closes her tab: she disappears and Bob's chat ends.
	annID := id(a)
	_ = a.Close()
	w.sees(annID, "", b, c, d)
	w.event(b, "chat ended by leave", func(f protocol.ServerFrame) bool {
		return f.Type == protocol.TypeChatEnded && f.Chat.ID == chat.ID && f.Reason == protocol.ReasonLeft
	})
	w.sees(id(b), protocol.StateAvailable, b, c, d)

	// Dee loses her network while invited: Cy's invitation ends.
	deeID := id(d)
	_ = d.Drop()
	w.sees(deeID, "", b, c)
	w.event(c, "invitation ended by leave", isEnded(ic.ID, protocol.ReasonLeft))
	w.sees(id(c), protocol.StateAvailable, b, c)

	// Cy invites Bob, then leaves: Bob's invitation disappears.
	ic2 := w.invite(c, b)
	w.waitView(b, "incoming", func(v client.View) bool { return len(v.Incoming) == 1 })
	_ = c.Close()
	w.event(b, "invitation from leaver ended", isEnded(ic2.ID, protocol.ReasonLeft))
	w.waitView(b, "alone", func(v client.View) bool { return len(v.Users) == 1 && len(v.Incoming) == 0 })
	w.mustInvariants(w.store())
}

func flowResume(t *testing.T, w *world) {
	a, b, c := w.join("Ann"), w.join("Bob"), w.join("Cy")
	w.sees(id(c), protocol.StateAvailable, a, b)
	ctx, cancel := w.wctx()
	defer cancel()
	_, chat := w.chat(a, b)
	av := w.waitView(a, "in chat", func(v client.View) bool { return v.Chat != nil })

	// Ann's tab reloads; Cy's closes just after. Cy's leave, once Bob sees
	// it, proves Ann's grace period has run out too.
	_ = a.Drop()
	cyID := id(c)
	_ = c.Drop()
	w.dial() // skip an edge, so the reconnect lands on another one
	a2 := w.dial()
	_, err := a2.Resume(ctx, av.Me.ID, strings.Repeat("0", 64))
	mustCode(t, err, protocol.CodeResumeFailed) // nobody resumes without the secret
	if _, err := a2.Resume(ctx, av.Me.ID, av.Secret); err != nil {
		t.Fatal(err)
	}
	v := a2.View()
	if v.Me.ID != av.Me.ID || v.Chat == nil || v.Chat.ID != chat.ID || v.Me.State != protocol.StateChatting {
		t.Fatalf("resumed view = %+v", v)
	}
	w.sees(cyID, "", b, a2)
	w.sees(av.Me.ID, protocol.StateChatting, b, a2)
	snap := w.mustInvariants(w.store())
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
	w := mustWorld(t, topologies[0], settings{grace: time.Second, video: tokens.WebRTC{IceServers: ice}})
	ann, bob := w.join("Ann"), w.join("Bob")
	w.sees(id(bob), protocol.StateAvailable, ann)
	_, chat := w.chat(ann, bob)
	ctx, cancel := w.wctx()
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
