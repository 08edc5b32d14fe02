package invites_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
	"github.com/buddytok/buddytok/services/invites/invites"
	"github.com/buddytok/buddytok/services/tokens/tokens"
)

// rig is an invites replica and a tokens replica on an embedded NATS with
// the roles' users, and the state they share. Requests go as the roles that
// make them: an edge's for a user's own acts, presence's for a leave.
type rig struct {
	t        testing.TB
	ctx      context.Context
	edge     *nats.Conn
	presence *nats.Conn
	store    *state.Store
	secrets  map[string]string // by user ID
}

func newRig(t testing.TB, cfg invites.Config) *rig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	roles := natstest.StartRoles(t)
	natstest.Run(t, natstest.NewReplica(t, roles, invites.Program, cfg), natstest.NewReplica(t, roles, tokens.Program, tokens.Config{}))
	store, err := state.Open(ctx, roles.Admin(), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, ctx: ctx, edge: roles.As(permissions.Edge), presence: roles.As(permissions.Presence),
		store: store, secrets: map[string]string{}}
}

// join puts available users with these IDs (and names) in the state, as
// presence would.
func (r *rig) join(ids ...string) {
	r.t.Helper()
	var txn state.Txn
	for _, id := range ids {
		r.secrets[id] = protocol.NewSecret()
		txn.Put(state.UserKey(protocol.Lobby, id), 0, state.User{Room: protocol.Lobby, ID: id, Name: "N" + id, State: protocol.StateAvailable,
			SecretHash: state.HashSecret(r.secrets[id]), Edge: "edge1", Conn: "c" + id, Connected: true})
	}
	if err := r.store.Commit(r.ctx, &txn); err != nil {
		r.t.Fatal(err)
	}
}

// detach marks a user's connection ended, as presence does when its
// grace period starts.
func (r *rig) detach(id string) {
	r.t.Helper()
	u, rev, err := r.store.GetUser(r.ctx, protocol.Lobby, id)
	if err != nil {
		r.t.Fatal(err)
	}
	u.Connected, u.DisconnectedAt = false, time.Now().UnixMilli()
	var txn state.Txn
	txn.Put(state.UserKey(protocol.Lobby, id), rev, u)
	if err := r.store.Commit(r.ctx, &txn); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) call(nc *nats.Conn, subject string, req, resp any) error {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	return natsrpc.Call(ctx, nc, subject, req, resp)
}

func (r *rig) invite(from, to string) (protocol.Invitation, error) {
	var inv protocol.Invitation
	err := r.call(r.edge, protocol.SubjectInvitesInvite, protocol.InviteRequest{Room: protocol.Lobby, From: from, To: to, Secret: r.secrets[from]}, &inv)
	return inv, err
}

// mustInvite has from invite to, and returns the invitation's ID.
func (r *rig) mustInvite(from, to string) string {
	r.t.Helper()
	inv, err := r.invite(from, to)
	if err != nil {
		r.t.Fatalf("%s invites %s: %v", from, to, err)
	}
	return inv.ID
}

// act is a user's act on an invitation (cancel, decline, accept) or a
// chat (end).
func (r *rig) act(subject, user, id string) error {
	var req any = protocol.InvitationRequest{Room: protocol.Lobby, UserID: user, Invitation: id, Secret: r.secrets[user]}
	var resp any
	switch subject {
	case protocol.SubjectInvitesEnd:
		req = protocol.ChatRequest{Room: protocol.Lobby, UserID: user, Chat: id, Secret: r.secrets[user]}
	case protocol.SubjectInvitesAccept:
		resp = &protocol.Chat{}
	}
	return r.call(r.edge, subject, req, resp)
}

func (r *rig) mustAccept(user, inv string) protocol.Chat {
	r.t.Helper()
	var chat protocol.Chat
	err := r.call(r.edge, protocol.SubjectInvitesAccept, protocol.InvitationRequest{Room: protocol.Lobby, UserID: user, Invitation: inv, Secret: r.secrets[user]}, &chat)
	if err != nil {
		r.t.Fatalf("%s accepts %s: %v", user, inv, err)
	}
	return chat
}

