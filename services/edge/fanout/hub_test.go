package fanout

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// entry is a record's change as a room applies it.
type entry struct {
	key string
	val []byte
	rev uint64
	op  jetstream.KeyValueOp
}

// testRoom is a room already read, whose feed keeps feedBytes.
func testRoom(feedBytes int) *room {
	r := newRoom(protocol.Lobby, metrics.New(), feedBytes)
	r.load(nil)
	return r
}

// whole is a frame in parts in one piece, as a client reads it.
func whole(p Parts) []byte { return slices.Concat(p.Head, p.Shared, p.Tail) }

// testWaker counts what a room tells a subscriber's writer, keeps the
// frames for the subscriber alone, and signals a test waiting for it on ch.
type testWaker struct {
	news atomic.Int64
	ch   chan struct{} // one slot
	mu   sync.Mutex
	own  [][]byte
}

func newTestWaker() *testWaker { return &testWaker{ch: make(chan struct{}, 1)} }

func (w *testWaker) Own(frame []byte) {
	w.mu.Lock()
	w.own = append(w.own, frame)
	w.mu.Unlock()
	w.signal()
}

func (w *testWaker) News() { w.news.Add(1); w.signal() }

// owned returns the frames for the subscriber alone so far.
func (w *testWaker) owned() [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.own)
}

func (w *testWaker) signal() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// apply applies e, whatever revision its key had before.
func (r *room) apply(e entry) {
	k, _ := state.ParseKey(e.key)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applyLocked(state.Change{Key: k, Seq: e.rev, Deleted: e.op != jetstream.KeyValuePut, Value: e.val})
}

// changes makes n random puts and deletes of a few users, revisions 1..n.
func changes(n int, seed uint64) []entry {
	rng := rand.New(rand.NewPCG(seed, 0))
	states := []protocol.State{protocol.StateAvailable, protocol.StateInviting, protocol.StateChatting}
	var out []entry
	for rev := uint64(1); rev <= uint64(n); rev++ {
		id := fmt.Sprintf("u%02d", rng.IntN(20))
		if rng.IntN(5) == 0 {
			out = append(out, entry{key: state.UserKey(protocol.Lobby, id), rev: rev, op: jetstream.KeyValueDelete})
			continue
		}
		// Connection changes keep the public record as it is: the hub
		// must not send those.
		u := state.User{Room: protocol.Lobby, ID: id, Name: "N" + id, State: states[rng.IntN(len(states))], JoinedAt: 1, Conn: fmt.Sprint(rev)}
		val, _ := json.Marshal(u)
		out = append(out, entry{key: state.UserKey(protocol.Lobby, id), val: val, rev: rev, op: jetstream.KeyValuePut})
	}
	return out
}

