package system_test

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/test/kit"
)

// usersOf returns the IDs a tab's list shows.
func usersOf(c *client.Client) []string {
	return slices.Sorted(maps.Keys(c.View().Users))
}

func ids(cs ...*client.Client) []string {
	var out []string
	for _, c := range cs {
		out = append(out, kit.ID(c))
	}
	slices.Sort(out)
	return out
}

// Two rooms, each spread over both edges, and the lobby: each tab lists
// its own room's users only, receives nothing of another room's changes
// (no user frame, no event), and cannot invite across rooms.
func TestRoomsAreInvisibleToEachOther(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, replicated, kit.Settings{Grace: time.Second})
	red1, red2 := w.JoinRoom("Ann", "red", 0), w.JoinRoom("Bob", "red", 1)
	blue1, blue2 := w.JoinRoom("Cy", "blue", 1), w.JoinRoom("Dee", "blue", 0)
	lobby := w.JoinRoom("Eve", protocol.Lobby, 0)
	for _, c := range []*client.Client{blue1, blue2, lobby} {
		c.RecordFrames()
	}
	w.Sees(kit.ID(red2), protocol.StateAvailable, red1)
	w.Sees(kit.ID(red1), protocol.StateAvailable, red2)
	w.Sees(kit.ID(blue2), protocol.StateAvailable, blue1)
	w.Sees(kit.ID(blue1), protocol.StateAvailable, blue2)

	// Red's whole life: an invitation, a chat, its end, a leave.
	_, chat := w.Chat(red1, red2)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	if err := red1.EndChat(ctx, chat.ID); err != nil {
		t.Fatal(err)
	}
	w.Sees(kit.ID(red1), protocol.StateAvailable, red2)
	redID := kit.ID(red1)
	_ = red1.Close()
	w.Sees(redID, "", red2)

	// Across rooms: refused, and nothing reaches the other room.
	_, err := blue1.Invite(ctx, kit.ID(red2))
	kit.MustCode(t, err, protocol.CodeNotInRoom)
	_, err = lobby.Invite(ctx, kit.ID(blue1))
	kit.MustCode(t, err, protocol.CodeNotInRoom)

	for _, c := range []*client.Client{red2, blue1, blue2, lobby} {
		v := c.View()
		if v.Room == "" {
			t.Errorf("%s's welcome names no room", v.Me.Name)
		}
	}
	if got, want := usersOf(red2), ids(red2); !slices.Equal(got, want) {
		t.Errorf("red lists %v, want %v", got, want)
	}
	if got, want := usersOf(blue1), ids(blue1, blue2); !slices.Equal(got, want) {
		t.Errorf("blue lists %v, want %v", got, want)
	}
	if got, want := usersOf(lobby), ids(lobby); !slices.Equal(got, want) {
		t.Errorf("the lobby lists %v, want %v", got, want)
	}
	red := map[string]bool{redID: true, kit.ID(red2): true}
	for _, c := range []*client.Client{blue1, blue2, lobby} {
		for _, data := range c.Frames() {
			var f protocol.ServerFrame
			if err := json.Unmarshal(data, &f); err != nil {
				t.Fatal(err)
			}
			if f.User != nil && red[f.User.ID] || red[f.UserID] || f.Invitation != nil || f.Chat != nil || len(f.Users) > 0 && f.Type != protocol.TypeWelcome {
				t.Errorf("%s received %s of another room", c.View().Me.Name, data)
			}
		}
	}

	// GET /api/users answers for one named room (asked of both edges: each
	// takes a burst of 5 from an address).
	for i, tc := range []struct {
		query  string
		status int
		want   []string
	}{
		{"?room=blue", http.StatusOK, ids(blue1, blue2)},
		{"?room=red", http.StatusOK, ids(red2)},
		{"", http.StatusOK, ids(lobby)},
		{"?room=nobody-here", http.StatusOK, nil},
		{"?room=Blue", http.StatusBadRequest, nil},
		{"?room=a.%3E", http.StatusBadRequest, nil},
	} {
		resp, err := http.Get(w.Sys.EdgeURLs[i%2] + "/api/users" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("/api/users%s: %d %s, want %d", tc.query, resp.StatusCode, body, tc.status)
			continue
		}
		if tc.status != http.StatusOK {
			continue
		}
		var users []protocol.User
		if err := json.Unmarshal(body, &users); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, u := range users {
			got = append(got, u.ID)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("/api/users%s lists %v, want %v", tc.query, got, tc.want)
		}
	}
	w.MustInvariants(w.Store())
}

