package system_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/buddytok/buddytok/cmd/buddytok/allinone"
	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
	"github.com/buddytok/buddytok/test/kit"
)

func TestDefaultStoreDir(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		want    string
		wantErr bool
	}{
		{name: "XDG state home", env: map[string]string{"XDG_STATE_HOME": "/srv/state", "HOME": "/home/ann"}, want: "/srv/state/buddytok/nats"},
		{name: "home", env: map[string]string{"HOME": "/home/ann"}, want: "/home/ann/.local/state/buddytok/nats"},
		{name: "relative XDG is ignored", env: map[string]string{"XDG_STATE_HOME": "state", "HOME": "/home/ann"}, want: "/home/ann/.local/state/buddytok/nats"},
		{name: "nowhere", env: map[string]string{}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := allinone.DefaultStoreDir(func(k string) string { return tt.env[k] })
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("DefaultStoreDir = %q, %v; want %q (error %t)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// An all-in-one restarted on the same store (an upgrade) keeps its users:
// a page that resumes within the grace period is back in its chat.
func TestRestartOnTheSameStoreKeepsTheChat(t *testing.T) {
	t.Parallel()
	w, opts := startOnAStore(t, kit.Settings{Grace: 10 * time.Second})
	ctx, sys := w.Ctx, w.Sys
	ann, bob := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(bob), protocol.StateAvailable, ann)
	_, chat := w.Chat(ann, bob)
	annView := w.WaitView(ann, "in the chat", func(v client.View) bool { return v.Chat != nil })
	bobView := w.WaitView(bob, "in the chat", func(v client.View) bool { return v.Chat != nil })
	if err := sys.Close(); err != nil {
		t.Fatal(err)
	}

	sys, err := allinone.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Close() })
	for _, v := range []client.View{annView, bobView} {
		c, err := client.Dial(ctx, sys.EdgeURLs[0])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if _, err := c.Resume(ctx, v.Me.ID, v.Secret); err != nil {
			t.Fatalf("resume %s after the restart: %v", v.Me.Name, err)
		}
		if got := c.View(); got.Chat == nil || got.Chat.ID != chat.ID || got.Me.State != protocol.StateChatting {
			t.Fatalf("%s after the restart: %+v", v.Me.Name, got)
		}
	}
}

// Upgrading an all-in-one whose store a release before rooms wrote: the
// old records (user.<id>, inv.<id>, chat.<id>) are cleared with a logged
// warning, the state stream gets its rooms' republishing, and the
// all-in-one serves as ever; nothing crashes or waits.
func TestUpgradeFromAStoreBeforeRooms(t *testing.T) {
	t.Parallel()
	w, opts := startOnAStore(t, kit.Settings{Grace: time.Second})
	ctx, sys := w.Ctx, w.Sys
	// Make the store what the release before rooms left: its records, and
	// a state stream that republishes nothing.
	st := w.Store()
	for _, key := range []string{"user.ann", "user.bob", "inv.i1", "chat.c1"} {
		if _, err := st.KV().Put(ctx, key, []byte(`{"id":"x"}`)); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := st.JetStream().Stream(ctx, "KV_"+state.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.RePublish = nil
	if _, err := st.JetStream().UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := sys.Close(); err != nil {
		t.Fatal(err)
	}

	var logs syncBuffer
	opts.Log = slog.New(slog.NewJSONHandler(&logs, nil))
	sys, err = allinone.Start(ctx, opts)
	if err != nil {
		t.Fatalf("the upgraded all-in-one did not start: %v", err)
	}
	t.Cleanup(func() { _ = sys.Close() })
	if line := logLine(t, logs.String(), "presence", "cleared the records of a release before rooms: their users join again"); line["keys"] != 4.0 || line["level"] != "WARN" {
		t.Fatalf("the warning about the old records says %v", line)
	}
	w = &kit.World{T: t, Sys: sys, Ctx: ctx}
	st = w.Store()
	for _, key := range []string{"user.ann", "inv.i1", "chat.c1"} {
		if _, err := st.KV().Get(ctx, key); err == nil {
			t.Errorf("%s is still stored", key)
		}
	}
	ann, bob := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(bob), protocol.StateAvailable, ann)
	w.Invite(ann, bob)
	w.Sees(kit.ID(ann), protocol.StateInviting, bob)
}

// startOnAStore starts an all-in-one on a store of its own; the options
// it returns start another on the same store.
func startOnAStore(t *testing.T, s kit.Settings) (*kit.World, allinone.Options) {
	t.Helper()
	opts := kit.Options(kit.Topologies[0], s)
	opts.StoreDir = filepath.Join(t.TempDir(), "nats")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	sys, err := allinone.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	return &kit.World{T: t, Sys: sys, Ctx: ctx}, opts
}