// readAll reads everything the feed holds for s, as its writer would, a
// pooled write buffer at a time.
func readAll(t testing.TB, s *Sub) [][]byte {
	t.Helper()
	var all [][]byte
	for {
		frames, more, ok := s.Read(nil, 64<<10)
		if !ok {
			t.Fatal("the subscriber fell behind the feed")
		}
		all = append(all, frames...)
		if !more {
			return all
		}
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
			h := testRoom(protocol.SendQueueBytes)
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
				s       *Sub
				welcome []byte
				rev     uint64
			}
			var subs []joined
			for range 8 {
				s, snap := h.subscribe("", newTestWaker())
				var users []protocol.User
				if err := json.Unmarshal(snap.List, &users); err != nil {
					t.Fatal(err)
				}
				if !slices.IsSortedFunc(users, compareUsers) {
					t.Fatalf("subscriber's list is not in the page's order: %v", users)
				}
				welcome, err := snap.Welcome(protocol.ServerFrame{Type: protocol.TypeWelcome})
				if err != nil {
					t.Fatal(err)
				}
				s.Start()
				subs = append(subs, joined{s, whole(welcome), snap.Revision})
			}
			wg.Wait()
			h.mu.Lock()
			want := maps.Clone(h.users)
			var order []protocol.User
			for _, l := range h.order {
				order = append(order, l.user)
			}
			h.mu.Unlock()
			if sorted := slices.SortedFunc(maps.Values(want), compareUsers); !slices.Equal(order, sorted) {
				t.Fatalf("the hub's kept order %v is not its users sorted %v", order, sorted)
			}
			for i, s := range subs {
				got := map[string]protocol.User{}
				last := s.rev
				frames := append([][]byte{s.welcome}, readAll(t, s.s)...)
				for n, data := range frames {
					first := n == 0
					var f protocol.ServerFrame
					if err := json.Unmarshal(data, &f); err != nil {
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

// A joined user's own invitations and chat reach its connection as sync
// frames, in the state's order, each complete: applied one after the other
// they end where the state ends. They go to the connection alone, never
// into the feed that every subscriber reads.
func TestHubSyncsAUsersOwnRecords(t *testing.T) {
	t.Parallel()
	h := testRoom(protocol.SendQueueBytes)
	put := func(rev uint64, key string, v any) {
		val, _ := json.Marshal(v)
		h.apply(entry{key: key, val: val, rev: rev, op: jetstream.KeyValuePut})
	}
	del := func(rev uint64, key string) {
		h.apply(entry{key: key, rev: rev, op: jetstream.KeyValueDelete})
	}
	ann := state.User{Room: protocol.Lobby, ID: "ann", Name: "Ann", State: protocol.StateAvailable}
	put(1, state.UserKey(protocol.Lobby, "ann"), ann)
	wakes := newTestWaker()
	s, snap := h.subscribe("ann", wakes)
	if own := snap.Own; own == nil || own.Incoming != nil || own.Outgoing != nil || own.Chat != nil {
		t.Fatalf("subscribe: own records %+v, want known and empty", own)
	}
	s.Start()
	if frames := readAll(t, s); len(frames) != 0 {
		t.Fatalf("%d frames in the feed after the snapshot, want none", len(frames))
	}

	inv := protocol.Invitation{ID: "i1", From: "bob", To: "ann"}
	put(2, state.InvitationKey(protocol.Lobby, "i1"), inv)
	ann.Incoming = []string{"i1"}
	put(3, state.UserKey(protocol.Lobby, "ann"), ann)
	put(4, state.UserKey(protocol.Lobby, "ann"), ann) // nothing of hers changed: no sync
	chat := state.Chat{Chat: protocol.Chat{ID: "c1", Parties: [2]string{"bob", "ann"}}}
	put(5, state.ChatKey(protocol.Lobby, "c1"), chat)
	del(6, state.InvitationKey(protocol.Lobby, "i1"))
	ann.Incoming, ann.Chat, ann.State = nil, "c1", protocol.StateChatting
	put(7, state.UserKey(protocol.Lobby, "ann"), ann)

	for _, data := range readAll(t, s) {
		if strings.Contains(string(data), `"type":"sync"`) {
			t.Fatalf("a sync in the feed, which every subscriber reads: %s", data)
		}
	}
	var syncs []protocol.ServerFrame
	for _, data := range wakes.owned() {
		var f protocol.ServerFrame
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatal(err)
		}
		if f.Type == protocol.TypeSync {
			syncs = append(syncs, f)
		}
	}
	want := []struct {
		rev      uint64
		incoming int
		chat     string
	}{{3, 1, ""}, {7, 0, "c1"}}
	if len(syncs) != len(want) {
		t.Fatalf("%d syncs %+v, want %d", len(syncs), syncs, len(want))
	}
	for i, w := range want {
		f := syncs[i]
		chatID := ""
		if f.Chat != nil {
			chatID = f.Chat.ID
		}
		if f.Revision != w.rev || len(f.Incoming) != w.incoming || chatID != w.chat {
			t.Fatalf("sync %d: %+v, want revision %d with %d incoming and chat %q", i, f, w.rev, w.incoming, w.chat)
		}
	}
}

// The encoded list goes into a welcome as its users, and an empty one is
// left out as the encoder leaves it out.
func TestWithUsers(t *testing.T) {
	t.Parallel()
	frame, _ := json.Marshal(protocol.ServerFrame{Type: protocol.TypeWelcome, Revision: 7})
	for _, users := range [][]protocol.User{nil, {{ID: "a", Name: "Ann"}}, {{ID: "a", Name: "Ann"}, {ID: "b", Name: "Bob", State: protocol.StateChatting}}} {
		list, _ := json.Marshal(users)
		if users == nil {
			list = []byte("[]")
		}
		want, _ := json.Marshal(protocol.ServerFrame{Type: protocol.TypeWelcome, Revision: 7, Users: users})
		var got, exp protocol.ServerFrame
		if err := json.Unmarshal(whole(withUsers(frame, list)), &got); err != nil {
			t.Fatalf("%d users: %v", len(users), err)
		}
		_ = json.Unmarshal(want, &exp)
		if !reflect.DeepEqual(got, exp) {
			t.Fatalf("%d users: got %+v, want %+v", len(users), got, exp)
		}
	}
}

// A room's feed keeps what a subscriber has yet to read, and no more than
// a little of what every subscriber has read: an edge holds thousands of
// rooms, and each would otherwise keep its limit of frames.
func TestRoomFeedDropsWhatEveryoneRead(t *testing.T) {
	t.Parallel()
	for _, slow := range []bool{false, true} {
		h := testRoom(protocol.SendQueueBytes)
		a, _ := h.subscribe("a", newTestWaker())
		b, _ := h.subscribe("b", newTestWaker())
		a.Start()
		b.Start()
		for i, e := range changes(2000, 7) {
			h.apply(e)
			if i%50 == 0 {
				readAll(t, a)
				if !slow {
					readAll(t, b)
				}
			}
		}
		readAll(t, a)
		if !slow {
			readAll(t, b)
		}
		switch size := h.feed.size(); {
		case !slow && size > feedTrimAt+1<<10:
			t.Errorf("everyone read everything, and the feed holds %d bytes (trims at %d)", size, feedTrimAt)
		case slow && size < 2*feedTrimAt:
			t.Errorf("a subscriber has read nothing, and the feed holds only %d bytes of what it must get", size)
		}
		if slow {
			if frames := readAll(t, b); len(frames) == 0 {
				t.Error("the slow subscriber found nothing to read")
			}
		}
	}
}

// One user's own records never cost another subscriber its place: a user
// whose syncs are large and frequent (many pending invitations with long
// names, a page reconnecting again and again) fills its own queue, and a
// slow reader of the room, within the feed's window for what everyone
// receives, is not pushed out of it. (Issue #23: each such sync was
// appended to the room's feed once a socket of that user, and every slow
// reader of the edge was closed as slow_consumer within 1.2 s.)
func TestOwnFramesDoNotPushOthersOutOfTheFeed(t *testing.T) {
	t.Parallel()
	const window = 8 << 10
	h := testRoom(window)
	put := func(rev uint64, key string, v any) {
		val, _ := json.Marshal(v)
		h.apply(entry{key: key, val: val, rev: rev, op: jetstream.KeyValuePut})
	}
	v := state.User{Room: protocol.Lobby, ID: "v", Name: "V", State: protocol.StateAvailable}
	put(1, state.UserKey(protocol.Lobby, "v"), v)
	slow, _ := h.subscribe("slow", newTestWaker()) // reads nothing
	slow.Start()
	victim := newTestWaker()
	vs, _ := h.subscribe("v", victim)
	vs.Start()

	long := strings.Repeat("ẅ", 100)
	rev := uint64(2)
	for i := range 100 {
		id := fmt.Sprintf("i%03d", i)
		put(rev, state.InvitationKey(protocol.Lobby, id), protocol.Invitation{ID: id, From: "x" + id, FromName: long, To: "v", ToName: "V"})
		v.Incoming = append(v.Incoming, id)
		put(rev+1, state.UserKey(protocol.Lobby, "v"), v)
		rev += 2
	}
	var own int
	for _, f := range victim.owned() {
		own += len(f)
	}
	if own < 10*window {
		t.Fatalf("V's syncs came to %d bytes; the test needs them far over the window of %d", own, window)
	}
	if _, _, ok := slow.Read(nil, math.MaxInt); !ok {
		t.Fatalf("a slow reader of the room fell out of its %d-byte window behind V's %d bytes of syncs, none for it", window, own)
	}
}
