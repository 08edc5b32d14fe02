package protocol_test

import (
	"testing"

	"github.com/buddytok/buddytok/pkg/protocol"
)

func TestCheckRoom(t *testing.T) {
	t.Parallel()
	long := make([]byte, protocol.MaxRoomLen+1)
	for i := range long {
		long[i] = 'a'
	}
	tests := []struct {
		room string
		ok   bool
	}{
		{"lobby", true},
		{"a", true},
		{"smith-family-2", true},
		{string(long[:protocol.MaxRoomLen]), true},
		{"", false},
		{string(long), false},
		{"Team", false}, // never lowered: "Team" and "team" are not one room
		{"-team", false},
		{"team-", false},
		{"te am", false},
		{"team.a", false},
		{"team*", false},
		{"team>", false},
		{"tëam", false},
		{"team/x", false},
	}
	for _, tc := range tests {
		err := protocol.CheckRoom(tc.room)
		if (err == nil) != tc.ok {
			t.Errorf("CheckRoom(%q) = %v, want ok %t", tc.room, err, tc.ok)
		}
		if err != nil && protocol.CodeOf(err) != protocol.CodeInvalidRoom {
			t.Errorf("CheckRoom(%q) code %s, want %s", tc.room, protocol.CodeOf(err), protocol.CodeInvalidRoom)
		}
	}
}

// An event's subject names its room and user, and an edge's subscription
// to a room's events takes every user's of that room and no other room's.
func TestEventSubjects(t *testing.T) {
	t.Parallel()
	if got, want := protocol.EventSubject("red", "ann"), "buddytok.events.red.ann"; got != want {
		t.Errorf("EventSubject = %q, want %q", got, want)
	}
	if got, want := protocol.RoomEvents("red"), "buddytok.events.red.*"; got != want {
		t.Errorf("RoomEvents = %q, want %q", got, want)
	}
	tests := []struct {
		subject    string
		room, user string
		ok         bool
	}{
		{"buddytok.events.red.ann", "red", "ann", true},
		{"buddytok.events." + protocol.Lobby + ".bob", protocol.Lobby, "bob", true},
		{"buddytok.events.ann", "", "", false},
		{"buddytok.events.red.ann.x", "", "", false},
		{"buddytok.events..ann", "", "", false},
		{"buddytok.events.red.", "", "", false},
		{"buddytok.presence.join", "", "", false},
	}
	for _, tt := range tests {
		room, user, ok := protocol.ParseEventSubject(tt.subject)
		if ok != tt.ok || (ok && (room != tt.room || user != tt.user)) {
			t.Errorf("ParseEventSubject(%q) = %q, %q, %t; want %q, %q, %t", tt.subject, room, user, ok, tt.room, tt.user, tt.ok)
		}
	}
}
