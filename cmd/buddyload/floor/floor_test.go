package floor_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/buddytok/buddytok/cmd/buddyload/floor"
	"github.com/buddytok/buddytok/cmd/buddyload/load"
	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// The load generator runs against the floor server as against BuddyTok:
// in the lobby and over rooms, every change made reaches every other user
// of its room, every invitation its invitee, and nobody is dropped. It
// asserts no time: the figures are measured, not tested.
func TestLoadRunsAgainstTheFloor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url := serveFloor(t, ctx)
	ops := httpServe(t, metrics.New().Handler())
	for _, tc := range []struct {
		name  string
		rooms int
	}{{"lobby", 0}, {"rooms", 4}} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := load.Run(ctx, load.Config{
				URL: url, Metrics: ops, Users: 40, Rooms: tc.rooms, JoinRate: 200, Pairs: 2, Rate: 10,
				Duration: 2 * time.Second, Settle: 30 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res.Summary())
			if res.ChangesMade == 0 || res.ChangesRefused != 0 || res.Missed != 0 || res.Disconnects != 0 || res.InvitesUndelivered != 0 {
				t.Errorf("changes made %d, refused %d, missed %d, disconnects %d, invitations undelivered %d",
					res.ChangesMade, res.ChangesRefused, res.Missed, res.Disconnects, res.InvitesUndelivered)
			}
			if res.InviteDelivery.Count == 0 || res.ServerMetricsNotice != "" {
				t.Errorf("%d invitations measured; server figures: %q", res.InviteDelivery.Count, res.ServerMetricsNotice)
			}
		})
	}
}

// httpServe serves h on a loopback port until the test ends and returns
// its http:// URL.
func httpServe(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// A change reaches everyone in its room, the user who made it too, as the
// edge tells its room: the load generator waits for every list, the
// inviter's own included, to show the last change.
func TestChangeReachesItsMaker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := serveFloor(t, ctx)
	from, to := dialJoin(t, ctx, url, "from"), dialJoin(t, ctx, url, "to")
	fromID := from.View().Me.ID
	for _, c := range []*client.Client{from, to} {
		if _, err := c.WaitView(ctx, func(v client.View) bool { return len(v.Users) == 2 }); err != nil {
			t.Fatal(err)
		}
	}
	inv, err := from.Invite(ctx, to.View().Me.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{from, to} {
		if _, err := c.WaitView(ctx, func(v client.View) bool { return v.Users[fromID].State == protocol.StateInviting }); err != nil {
			t.Fatalf("after the invitation: %v", err)
		}
	}
	if err := from.Cancel(ctx, inv.ID); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{from, to} {
		if _, err := c.WaitView(ctx, func(v client.View) bool { return v.Users[fromID].State == protocol.StateAvailable }); err != nil {
			t.Fatalf("after the cancel: %v", err)
		}
	}
}

// serveFloor serves a floor on a loopback port until the test ends, and
// returns its http:// URL.
func serveFloor(t *testing.T, ctx context.Context) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srvCtx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- floor.New().Serve(srvCtx, ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func dialJoin(t *testing.T, ctx context.Context, url, name string) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Join(ctx, name); err != nil {
		t.Fatal(err)
	}
	return c
}
