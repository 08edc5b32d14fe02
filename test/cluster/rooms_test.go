package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// scrape reads one sample of an edge's metrics, on its operator port.
func scrape(t *testing.T, e *edgeProc, sample string) float64 {
	t.Helper()
	samples, err := metrics.Scrape(context.Background(), e.ops)
	if err != nil {
		t.Fatal(err)
	}
	return samples[sample]
}

// An edge process receives the changes of the rooms its users are in and
// nothing of any other room, counted on its own /metrics: a room whose
// users are all on the other edge costs it nothing, and a room it held
// costs it nothing once its last user there left.
func TestEdgesReceiveOnlyTheirRooms(t *testing.T) {
	t.Parallel()
	sys := startSystem(t, 1, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e0, e1 := sys.edges[0], sys.edges[1]
	join := func(e *edgeProc, name, room string) *client.Client {
		t.Helper()
		c, err := client.Dial(ctx, e.url())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if _, err := c.JoinRoom(ctx, name, room); err != nil {
			t.Fatalf("%s joins %s on %s: %v", name, room, e.name, err)
		}
		return c
	}
	waitList := func(c *client.Client, n int) {
		t.Helper()
		if _, err := c.WaitView(ctx, func(v client.View) bool { return len(v.Users) == n }); err != nil {
			t.Fatalf("%s's list never held %d: %v", c.View().Me.Name, n, err)
		}
	}
	// cycles makes 2n changes in a room: invitations made and cancelled.
	cycles := func(from, to *client.Client, n int) {
		t.Helper()
		for range n {
			inv, err := from.Invite(ctx, to.View().Me.ID)
			if err != nil {
				t.Fatal(err)
			}
			if err := from.Cancel(ctx, inv.ID); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := to.WaitView(ctx, func(v client.View) bool {
			return len(v.Incoming) == 0 && v.Users[from.View().Me.ID].State == protocol.StateAvailable
		}); err != nil {
			t.Fatal(err)
		}
	}
	const changes = "buddytok_edge_room_changes_total"
	const watched = "buddytok_edge_rooms_watched"

	ann, bob := join(e0, "Ann", "red"), join(e0, "Bob", "red")
	cy, dee := join(e1, "Cy", "blue"), join(e1, "Dee", "blue")
	waitList(bob, 2)
	waitList(dee, 2)
	if w0, w1 := scrape(t, e0, watched), scrape(t, e1, watched); w0 != 1 || w1 != 1 {
		t.Fatalf("rooms watched: edge 0 %v, edge 1 %v; want one each", w0, w1)
	}

	before0, before1 := scrape(t, e0, changes), scrape(t, e1, changes)
	cycles(cy, dee, 10)
	if got := scrape(t, e0, changes); got != before0 {
		t.Fatalf("edge 0, with nobody in blue, received %v of blue's changes", got-before0)
	}
	if got := scrape(t, e1, changes) - before1; got < 20 {
		t.Fatalf("edge 1 received %v changes of its room's 20 transitions", got)
	}

	// Someone of blue on edge 0: it receives blue while she is there.
	eve := join(e0, "Eve", "blue")
	waitList(eve, 3)
	if got := scrape(t, e0, watched); got != 2 {
		t.Fatalf("edge 0 watches %v rooms with a user in red and one in blue", got)
	}
	mid := scrape(t, e0, changes)
	cycles(cy, dee, 5)
	if got := scrape(t, e0, changes) - mid; got < 10 {
		t.Fatalf("edge 0 received %v of blue's changes while Eve is there, want them all", got)
	}
	_ = eve.Close() // her session ends at once; she stays listed for the grace period
	deadline := time.Now().Add(30 * time.Second)
	for scrape(t, e0, watched) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("edge 0 still watches blue after its last user there left")
		}
		time.Sleep(50 * time.Millisecond)
	}
	after := scrape(t, e0, changes)
	cycles(cy, dee, 5)
	cycles(ann, bob, 1) // a change edge 0 does receive, after blue's
	if got := scrape(t, e0, changes) - after; got != 2*3 {
		t.Fatalf("edge 0 received %v changes after blue closed there, want red's 6 records alone", got)
	}
}
