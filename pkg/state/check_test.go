package state_test

import (
	"strings"
	"testing"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// valid is a state with every kind of record: Ann invites Bob, Cy and Dee
// chat, Eve is idle.
func valid() state.Snapshot {
	user := func(id string, st protocol.State) state.User {
		return state.User{ID: id, Room: lobby, Name: strings.ToUpper(id), State: st, Connected: true}
	}
	ann, bob := user("ann", protocol.StateInviting), user("bob", protocol.StateAvailable)
	cy, dee, eve := user("cy", protocol.StateChatting), user("dee", protocol.StateChatting), user("eve", protocol.StateAvailable)
	ann.Outgoing, bob.Incoming = "i1", []string{"i1"}
	cy.Chat, dee.Chat = "c1", "c1"
	return state.Snapshot{
		Users:       map[string]state.User{"ann": ann, "bob": bob, "cy": cy, "dee": dee, "eve": eve},
		Invitations: map[string]protocol.Invitation{"i1": {ID: "i1", From: "ann", To: "bob"}},
		Chats:       map[string]state.Chat{"c1": {Chat: protocol.Chat{ID: "c1", Parties: [2]string{"cy", "dee"}}}},
		RoomOf:      map[string]string{"ann": lobby, "bob": lobby, "cy": lobby, "dee": lobby, "eve": lobby, "i1": lobby, "c1": lobby},
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(s *state.Snapshot)
		want   string // part of the violation; "" means valid
	}{
		{"valid", func(*state.Snapshot) {}, ""},
		{"two outgoing invitations", func(s *state.Snapshot) {
			s.Invitations["i2"] = protocol.Invitation{ID: "i2", From: "ann", To: "eve"}
			eve := s.Users["eve"]
			eve.Incoming = []string{"i2"}
			s.Users["eve"] = eve
		}, "2 pending outgoing"},
		{"inviting user with a chat", func(s *state.Snapshot) {
			ann := s.Users["ann"]
			ann.Chat = "c1"
			s.Users["ann"] = ann
		}, "inviting but has chat"},
		{"chat peer not chatting", func(s *state.Snapshot) {
			dee := s.Users["dee"]
			dee.State, dee.Chat = protocol.StateAvailable, ""
			s.Users["dee"] = dee
		}, "is not chatting in it"},
		{"chatting without a chat", func(s *state.Snapshot) { delete(s.Chats, "c1") }, "missing chat"},
		{"pending invitation, inviter not inviting", func(s *state.Snapshot) {
			ann := s.Users["ann"]
			ann.State, ann.Outgoing = protocol.StateAvailable, ""
			s.Users["ann"] = ann
		}, "inviter ann is available"},
		{"pending invitation after the inviter left", func(s *state.Snapshot) { delete(s.Users, "ann") }, "a party has left"},
		{"pending invitation after the invitee left", func(s *state.Snapshot) { delete(s.Users, "bob") }, "a party has left"},
		{"invitation missing from incoming", func(s *state.Snapshot) {
			bob := s.Users["bob"]
			bob.Incoming = nil
			s.Users["bob"] = bob
		}, "missing from invitee"},
		{"invitation across rooms", func(s *state.Snapshot) {
			bob := s.Users["bob"]
			bob.Room, s.RoomOf["bob"] = "team", "team"
			s.Users["bob"] = bob
		}, "between users of rooms"},
		{"chat across rooms", func(s *state.Snapshot) {
			dee := s.Users["dee"]
			dee.Room, s.RoomOf["dee"] = "team", "team"
			s.Users["dee"] = dee
		}, "has party dee of room"},
		{"user kept in another room than it names", func(s *state.Snapshot) { s.RoomOf["eve"] = "team" }, "kept in room"},
		{"unknown state", func(s *state.Snapshot) {
			eve := s.Users["eve"]
			eve.State = "dancing"
			s.Users["eve"] = eve
		}, "unknown state"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			snap := valid()
			tc.mutate(&snap)
			err := state.Check(snap)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid state refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want a violation mentioning %q", err, tc.want)
			}
		})
	}
}