// state reads the whole state, and fails the test if it breaks an
// invariant (docs/behaviour.md §3).
func (r *rig) state() state.Snapshot {
	r.t.Helper()
	snap, err := r.store.Snapshot(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := state.Check(snap); err != nil {
		r.t.Fatalf("invariants broken: %v", err)
	}
	return snap
}

// is fails the test unless user id is in state st, with the outgoing
// invitation, incoming invitations and chat given ("" and nil: none).
func (r *rig) is(snap state.Snapshot, id string, st protocol.State, outgoing string, incoming []string, chat string) {
	r.t.Helper()
	u, ok := snap.Users[id]
	if !ok {
		r.t.Fatalf("%s is not online", id)
	}
	if u.State != st || u.Outgoing != outgoing || !slices.Equal(u.Incoming, incoming) || u.Chat != chat {
		r.t.Fatalf("%s: %s, outgoing %q, incoming %q, chat %q; want %s, %q, %q, %q",
			id, u.State, u.Outgoing, u.Incoming, u.Chat, st, outgoing, incoming, chat)
	}
}

// An invitation makes its inviter inviting and joins the invitee's
// incoming ones; the invitee stays available and may hold several.
func TestInvite(t *testing.T) {
	t.Parallel()
	r := newRig(t, invites.Config{})
	r.join("ann", "bob", "cat")
	i1 := r.mustInvite("ann", "bob")
	i2 := r.mustInvite("cat", "bob")
	snap := r.state()
	r.is(snap, "ann", protocol.StateInviting, i1, nil, "")
	r.is(snap, "cat", protocol.StateInviting, i2, nil, "")
	r.is(snap, "bob", protocol.StateAvailable, "", []string{i1, i2}, "")
	if inv := snap.Invitations[i1]; inv.From != "ann" || inv.To != "bob" || inv.FromName != "Nann" || inv.CreatedAt == 0 {
		t.Fatalf("invitation %+v", inv)
	}
}

// Every invitation the rules refuse, with the code that says why; nothing
// changes.
func TestInviteRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		setup    func(r *rig)
		from, to string
		secret   string // instead of from's own
		code     protocol.Code
	}{
		{"oneself", nil, "ann", "ann", "", protocol.CodeSelfInvite},
		{"someone not in the room", nil, "ann", "zed", "", protocol.CodeNotInRoom},
		{"without the inviter's secret", nil, "ann", "bob", protocol.NewSecret(), protocol.CodeForbidden},
		{"while inviting", func(r *rig) { r.mustInvite("ann", "cat") }, "ann", "bob", "", protocol.CodeBusy},
		{"while chatting", func(r *rig) { r.mustAccept("cat", r.mustInvite("ann", "cat")) }, "ann", "bob", "", protocol.CodeBusy},
		{"someone inviting", func(r *rig) { r.mustInvite("bob", "cat") }, "ann", "bob", "", protocol.CodeNotAvailable},
		{"someone chatting", func(r *rig) { r.mustAccept("cat", r.mustInvite("bob", "cat")) }, "ann", "bob", "", protocol.CodeNotAvailable},
		{"back, while invited", func(r *rig) { r.mustInvite("bob", "ann") }, "ann", "bob", "", protocol.CodeNotAvailable},
		{"someone holding as many as allowed", func(r *rig) { r.mustInvite("cat", "bob"); r.mustInvite("dan", "bob") }, "ann", "bob", "", protocol.CodeTooManyInvited},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, invites.Config{MaxIncoming: 2})
			r.join("ann", "bob", "cat", "dan")
			if tc.setup != nil {
				tc.setup(r)
			}
			before := r.state()
			if tc.secret != "" {
				r.secrets[tc.from] = tc.secret
			}
			_, err := r.invite(tc.from, tc.to)
			natstest.WantCode(t, err, tc.code)
			after := r.state()
			if len(after.Invitations) != len(before.Invitations) || after.Users["ann"].State != before.Users["ann"].State {
				t.Fatalf("a refused invitation changed the state: %d invitations, ann %s", len(after.Invitations), after.Users["ann"].State)
			}
		})
	}
}

