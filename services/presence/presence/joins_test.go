package presence_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
	"github.com/buddytok/buddytok/services/presence/presence"
)

// A storm of joins into one room commits in groups: every join is answered,
// the room holds exactly its limit and room_full answers the rest, a user
// ID asked twice at once joins once, and the other rooms are unaffected.
func TestJoinStormKeepsTheRoom(t *testing.T) {
	t.Parallel()
	const limit = 30
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	roles, edge := presenceAlone(ctx, t, presence.Config{LeaseTTL: time.Second, SweepEvery: 20 * time.Millisecond, RoomMaxUsers: limit})
	store, err := state.Open(ctx, roles.Admin(), state.Options{})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name       string
		room       string
		joins      int
		twice      bool // the last join asks the first one's user ID again
		wantJoined int
	}{
		{"within the limit", "storm-within", limit, false, limit},
		{"over the limit", "storm-over", 3 * limit, false, limit},
		{"an ID twice", "storm-twice", 10, true, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			room := tc.room
			ids := make([]string, tc.joins)
			for i := range ids {
				ids[i] = protocol.NewID()
			}
			if tc.twice {
				ids[len(ids)-1] = ids[0]
			}
			errs := make([]error, tc.joins)
			var wg sync.WaitGroup
			for i, id := range ids {
				wg.Go(func() {
					req := protocol.JoinRequest{Room: room, UserID: id, Name: "Fan", Edge: edgeID, Conn: protocol.NewID(), Secret: protocol.NewSecret()}
					errs[i] = natsrpc.Call(ctx, edge, protocol.SubjectPresenceJoin, req, &protocol.JoinReply{})
				})
			}
			wg.Wait()
			joined := map[string]bool{}
			for i, err := range errs {
				switch code := protocol.CodeOf(err); {
				case err == nil:
					if joined[ids[i]] {
						t.Fatalf("user %s joined twice", ids[i])
					}
					joined[ids[i]] = true
				case code == protocol.CodeRoomFull && tc.joins > limit:
				case code == protocol.CodeConflict && tc.twice && ids[i] == ids[0]:
				default:
					t.Fatalf("join %d: %v", i, err)
				}
			}
			if len(joined) != tc.wantJoined {
				t.Fatalf("%d of %d joined, want %d", len(joined), tc.joins, tc.wantJoined)
			}
			snap, err := store.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			stored := 0
			for id := range snap.Users {
				if snap.RoomOf[id] != room {
					continue
				}
				stored++
				if !joined[id] {
					t.Errorf("%s is stored in the room but was not told it joined", id)
				}
			}
			if stored != tc.wantJoined {
				t.Fatalf("the room stores %d users, want %d", stored, tc.wantJoined)
			}
		})
	}
}

// BenchmarkJoinStorm is joins into one room (the lobby, unbounded here)
// from many connections at once, as an edge relays a storm of them: each op
// is one join, answered.
func BenchmarkJoinStorm(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, edge := presenceAlone(ctx, b, presence.Config{LeaseTTL: time.Minute, SweepEvery: time.Second})
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := protocol.JoinRequest{Room: protocol.Lobby, UserID: protocol.NewID(), Name: "Fan", Edge: edgeID, Conn: protocol.NewID(), Secret: protocol.NewSecret()}
			if err := natsrpc.Call(ctx, edge, protocol.SubjectPresenceJoin, req, &protocol.JoinReply{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "joins/s")
}

// presenceAlone starts one presence replica with cfg, and returns the
// roles and the edge role's connection, holding edgeID's lease until ctx
// ends.
func presenceAlone(ctx context.Context, tb testing.TB, cfg presence.Config) (*natstest.Roles, *nats.Conn) {
	tb.Helper()
	roles := natstest.StartRoles(tb)
	natstest.Run(tb, natstest.NewReplica(tb, roles, presence.Program, cfg))
	edge := roles.As(permissions.Edge)
	holdLease(ctx, tb, edge, edgeSecret)
	return roles, edge
}
