package state_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/state"
)

// Rooms will be carried to the edges by the state stream's RePublish
// (docs/rooms.md), which relies on this: every record a transaction
// commits is republished, with its sequence and the previous sequence of
// its key, and nothing of a transaction that was refused; on one server and
// on a three-node cluster alike.
func TestRepublishCarriesCommittedTransactionsOnly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		nodes int
	}{{"one server", 1}, {"three-node cluster", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			nc := natstest.Conn(t)
			if tc.nodes > 1 {
				nc = natstest.Cluster(t, tc.nodes)
			}
			st, err := state.Open(ctx, nc, state.Options{Replicas: tc.nodes})
			if err != nil {
				t.Fatal(err)
			}
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			stream, err := js.Stream(ctx, "KV_"+state.Bucket)
			if err != nil {
				t.Fatal(err)
			}
			cfg := stream.CachedInfo().Config
			cfg.RePublish = &jetstream.RePublish{Source: "$KV." + state.Bucket + ".>", Destination: "republished.>"}
			if _, err := js.UpdateStream(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			sub, err := nc.SubscribeSync("republished.>")
			if err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}

			var first state.Txn // three records, one atomic batch
			for _, id := range []string{"ann", "bob", "cat"} {
				first.Put(state.UserKey(lobby, id), 0, state.User{ID: id})
			}
			if err := st.Commit(ctx, &first); err != nil {
				t.Fatal(err)
			}
			got := map[string]*nats.Msg{}
			for range 3 {
				m, err := sub.NextMsg(10 * time.Second)
				if err != nil {
					t.Fatalf("%d of 3 committed records republished: %v", len(got), err)
				}
				got[m.Subject] = m
			}
			_, annRev, err := st.GetUser(ctx, lobby, "ann")
			if err != nil {
				t.Fatal(err)
			}
			ann := got["republished.r.lobby.user.ann"]
			if ann == nil || ann.Header.Get(jetstream.SequenceHeader) != strconv.FormatUint(annRev, 10) || ann.Header.Get("Nats-Last-Sequence") != "0" {
				t.Fatalf("ann republished as %v, want sequence %d after none", ann, annRev)
			}

			var stale state.Txn // refused: ann moved since revision 0
			stale.Put(state.UserKey(lobby, "ann"), 0, state.User{ID: "ann", Name: "again"})
			stale.Put(state.UserKey(lobby, "dan"), 0, state.User{ID: "dan"})
			if err := st.Commit(ctx, &stale); !errors.Is(err, state.ErrConflict) {
				t.Fatalf("a stale transaction: %v, want a conflict", err)
			}
			var next state.Txn
			next.Put(state.UserKey(lobby, "ann"), annRev, state.User{ID: "ann", Name: "Ann"})
			next.Put(state.UserKey(lobby, "eve"), 0, state.User{ID: "eve"})
			if err := st.Commit(ctx, &next); err != nil {
				t.Fatal(err)
			}
			// The next republished records are the later transaction's:
			// nothing of the refused one came between.
			for range 2 {
				m, err := sub.NextMsg(10 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				switch m.Subject {
				case "republished.r.lobby.user.ann":
					if m.Header.Get("Nats-Last-Sequence") != strconv.FormatUint(annRev, 10) {
						t.Fatalf("ann's change names %s as the one before, want %d", m.Header.Get("Nats-Last-Sequence"), annRev)
					}
				case "republished.r.lobby.user.eve":
				default:
					t.Fatalf("republished %s, of a refused transaction", m.Subject)
				}
			}
		})
	}
}
