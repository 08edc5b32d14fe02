package load

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// Names that hold what the scanner searches for, escaped as JSON escapes
// them, must not fool it.
var trickyUsers = []protocol.User{
	{ID: "a1", Name: "Ann", State: protocol.StateAvailable, JoinedAt: 1},
	{ID: "b2", Name: `say "state":"chatting"`, State: protocol.StateInviting, JoinedAt: 2},
	{ID: "c3", Name: `{"id":"zz","state":"x"} \ "`, State: protocol.StateChatting, JoinedAt: 3},
	{ID: "d4", Name: "Zoë ❤ 用户", State: protocol.StateAvailable, JoinedAt: 4},
}

// The scanned user frames and welcome lists say what encoding/json says.
func TestScanAgreesWithDecoding(t *testing.T) {
	t.Parallel()
	for _, u := range trickyUsers {
		data, _ := json.Marshal(protocol.ServerFrame{Type: protocol.TypeUser, User: &u, Revision: 9})
		id, st, ok := scanUserFrame(data)
		if !ok || id != u.ID || st != u.State {
			t.Errorf("user frame %s: scanned %q %q %v, want %q %q", data, id, st, ok, u.ID, u.State)
		}
	}
	for _, data := range [][]byte{
		[]byte(`{"type":"user_left","user_id":"a1","revision":3}`),
		[]byte(`{"type":"ok","ref":"1"}`),
	} {
		if _, _, ok := scanUserFrame(data); ok {
			t.Errorf("%s scanned as a user frame", data)
		}
	}
	for _, users := range [][]protocol.User{nil, trickyUsers[:1], trickyUsers} {
		you := trickyUsers[1]
		head, _ := json.Marshal(protocol.ServerFrame{Type: protocol.TypeWelcome, Ref: "r1", You: &you, Revision: 4})
		data := head
		if users != nil {
			list, _ := json.Marshal(users)
			// As the edge appends it (edge.withUsers).
			data = append(append(append(head[:len(head)-1:len(head)-1], `,"users":`...), list...), '}')
		}
		f, list, err := decodeFrame(data)
		if err != nil || f.Type != protocol.TypeWelcome || f.Ref != "r1" || f.You == nil || f.You.ID != you.ID {
			t.Fatalf("welcome %s: decoded %+v, %v", data, f, err)
		}
		got := slices.Clone(f.Users)
		scanUsers(list, func(id string, st protocol.State) { got = append(got, protocol.User{ID: id, State: st}) })
		var want []protocol.User
		for _, u := range users {
			want = append(want, protocol.User{ID: u.ID, State: u.State})
		}
		for i := range got {
			got[i].Name, got[i].JoinedAt = "", 0
		}
		if !slices.Equal(got, want) {
			t.Errorf("welcome with %d users: scanned %v, want %v", len(users), got, want)
		}
	}
}
