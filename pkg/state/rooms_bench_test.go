package state_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/buddytok/buddytok/pkg/natstest"
)

// What it costs an edge to receive the changes of only the rooms its
// users are in, by the NATS mechanisms that can do it (docs/rooms.md).
// A bucket holds rooms × usersPerRoom records keyed r.<room>.user.<n>; an
// edge watches `watched` of the rooms. Each benchmark reports, per room
// watched: the time to start receiving it with its snapshot (open), the
// memory the process (server and client: the server is embedded) holds
// for it, and, for one change in every room of the bucket, how many
// messages reached the edge (only the watched rooms' should).
//
//	go test -run '^$' -bench BenchmarkRoomWatch -benchtime 1x ./pkg/state/
const (
	benchRooms        = 2000
	benchUsersPerRoom = 10
)

func BenchmarkRoomWatch(b *testing.B) {
	for _, watched := range []int{10, 100, 1000} {
		for _, m := range roomMechanisms {
			b.Run(fmt.Sprintf("%s/watched=%d", m.name, watched), func(b *testing.B) {
				for range b.N {
					measureRooms(b, m, watched)
				}
			})
		}
	}
}

// roomMechanism starts receiving the changes of rooms and returns a
// channel of the messages received (snapshot and changes alike), after
// the snapshot of every room has arrived, and a stop function.
type roomMechanism struct {
	name  string
	watch func(ctx context.Context, b *testing.B, nc *nats.Conn, kv jetstream.KeyValue, rooms []string) (<-chan struct{}, func())
	// republish: the stream republishes what it stores on bench.r.<room>...
	// announce: the writer announces each change on bench.room.<room>.
	republish, announce bool
}

var roomMechanisms = []roomMechanism{
	{name: "kv-watcher-per-room", watch: watchPerRoom},
	{name: "one-consumer-filter-per-room", watch: watchOneConsumer},
	{name: "core-subject-per-room", watch: watchCoreSubjects, announce: true},
	{name: "republish-per-room", watch: watchRepublished, republish: true},
}

func roomName(i int) string { return fmt.Sprintf("room%05d", i) }

