package system_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/buddytok/buddytok/cmd/buddytok/allinone"
	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
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
	opts := kit.Options(kit.Topologies[0], kit.Settings{Grace: 10 * time.Second})
	opts.StoreDir = filepath.Join(t.TempDir(), "nats")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sys, err := allinone.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	w := &kit.World{T: t, Sys: sys, Ctx: ctx}
	ann, bob := w.Join("Ann"), w.Join("Bob")
	w.Sees(kit.ID(bob), protocol.StateAvailable, ann)
	_, chat := w.Chat(ann, bob)
	annView := w.WaitView(ann, "in the chat", func(v client.View) bool { return v.Chat != nil })
	bobView := w.WaitView(bob, "in the chat", func(v client.View) bool { return v.Chat != nil })
	if err := sys.Close(); err != nil {
		t.Fatal(err)
	}

	sys, err = allinone.Start(ctx, opts)
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
