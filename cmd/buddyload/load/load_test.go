package load_test

import (
	"context"
	"testing"
	"time"

	"github.com/buddytok/buddytok/cmd/buddyload/load"
	"github.com/buddytok/buddytok/cmd/buddytok/allinone"
	"github.com/buddytok/buddytok/services/presence/presence"
)

// A small run against an in-process system: every change made reaches
// every other user, in order, and nobody is dropped. It asserts no time:
// the figures are measured, not tested.
func TestRunMeasuresEveryChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sys, err := allinone.Start(ctx, allinone.Options{Presence: presence.Config{Grace: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Close() })
	res, err := load.Run(ctx, load.Config{
		URL: sys.EdgeURLs[0], Users: 30, JoinRate: 100, Pairs: 3, Rate: 15, Duration: 2 * time.Second, Settle: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Summary())
	if res.ChangesMade == 0 || res.ChangesRefused != 0 {
		t.Fatalf("changes made %d, refused %d: want all made", res.ChangesMade, res.ChangesRefused)
	}
	if want := res.ChangesMade * (res.Users - 1); res.ListChange.Count != want || res.Missed != 0 {
		t.Errorf("%d list-change frames measured, %d missed; want %d, none missed", res.ListChange.Count, res.Missed, want)
	}
	if res.InviteDelivery.Count == 0 || res.InvitesUndelivered != 0 {
		t.Errorf("%d invitations delivered, %d not", res.InviteDelivery.Count, res.InvitesUndelivered)
	}
	if res.Disconnects != 0 {
		t.Errorf("%d users disconnected", res.Disconnects)
	}
	if res.ServerMetricsNotice != "" {
		t.Errorf("server figures missing: %s", res.ServerMetricsNotice)
	}
}

func TestRunRefusesMorePairsThanUsers(t *testing.T) {
	if _, err := load.Run(context.Background(), load.Config{URL: "http://127.0.0.1:1", Users: 3, Pairs: 2}); err == nil {
		t.Fatal("3 users for 2 pairs accepted")
	}
}
