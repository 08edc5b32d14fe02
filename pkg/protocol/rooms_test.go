package protocol_test

import (
	"regexp"
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

// New rooms follow the rule, read in groups, carry 100 bits, and do not
// repeat.
func TestNewRoom(t *testing.T) {
	t.Parallel()
	form := regexp.MustCompile(`^[0-9a-hjkmnp-tv-z]{4}(-[0-9a-hjkmnp-tv-z]{4}){4}$`)
	seen := map[string]bool{}
	for range 10000 {
		r := protocol.NewRoom()
		if err := protocol.CheckRoom(r); err != nil || !form.MatchString(r) {
			t.Fatalf("NewRoom() = %q: %v", r, err)
		}
		if seen[r] {
			t.Fatalf("NewRoom() repeated %q", r)
		}
		seen[r] = true
	}
}
