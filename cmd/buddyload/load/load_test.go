package load_test

import (
	"bytes"
	"context"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buddytok/buddytok/cmd/buddyload/load"
	"github.com/buddytok/buddytok/cmd/buddytok/allinone"
	"github.com/buddytok/buddytok/services/edge/admission"
	"github.com/buddytok/buddytok/services/edge/edge"
	"github.com/buddytok/buddytok/services/presence/presence"
)

// A small run against an in-process system: every change made reaches
// every other user, in order, and nobody is dropped; the final lists are
// the state's. Also with writes batched hard (a budget of 60 writes a
// second for 30 sockets: changes wait up to 250 ms for each other), which
// must change when frames arrive and nothing else; its changes go on for
// longer than the keepalive allows a silent socket (2 × 100 ms + 5 s), so
// that a writer that never idles must still ping; and a socket holding a
// batch keeps no goroutine for it. It asserts no time: the figures are
// measured, not tested.
func TestRunMeasuresEveryChange(t *testing.T) {
	// Every simulated user connects from loopback, as from one address.
	oneAddress := admission.Limits{ConnsPerAddr: -1, JoinRatePerAddr: -1}
	for _, tc := range []struct {
		name     string
		edge     edge.Config
		duration time.Duration
		batched  bool
		abusers  int
	}{
		{"default", edge.Config{Admission: oneAddress}, 2 * time.Second, false, 0},
		{"batched", edge.Config{Admission: oneAddress, WriteBudget: 60, BatchMax: 250 * time.Millisecond, PingEvery: 100 * time.Millisecond}, 6 * time.Second, true, 0},
		// Beside misbehaving sockets, one of each kind: the users are
		// served all the same, and each kind of abuse is ended by its
		// limit. (Without the abuse penalty, which would cut the one
		// address off after the first abuse: TestAbuserIsCutOff.)
		{"abused", edge.Config{Admission: admission.Limits{ConnsPerAddr: -1, JoinRatePerAddr: -1, PenaltyMax: -1}, JoinTimeout: 500 * time.Millisecond}, 3 * time.Second, false, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			sys, err := allinone.Start(ctx, allinone.Options{Presence: presence.Config{Grace: time.Second}, Edge: tc.edge, OpsListen: "127.0.0.1:0"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sys.Close() })
			writers := sampleWriters(ctx)
			res, err := load.Run(ctx, load.Config{
				URL: sys.EdgeURLs[0], Metrics: sys.OpsURL, Users: 30, JoinRate: 100, Pairs: 3, Rate: 15, Duration: tc.duration, Settle: 30 * time.Second,
				Abusers: tc.abusers,
			})
			if err != nil {
				t.Fatal(err)
			}
			if median := writers(); tc.batched && median >= res.Users/2 {
				t.Errorf("a median of %d writer goroutines for %d sockets: sockets holding a batch keep a goroutine for it", median, res.Users)
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
			if tc.abusers > 0 {
				// (The WebSocket library closes a frame over the read
				// limit itself, with no reason.)
				for _, want := range []string{"1009", "1008 rate_limited", "1008 join_timeout"} {
					if res.Abuse == nil || res.Abuse.Closes[want] == 0 {
						t.Errorf("no abuser's socket ended with %s: %v", want, res.Abuse)
					}
				}
			}
			if tc.batched && res.ServerFramesPerWrite < 2 {
				t.Errorf("%.2f frames a write: the batched edge wrote changes one by one", res.ServerFramesPerWrite)
			}
		})
	}
}

// sampleWriters counts the edge's socket writers (goroutines) in this
// process every 50 ms until the returned func is called, which returns
// the median count.
func sampleWriters(ctx context.Context) func() int {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan []int)
	go func() {
		var counts []int
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				done <- counts
				return
			case <-t.C:
			}
			var b bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
			counts = append(counts, strings.Count(b.String(), "session.(*Session).runWriter("))
		}
	}()
	return func() int {
		cancel()
		counts := <-done
		if len(counts) == 0 {
			return 0
		}
		slices.Sort(counts)
		return counts[len(counts)/2]
	}
}

