package edge

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// entry is a KV entry as the buddy-list watcher delivers it.
type entry struct {
	key string
	val []byte
	rev uint64
	op  jetstream.KeyValueOp
}

func (e entry) Bucket() string                  { return state.Bucket }
func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return e.val }
func (e entry) Revision() uint64                { return e.rev }
func (e entry) Created() time.Time              { return time.Time{} }
func (e entry) Delta() uint64                   { return 0 }
func (e entry) Operation() jetstream.KeyValueOp { return e.op }

// changes makes n random puts and deletes of a few users, revisions 1..n.
func changes(n int, seed uint64) []entry {
	rng := rand.New(rand.NewPCG(seed, 0))
	states := []protocol.State{protocol.StateAvailable, protocol.StateInviting, protocol.StateChatting}
	var out []entry
	for rev := uint64(1); rev <= uint64(n); rev++ {
		id := fmt.Sprintf("u%02d", rng.IntN(20))
		if rng.IntN(5) == 0 {
			out = append(out, entry{key: state.UserKey(id), rev: rev, op: jetstream.KeyValueDelete})
			continue
		}
		// Connection changes keep the public record as it is: the hub
		// must not send those.
		u := state.User{ID: id, Name: "N" + id, State: states[rng.IntN(len(states))], JoinedAt: 1, Conn: fmt.Sprint(rev)}
		val, _ := json.Marshal(u)
		out = append(out, entry{key: state.UserKey(id), val: val, rev: rev, op: jetstream.KeyValuePut})
	}
	return out
}

func testClient() *client {
	return &client{
		e:    &Edge{log: slog.New(slog.DiscardHandler)},
		out:  make(chan []byte, protocol.SendQueueFrames),
		quit: make(chan struct{}),
	}
}

// A connection that joins while the list changes gets a snapshot and then
// exactly the changes after it, in order: applied like the page applies
// them, they rebuild the hub's final list, whenever it joined. The list is
// sorted and encoded outside the hub's lock (after subscribe returns), so
// changes do arrive between the snapshot and the welcome.
func TestHubSnapshotThenDeltas(t *testing.T) {
	t.Parallel()
	for _, seed := range []uint64{1, 2, 3, 4} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			t.Parallel()
			h := newHub()
			all := changes(400, seed)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, e := range all {
					h.apply(e)
				}
			}()
			type joined struct {
				c     *client
				users []protocol.User
				rev   uint64
			}
			var subs []joined
			for range 8 {
				c := testClient()
				users, rev := h.subscribe(c)
				sortUsers(users)
				data, err := json.Marshal(protocol.ServerFrame{Type: protocol.TypeWelcome, Users: users, Revision: rev})
				if err != nil {
					t.Fatal(err)
				}
				c.sendWelcome(data)
				subs = append(subs, joined{c, users, rev})
			}
			wg.Wait()
			h.mu.Lock()
			want := maps.Clone(h.users)
			h.mu.Unlock()
			for i, s := range subs {
				got := map[string]protocol.User{}
				last := s.rev
				for first := true; len(s.c.out) > 0; first = false {
					var f protocol.ServerFrame
					if err := json.Unmarshal(<-s.c.out, &f); err != nil {
						t.Fatal(err)
					}
					if first {
						if f.Type != protocol.TypeWelcome {
							t.Fatalf("subscriber %d: first frame %s, want the welcome", i, f.Type)
						}
						for _, u := range f.Users {
							got[u.ID] = u
						}
						continue
					}
					if f.Revision <= last {
						t.Fatalf("subscriber %d: delta at revision %d after %d: out of order or already in the snapshot", i, f.Revision, last)
					}
					last = f.Revision
					switch f.Type {
					case protocol.TypeUser:
						got[f.User.ID] = *f.User
					case protocol.TypeUserLeft:
						delete(got, f.UserID)
					default:
						t.Fatalf("subscriber %d: unexpected %s", i, f.Type)
					}
				}
				if !maps.Equal(got, want) {
					t.Fatalf("subscriber %d (joined at revision %d) ends with %d users %v, the hub has %d %v", i, s.rev, len(got), got, len(want), want)
				}
			}
		})
	}
}