// A room holds at most its limit, however many join at once through
// however many edges and presence replicas; room_full says so, and a place
// that frees up is taken again. Other rooms are not affected.
func TestRoomFull(t *testing.T) {
	t.Parallel()
	const limit = 3
	w := kit.Start(t, replicated, kit.Settings{Grace: 0, RoomMaxUsers: limit})
	ctx, cancel := w.WaitCtx()
	defer cancel()
	const tries = 12
	tabs := make([]*client.Client, tries)
	errs := make([]error, tries)
	for i := range tabs {
		tabs[i] = w.Dial()
	}
	var wg sync.WaitGroup
	for i, c := range tabs {
		wg.Go(func() { _, errs[i] = c.JoinRoom(ctx, "Fan", "small") })
	}
	wg.Wait()
	var in []*client.Client
	for i, err := range errs {
		switch protocol.CodeOf(err) {
		case protocol.CodeRoomFull:
		default:
			if err != nil {
				t.Fatalf("join %d: %v", i, err)
			}
			in = append(in, tabs[i])
		}
	}
	if len(in) != limit {
		t.Fatalf("%d of %d joined a room of %d", len(in), tries, limit)
	}
	w.JoinRoom("Other", "elsewhere", 0)

	// One leaves: the next may come in.
	gone := kit.ID(in[0])
	_ = in[0].Close()
	w.Sees(gone, "", in[1])
	late := w.JoinRoom("Late", "small", 1)
	_, err := w.Dial().JoinRoom(ctx, "Later", "small")
	kit.MustCode(t, err, protocol.CodeRoomFull)
	w.Sees(kit.ID(late), protocol.StateAvailable, in[1], in[2])
	w.MustInvariants(w.Store())
}

// Resuming after a reload returns to the same room, with the room's list;
// a resume that names another room is refused as unknown.
func TestResumeReturnsToTheRoom(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, replicated, kit.Settings{Grace: 10 * time.Second})
	ann, bob := w.JoinRoom("Ann", "red", 0), w.JoinRoom("Bob", "red", 1)
	w.JoinRoom("Cy", "blue", 0)
	w.Sees(kit.ID(bob), protocol.StateAvailable, ann)
	v := ann.View()
	_ = ann.Drop()
	ctx, cancel := w.WaitCtx()
	defer cancel()

	wrong := w.Dial()
	_, err := wrong.ResumeRoom(ctx, v.Me.ID, v.Secret, "blue")
	kit.MustCode(t, err, protocol.CodeResumeFailed)
	_, err = w.Dial().Resume(ctx, v.Me.ID, v.Secret) // the lobby
	kit.MustCode(t, err, protocol.CodeResumeFailed)

	again := w.Dial()
	if _, err := again.ResumeRoom(ctx, v.Me.ID, v.Secret, "red"); err != nil {
		t.Fatal(err)
	}
	if got := again.View(); got.Room != "red" || !slices.Equal(usersOf(again), ids(again, bob)) {
		t.Fatalf("resumed in %q listing %v, want red with Ann and Bob", got.Room, usersOf(again))
	}
	w.Sees(kit.ID(again), protocol.StateAvailable, bob)
}

// An edge without a lobby refuses to join or list it, and says so to the
// page; rooms work as ever.
func TestNoLobby(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, replicated, kit.Settings{NoLobby: true})
	ctx, cancel := w.WaitCtx()
	defer cancel()
	_, err := w.Dial().Join(ctx, "Ann")
	kit.MustCode(t, err, protocol.CodeLobbyClosed)
	_, err = w.Dial().JoinRoom(ctx, "Ann", protocol.Lobby)
	kit.MustCode(t, err, protocol.CodeLobbyClosed)
	w.JoinRoom("Ann", "red", 0)

	for path, want := range map[string]int{"/api/users": http.StatusNotFound, "/api/users?room=red": http.StatusOK, "/r/red": http.StatusOK} {
		resp, err := http.Get(w.Sys.EdgeURLs[0] + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	resp, err := http.Get(w.Sys.EdgeURLs[0] + "/api/site")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var site struct{ Lobby bool }
	if err := json.NewDecoder(resp.Body).Decode(&site); err != nil || site.Lobby {
		t.Fatalf("/api/site says lobby %t (%v), want false", site.Lobby, err)
	}
}

// The metrics of rooms: presence counts the rooms open and users per room,
// each edge the rooms it watches and the changes it received of them.
func TestRoomMetrics(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second})
	a1, a2 := w.JoinRoom("Ann", "red", 0), w.JoinRoom("Bob", "red", 0)
	w.JoinRoom("Cy", "blue", 0)
	w.Sees(kit.ID(a2), protocol.StateAvailable, a1)
	w.Invite(a1, a2)
	want := map[string]float64{
		`buddytok_rooms_open`:                           2,
		`buddytok_room_users_count`:                     2,
		`buddytok_room_users_sum`:                       3,
		`buddytok_room_users_bucket{le="1"}`:            1,
		`buddytok_room_users_bucket{le="2"}`:            2,
		`buddytok_edge_rooms_watched`:                   2,
		`buddytok_edge_room_syncs_total{reason="open"}`: 2,
	}
	deadline := time.Now().Add(kit.WaitFor)
	for {
		got := scrape(t, w.Sys.OpsURL)
		var wrong []string
		for k, v := range want {
			if got[k] != v {
				wrong = append(wrong, fmt.Sprintf("%s = %v, want %v", k, got[k], v))
			}
		}
		if got[`buddytok_edge_room_changes_total`] < 3 {
			wrong = append(wrong, fmt.Sprintf("buddytok_edge_room_changes_total = %v, want Bob's join and the invitation", got[`buddytok_edge_room_changes_total`]))
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics: %v", wrong)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
