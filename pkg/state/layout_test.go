package state_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/state"
)

// A store written before rooms (keys user.<id>, inv.<id>, chat.<id>) is
// cleared, and nothing of a room is touched; a second call finds nothing.
func TestClearOldLayout(t *testing.T) {
	t.Parallel()
	st := mustStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, key := range []string{"user.ann", "user.bob", "inv.i1", "chat.c1"} {
		if _, err := st.KV().Put(ctx, key, []byte(`{"id":"x"}`)); err != nil {
			t.Fatal(err)
		}
	}
	var kept state.Txn
	kept.Put(state.UserKey(lobby, "cat"), 0, state.User{ID: "cat", Room: lobby})
	if err := st.Commit(ctx, &kept); err != nil {
		t.Fatal(err)
	}
	n, err := st.ClearOldLayout(ctx)
	if err != nil || n != 4 {
		t.Fatalf("ClearOldLayout = %d, %v; want 4 keys cleared", n, err)
	}
	for _, key := range []string{"user.ann", "inv.i1", "chat.c1"} {
		if _, err := st.KV().Get(ctx, key); err == nil {
			t.Errorf("%s is still stored", key)
		}
	}
	if _, _, err := st.GetUser(ctx, lobby, "cat"); err != nil {
		t.Fatalf("a room's record was lost: %v", err)
	}
	snap, err := st.Snapshot(ctx)
	if err != nil || len(snap.Users) != 1 {
		t.Fatalf("snapshot after clearing: %v users, %v", len(snap.Users), err)
	}
	if n, err := st.ClearOldLayout(ctx); n != 0 || err != nil {
		t.Fatalf("second ClearOldLayout = %d, %v; want nothing to clear", n, err)
	}
	if _, _, err := st.GetUser(ctx, "team", "cat"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("a lobby user read in another room: %v", err)
	}
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key  string
		want state.Key
		ok   bool
	}{
		{state.UserKey("team", "u1"), state.Key{Room: "team", Kind: state.KindUser, ID: "u1"}, true},
		{state.InvitationKey("lobby", "i1"), state.Key{Room: "lobby", Kind: state.KindInvitation, ID: "i1"}, true},
		{state.ChatKey("a-b", "c1"), state.Key{Room: "a-b", Kind: state.KindChat, ID: "c1"}, true},
		{"user.u1", state.Key{}, false},
		{"r.team.meta", state.Key{}, false},
		{"r.team.pet.p1", state.Key{}, false},
		{"r..user.u1", state.Key{}, false},
		{"r.team.user.", state.Key{}, false},
		{"r.team.user.u1.x", state.Key{}, false},
	}
	for _, tc := range tests {
		got, ok := state.ParseKey(tc.key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseKey(%q) = %+v, %t; want %+v, %t", tc.key, got, ok, tc.want, tc.ok)
		}
	}
}
