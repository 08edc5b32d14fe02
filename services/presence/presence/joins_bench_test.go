package presence_test

import (
	"context"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/services/presence/presence"
)

// BenchmarkJoinStorm is joins into one room (the lobby, unbounded here)
// from many connections at once, as an edge relays a storm of them: each op
// is one join, answered.
func BenchmarkJoinStorm(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	roles := natstest.StartRoles(b)
	natstest.Run(b, natstest.NewReplica(b, roles, presence.Program,
		presence.Config{LeaseTTL: time.Minute, SweepEvery: time.Second}))
	edge := roles.As(permissions.Edge)
	holdLease(ctx, b, edge, edgeSecret)
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
