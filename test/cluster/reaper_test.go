package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/state"
)

// An edge that dies while presence is cut off from NATS leaves no ghost.
// Presence learns of a lease's expiry from a marker that lives only as
// long as a lease; here its only replica is cut off until both the dead
// edge's lease and that marker are gone, so its watcher never sees the
// expiry. Once it is back, the edge's user must still be removed, as for
// any edge that dies (issue #23: before, the user stayed listed for good).
func TestEdgeDeathUnseenByPresenceLeavesNoGhost(t *testing.T) {
	t.Parallel()
	sys := startSystemWith(t, systemConfig{replicas: 1, edges: 2, grace: 3 * time.Second, cutPresence: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	join := func(e *edgeProc, name string) *client.Client {
		t.Helper()
		c, err := client.Dial(ctx, e.url())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if _, err := c.JoinRoom(ctx, name, "ghosts"); err != nil {
			t.Fatalf("%s joins on %s: %v", name, e.name, err)
		}
		return c
	}
	ann := join(sys.edges[0], "Ann")
	bob := join(sys.edges[1], "Bob")
	bobID := bob.View().Me.ID
	if _, err := ann.WaitView(ctx, func(v client.View) bool { _, ok := v.Users[bobID]; return ok }); err != nil {
		t.Fatalf("Ann never saw Bob: %v", err)
	}

	nc := sys.connect()
	defer nc.Close()
	st := sys.store(ctx, nc)
	bobRec, _, err := st.GetUser(ctx, "ghosts", bobID)
	if err != nil {
		t.Fatal(err)
	}
	leases, err := st.JetStream().Stream(ctx, "KV_"+state.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	sys.cutPresence(true)
	sys.edges[1].kill()
	// Wait until the lease stream holds nothing of Bob's edge: its lease
	// has expired and the marker of its expiry is gone too. (Ann's edge's
	// lease lapses meanwhile as well: presence, which writes leases, is
	// cut off. It is made again once presence is back.)
	subject := "$KV." + state.LeaseBucket + "." + bobRec.Edge
	for {
		_, err := leases.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the dead edge's lease or its marker is still stored: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	sys.cutPresence(false)

	// Detached once presence finds the lease gone, then removed when the
	// grace period (3 s) ends.
	wait, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	if _, err := ann.WaitView(wait, func(v client.View) bool { _, ok := v.Users[bobID]; return !ok }); err != nil {
		t.Fatalf("Bob, whose edge died while presence was cut off, is still listed 30 s after presence came back: %v\npresence:\n%s",
			err, sys.services["presence"][0].tail(20))
	}
}
