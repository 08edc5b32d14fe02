package floor_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/buddytok/buddytok/cmd/buddyload/floor"
	"github.com/buddytok/buddytok/cmd/buddyload/load"
	"github.com/buddytok/buddytok/pkg/metrics"
)

// The load generator runs against the floor server as against BuddyTok:
// in the lobby and over rooms, every change made reaches every other user
// of its room, every invitation its invitee, and nobody is dropped. It
// asserts no time: the figures are measured, not tested.
func TestLoadRunsAgainstTheFloor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
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
	ops := httpServe(t, metrics.New().Handler())
	for _, tc := range []struct {
		name  string
		rooms int
	}{{"lobby", 0}, {"rooms", 4}} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := load.Run(ctx, load.Config{
				URL: "http://" + ln.Addr().String(), Metrics: ops, Users: 40, Rooms: tc.rooms, JoinRate: 200, Pairs: 2, Rate: 10,
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