// Each answer to an invitation, by the party allowed to give it, and what
// it leaves: cancel and decline make both available and the invitation
// gone; accept puts both in one chat; ending the chat makes both available.
func TestAnswers(t *testing.T) {
	t.Parallel()
	r := newRig(t, invites.Config{})
	r.join("ann", "bob")

	inv := r.mustInvite("ann", "bob")
	if err := r.act(protocol.SubjectInvitesCancel, "ann", inv); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	snap := r.state()
	r.is(snap, "ann", protocol.StateAvailable, "", nil, "")
	r.is(snap, "bob", protocol.StateAvailable, "", nil, "")
	if len(snap.Invitations) != 0 {
		t.Fatalf("cancelled, yet %d invitations", len(snap.Invitations))
	}

	inv = r.mustInvite("ann", "bob")
	if err := r.act(protocol.SubjectInvitesDecline, "bob", inv); err != nil {
		t.Fatalf("decline: %v", err)
	}
	snap = r.state()
	r.is(snap, "ann", protocol.StateAvailable, "", nil, "")
	r.is(snap, "bob", protocol.StateAvailable, "", nil, "")

	inv = r.mustInvite("ann", "bob")
	chat := r.mustAccept("bob", inv)
	snap = r.state()
	r.is(snap, "ann", protocol.StateChatting, "", nil, chat.ID)
	r.is(snap, "bob", protocol.StateChatting, "", nil, chat.ID)
	if chat.Parties != [2]string{"ann", "bob"} || chat.Mode != protocol.ModeWebRTC || len(snap.Invitations) != 0 {
		t.Fatalf("chat %+v, %d invitations left", chat, len(snap.Invitations))
	}

	if err := r.act(protocol.SubjectInvitesEnd, "ann", chat.ID); err != nil {
		t.Fatalf("end: %v", err)
	}
	snap = r.state()
	r.is(snap, "ann", protocol.StateAvailable, "", nil, "")
	r.is(snap, "bob", protocol.StateAvailable, "", nil, "")
	if len(snap.Chats) != 0 {
		t.Fatalf("ended, yet %d chats", len(snap.Chats))
	}
}

// Every answer the rules refuse, with its code: only the inviter cancels,
// only the invitee declines or accepts, only a party ends a chat, and an
// invitation or chat that is gone is gone.
func TestAnswerRefusals(t *testing.T) {
	t.Parallel()
	r := newRig(t, invites.Config{})
	r.join("ann", "bob", "cat", "dan")
	inv := r.mustInvite("ann", "bob")
	chat := r.mustAccept("dan", r.mustInvite("cat", "dan"))
	tests := []struct {
		name    string
		subject string
		user    string
		id      string
		code    protocol.Code
	}{
		{"the invitee cancels", protocol.SubjectInvitesCancel, "bob", inv, protocol.CodeNotParty},
		{"someone else cancels", protocol.SubjectInvitesCancel, "cat", inv, protocol.CodeNotParty},
		{"the inviter declines", protocol.SubjectInvitesDecline, "ann", inv, protocol.CodeNotParty},
		{"the inviter accepts", protocol.SubjectInvitesAccept, "ann", inv, protocol.CodeNotParty},
		{"someone else accepts", protocol.SubjectInvitesAccept, "dan", inv, protocol.CodeNotParty},
		{"someone else ends a chat", protocol.SubjectInvitesEnd, "ann", chat.ID, protocol.CodeNotParty},
		{"cancel what does not exist", protocol.SubjectInvitesCancel, "ann", protocol.NewID(), protocol.CodeNotFound},
		{"accept what does not exist", protocol.SubjectInvitesAccept, "bob", protocol.NewID(), protocol.CodeNotFound},
		{"end what does not exist", protocol.SubjectInvitesEnd, "cat", protocol.NewID(), protocol.CodeNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			natstest.WantCode(t, r.act(tc.subject, tc.user, tc.id), tc.code)
		})
	}
	secret := r.secrets["bob"]
	r.secrets["bob"] = protocol.NewSecret()
	natstest.WantCode(t, r.act(protocol.SubjectInvitesAccept, "bob", inv), protocol.CodeForbidden)
	r.secrets["bob"] = secret
	snap := r.state()
	r.is(snap, "ann", protocol.StateInviting, inv, nil, "")
	r.is(snap, "bob", protocol.StateAvailable, "", []string{inv}, "")
	r.is(snap, "cat", protocol.StateChatting, "", nil, chat.ID)
}