// A run with rooms over two edges: every change reaches every other user
// of its room and nobody else, and each edge holds open the rooms of its
// users and no other. Room sizes are skewed: the largest holds most.
func TestRunWithRooms(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sys, err := allinone.Start(ctx, allinone.Options{Edges: 2, Presence: presence.Config{Grace: time.Second}, OpsListen: "127.0.0.1:0",
		Edge: edge.Config{Admission: admission.Limits{ConnsPerAddr: -1, JoinRatePerAddr: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Close() })
	res, err := load.Run(ctx, load.Config{
		URL: strings.Join(sys.EdgeURLs, ","), Metrics: sys.OpsURL, Users: 40, JoinRate: 200, Rooms: 5, Skew: 1, Pairs: 1, Rate: 2,
		Duration: 2 * time.Second, Settle: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Summary())
	if res.ChangesMade == 0 || res.ChangesRefused != 0 || res.Missed != 0 || res.Disconnects != 0 {
		t.Fatalf("changes made %d, refused %d, missed %d, disconnects %d", res.ChangesMade, res.ChangesRefused, res.Missed, res.Disconnects)
	}
	if res.Rooms == nil || res.Rooms.Rooms != 5 || res.Rooms.LargestRoom <= res.Rooms.SmallestRoom {
		t.Fatalf("rooms: %+v, want 5 of skewed sizes", res.Rooms)
	}
	if len(res.Edges) != 2 {
		t.Fatalf("edges: %+v", res.Edges)
	}
	// The edges of one process share its metrics: each reports the two
	// together (test/cluster tells edge processes apart).
	users := 0
	for _, e := range res.Edges {
		users += e.Users
		if e.RoomsWatched != 5 || e.RoomChanges <= 0 {
			t.Errorf("edge %s: the process watches %v rooms and received %v changes, with the run's 5 rooms", e.URL, e.RoomsWatched, e.RoomChanges)
		}
	}
	if users != 40 {
		t.Errorf("the edges' users add up to %d, want 40", users)
	}
}

func TestRunRefusesMorePairsThanUsers(t *testing.T) {
	if _, err := load.Run(context.Background(), load.Config{URL: "http://127.0.0.1:1", Users: 3, Pairs: 2}); err == nil {
		t.Fatal("3 users for 2 pairs accepted")
	}
}

// Stallers from several addresses resume their users and never read, while
// the changes go on: the run's users get every change all the same, and
// the stallers report what they opened and what the server's memory did.
func TestRunWithStallers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sys, err := allinone.Start(ctx, allinone.Options{Presence: presence.Config{Grace: time.Second}, OpsListen: "127.0.0.1:0",
		Edge: edge.Config{Admission: admission.Limits{ConnsPerAddr: -1, JoinRatePerAddr: -1}, SendBuffer: 4 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Close() })
	res, err := load.Run(ctx, load.Config{
		URL: sys.EdgeURLs[0], Metrics: sys.OpsURL, Users: 100, NameLength: 100, JoinRate: 200, Pairs: 2, Rate: 4,
		Duration: 8 * time.Second, Settle: 30 * time.Second, Stallers: 6, StallAddrs: 3, StallHold: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Summary())
	if res.ChangesMade == 0 || res.ChangesRefused != 0 || res.Missed != 0 || res.Disconnects != 0 {
		t.Fatalf("changes made %d, refused %d, missed %d, disconnects %d", res.ChangesMade, res.ChangesRefused, res.Missed, res.Disconnects)
	}
	s := res.Stall
	if s == nil || s.Sockets != 6 || s.Addresses != 3 || s.Opened < 6 || s.Refused != 0 || s.RSSBefore <= 0 {
		t.Fatalf("stallers: %v", s)
	}
	// Two stallers resume each address's user, each at least twice over
	// the run: each resume replaces the other's socket, which the server
	// closes.
	if s.ClosedByServer == 0 {
		t.Errorf("no staller's socket was closed by the server: %v", s)
	}
}