// fillRooms writes every room's records. With republish, the stream
// republishes every stored record at once on bench.r.<room>...
func fillRooms(ctx context.Context, b *testing.B, js jetstream.JetStream, republish bool) jetstream.KeyValue {
	b.Helper()
	cfg := jetstream.KeyValueConfig{Bucket: "rooms", History: 1, Storage: jetstream.MemoryStorage}
	if republish {
		cfg.RePublish = &jetstream.RePublish{Source: "$KV.rooms.r.>", Destination: "bench.r.>"}
	}
	kv, err := js.CreateKeyValue(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	val := make([]byte, 120)
	for r := range benchRooms {
		for u := range benchUsersPerRoom {
			if _, err := js.PublishAsync(fmt.Sprintf("$KV.rooms.r.%s.user.%d", roomName(r), u), val); err != nil {
				b.Fatal(err)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("filling the rooms took too long")
	}
	return kv
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func measureRooms(b *testing.B, m roomMechanism, watched int) {
	b.StopTimer()
	defer b.StartTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	nc := natstest.Conn(b)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	kv := fillRooms(ctx, b, js, m.republish)
	rooms := make([]string, watched)
	for i := range rooms {
		rooms[i] = roomName(i * (benchRooms / watched))
	}
	before := heapInUse()
	start := time.Now()
	b.StartTimer()
	got, stop := m.watch(ctx, b, nc, kv, rooms)
	b.StopTimer()
	open := time.Since(start)
	held := int64(heapInUse()) - int64(before)
	defer stop()

	// One change in every room of the bucket; count what reaches the
	// edge until the watched rooms' changes are all in.
	val := make([]byte, 120)
	start = time.Now()
	for r := range benchRooms {
		if _, err := js.PublishAsync(fmt.Sprintf("$KV.rooms.r.%s.user.0", roomName(r)), val); err != nil {
			b.Fatal(err)
		}
		if m.announce {
			if err := nc.Publish("bench.room."+roomName(r), val); err != nil {
				b.Fatal(err)
			}
		}
	}
	received := 0
	for received < watched {
		select {
		case <-got:
			received++
		case <-ctx.Done():
			b.Fatalf("%d of %d watched rooms' changes arrived", received, watched)
		}
	}
	deliver := time.Since(start)
	// Anything else that arrives now is another room's change.
	extra := 0
	for drained := false; !drained; {
		select {
		case <-got:
			extra++
		case <-time.After(200 * time.Millisecond):
			drained = true
		}
	}
	b.ReportMetric(float64(open.Microseconds())/float64(watched), "µs-open/room")
	b.ReportMetric(float64(held)/float64(watched), "B-held/room")
	b.ReportMetric(float64(received+extra)/float64(benchRooms), "delivered/change")
	b.ReportMetric(float64(deliver.Milliseconds()), "ms-all-rooms-changed")
}

// watchPerRoom is one KV watcher (an ordered consumer) per room.
func watchPerRoom(ctx context.Context, b *testing.B, _ *nats.Conn, kv jetstream.KeyValue, rooms []string) (<-chan struct{}, func()) {
	got := make(chan struct{}, 1<<16)
	var watchers []jetstream.KeyWatcher
	for _, room := range rooms {
		w, err := kv.Watch(ctx, "r."+room+".>")
		if err != nil {
			b.Fatal(err)
		}
		watchers = append(watchers, w)
		for e := range w.Updates() { // the room's snapshot
			if e == nil {
				break
			}
		}
	}
	for _, w := range watchers {
		go func() {
			for e := range w.Updates() {
				if e != nil {
					got <- struct{}{}
				}
			}
		}()
	}
	return got, func() {
		for _, w := range watchers {
			_ = w.Stop()
		}
	}
}

// watchOneConsumer is one ordered consumer whose filter subjects are the
// rooms; adding a room means making it again with one filter more.
func watchOneConsumer(ctx context.Context, b *testing.B, nc *nats.Conn, _ jetstream.KeyValue, rooms []string) (<-chan struct{}, func()) {
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	filters := make([]string, len(rooms))
	for i, room := range rooms {
		filters[i] = "$KV.rooms.r." + room + ".>"
	}
	cons, err := js.OrderedConsumer(ctx, "KV_rooms", jetstream.OrderedConsumerConfig{
		FilterSubjects: filters, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		b.Fatal(err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		b.Fatal(err)
	}
	for { // the rooms' snapshot
		m, err := msgs.Next()
		if err != nil {
			b.Fatal(err)
		}
		meta, err := m.Metadata()
		if err != nil {
			b.Fatal(err)
		}
		if meta.NumPending == 0 {
			break
		}
	}
	got := make(chan struct{}, 1<<16)
	go func() {
		for {
			if _, err := msgs.Next(); err != nil {
				return
			}
			got <- struct{}{}
		}
	}()
	return got, msgs.Stop
}

// watchCoreSubjects is a core NATS subscription per room, beside a
// snapshot read from the KV (one short-lived ordered consumer per room).
func watchCoreSubjects(ctx context.Context, b *testing.B, nc *nats.Conn, kv jetstream.KeyValue, rooms []string) (<-chan struct{}, func()) {
	got := make(chan struct{}, 1<<16)
	var subs []*nats.Subscription
	for _, room := range rooms {
		sub, err := nc.Subscribe("bench.room."+room, func(*nats.Msg) { got <- struct{}{} })
		if err != nil {
			b.Fatal(err)
		}
		subs = append(subs, sub)
		lister, err := kv.ListKeysFiltered(ctx, "r."+room+".>")
		if err != nil {
			b.Fatal(err)
		}
		for key := range lister.Keys() {
			if _, err := kv.Get(ctx, key); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	return got, func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
}

// BenchmarkRoomAdd is the cost of the one event that matters most as users
// come and go: an edge already receiving `watched` rooms starts receiving
// one more (its first user there joined), snapshot included. With a
// watcher per room it opens one more; with one consumer for all its rooms
// it updates the consumer's filter subjects in place and reads the new
// room's snapshot with a short-lived ordered consumer.
//
//	go test -run '^$' -bench BenchmarkRoomAdd -benchtime 20x ./pkg/state/
func BenchmarkRoomAdd(b *testing.B) {
	for _, watched := range []int{100, 1000} {
		b.Run(fmt.Sprintf("kv-watcher-per-room/watched=%d", watched), func(b *testing.B) {
			ctx, kv, _, rooms := roomAddSetup(b, watched)
			open := func(room string) {
				w, err := kv.Watch(ctx, "r."+room+".>")
				if err != nil {
					b.Fatal(err)
				}
				for e := range w.Updates() {
					if e == nil {
						break
					}
				}
				b.Cleanup(func() { _ = w.Stop() })
			}
			for i := range watched {
				open(rooms[i])
			}
			b.ResetTimer()
			for i := range b.N {
				open(rooms[watched+i])
			}
		})
		b.Run(fmt.Sprintf("one-consumer-update-filters/watched=%d", watched), func(b *testing.B) {
			ctx, kv, js, rooms := roomAddSetup(b, watched)
			filters := make([]string, watched)
			for i := range filters {
				filters[i] = "$KV.rooms.r." + rooms[i] + ".>"
			}
			cfg := jetstream.ConsumerConfig{Name: "edge", FilterSubjects: filters, DeliverPolicy: jetstream.DeliverNewPolicy,
				AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute, MemoryStorage: true}
			if _, err := js.CreateConsumer(ctx, "KV_rooms", cfg); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				room := rooms[watched+i]
				cfg.FilterSubjects = append(cfg.FilterSubjects, "$KV.rooms.r."+room+".>")
				if _, err := js.UpdateConsumer(ctx, "KV_rooms", cfg); err != nil {
					b.Fatal(err)
				}
				w, err := kv.Watch(ctx, "r."+room+".>")
				if err != nil {
					b.Fatal(err)
				}
				for e := range w.Updates() {
					if e == nil {
						break
					}
				}
				_ = w.Stop()
			}
		})
	}
}

// roomAddSetup fills the rooms and, for a watcher per room, needs nothing
// more: each sub-benchmark adds rooms after the first `watched`.
func roomAddSetup(b *testing.B, watched int) (context.Context, jetstream.KeyValue, jetstream.JetStream, []string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	b.Cleanup(cancel)
	js, err := jetstream.New(natstest.Conn(b))
	if err != nil {
		b.Fatal(err)
	}
	kv := fillRooms(ctx, b, js, false)
	rooms := make([]string, benchRooms)
	for i := range rooms {
		rooms[i] = roomName(i)
	}
	if watched+b.N > benchRooms {
		b.Fatalf("at most %d rooms", benchRooms)
	}
	return ctx, kv, js, rooms
}

// watchRepublished is a core NATS subscription per room to what the
// stream republishes as it stores each record (RePublish: no publisher can
// die between the commit and the announcement), beside a snapshot read
// with one batched direct get of the room's last records, bounded by the
// stream's last sequence: no consumer at all.
func watchRepublished(ctx context.Context, b *testing.B, nc *nats.Conn, _ jetstream.KeyValue, rooms []string) (<-chan struct{}, func()) {
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	st, err := js.Stream(ctx, "KV_rooms")
	if err != nil {
		b.Fatal(err)
	}
	got := make(chan struct{}, 1<<16)
	var subs []*nats.Subscription
	for _, room := range rooms {
		sub, err := nc.Subscribe("bench.r."+room+".>", func(*nats.Msg) { got <- struct{}{} })
		if err != nil {
			b.Fatal(err)
		}
		subs = append(subs, sub)
		info, err := st.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		msgs, err := jetstreamext.GetLastMsgsFor(ctx, js, "KV_rooms", []string{"$KV.rooms.r." + room + ".>"},
			jetstreamext.GetLastMsgsUpToSeq(info.State.LastSeq))
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for _, err := range msgs {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != benchUsersPerRoom {
			b.Fatalf("room %s: a snapshot of %d records, want %d", room, n, benchUsersPerRoom)
		}
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	return got, func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
}