// Accepting one invitation declines every other the accepter held (their
// inviters are told it is busy) and cancels the accepter's own; so too the
// invitations the inviter held.
func TestAcceptDeclinesTheRest(t *testing.T) {
	t.Parallel()
	r := newRig(t, invites.Config{})
	r.join("ann", "bob", "cat", "dan", "eve", "fay")
	toAnn := r.mustInvite("eve", "ann") // the inviter holds one too
	fromAnn := r.mustInvite("ann", "bob")
	fromCat := r.mustInvite("cat", "bob")
	bobsOwn := r.mustInvite("bob", "dan")
	told, err := r.edge.SubscribeSync(protocol.EventSubject(protocol.Lobby, "cat"))
	if err != nil {
		t.Fatal(err)
	}
	chat := r.mustAccept("bob", fromAnn)
	snap := r.state()
	r.is(snap, "ann", protocol.StateChatting, "", nil, chat.ID)
	r.is(snap, "bob", protocol.StateChatting, "", nil, chat.ID)
	for _, id := range []string{"cat", "dan", "eve"} {
		r.is(snap, id, protocol.StateAvailable, "", nil, "")
	}
	for _, id := range []string{fromAnn, fromCat, toAnn, bobsOwn} {
		if _, ok := snap.Invitations[id]; ok {
			t.Fatalf("invitation %s still pending after the accept", id)
		}
	}
	m, err := told.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("cat was not told: %v", err)
	}
	var ended protocol.ServerFrame
	if err := json.Unmarshal(m.Data, &ended); err != nil || ended.Type != protocol.TypeInvitationEnded ||
		ended.Invitation == nil || ended.Invitation.ID != fromCat || ended.Reason != protocol.ReasonBusy {
		t.Fatalf("cat was told %s, want its invitation ended as busy", m.Data)
	}
}

// A user who leaves takes their invitations and chat with them: their own
// is cancelled, those they held are declined, their chat ends for the
// other, who is available again. Presence asks, once the user's grace
// period is over.
func TestLeave(t *testing.T) {
	t.Parallel()
	r := newRig(t, invites.Config{})
	r.join("ann", "bob", "cat", "dan", "eve")
	held := r.mustInvite("cat", "ann")
	own := r.mustInvite("ann", "bob")
	chat := r.mustAccept("eve", r.mustInvite("dan", "eve"))

	err := r.call(r.presence, protocol.SubjectInvitesLeave, protocol.LeaveRequest{Room: protocol.Lobby, UserID: "ann", Conn: "cann"}, nil)
	natstest.WantCode(t, err, protocol.CodeConflict) // still connected: not leaving
	for _, id := range []string{"ann", "dan"} {
		r.detach(id)
		if err := r.call(r.presence, protocol.SubjectInvitesLeave, protocol.LeaveRequest{Room: protocol.Lobby, UserID: id, Conn: "c" + id}, nil); err != nil {
			t.Fatalf("%s leaves: %v", id, err)
		}
	}
	snap := r.state()
	for _, id := range []string{"ann", "dan"} {
		if _, ok := snap.Users[id]; ok {
			t.Fatalf("%s left but is still online", id)
		}
	}
	r.is(snap, "bob", protocol.StateAvailable, "", nil, "")
	r.is(snap, "cat", protocol.StateAvailable, "", nil, "")
	r.is(snap, "eve", protocol.StateAvailable, "", nil, "")
	if _, ok := snap.Invitations[own]; ok {
		t.Fatal("the leaver's own invitation is still pending")
	}
	if _, ok := snap.Invitations[held]; ok {
		t.Fatal("an invitation to the leaver is still pending")
	}
	if _, ok := snap.Chats[chat.ID]; ok {
		t.Fatal("the leaver's chat goes on")
	}
}
