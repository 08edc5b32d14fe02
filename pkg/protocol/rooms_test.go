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
