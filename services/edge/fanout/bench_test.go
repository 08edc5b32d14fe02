package fanout

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// hubWith returns a hub holding n users, each with a welcomed subscriber
// whose writer has read everything so far.
func hubWith(b *testing.B, n int) (*room, []*Sub) {
	b.Helper()
	h := testRoom(64 << 20) // room for every join the subscribers have yet to read
	subs := make([]*Sub, n)
	for i := range n {
		u := state.User{Room: protocol.Lobby, ID: fmt.Sprintf("u%06d", i), Name: fmt.Sprintf("user %06d", i), State: protocol.StateAvailable, JoinedAt: int64(i)}
		val, _ := json.Marshal(u)
		h.apply(entry{key: state.UserKey(protocol.Lobby, u.ID), val: val, rev: uint64(i + 1), op: jetstream.KeyValuePut})
		s, _ := h.subscribe(u.ID, func() {})
		s.Start()
		subs[i] = s
	}
	for _, s := range subs { // the users who came after
		readAll(b, s)
	}
	return h, subs
}

// One buddy-list change fanned out to every subscriber: decoded once,
// encoded once, appended to the feed once. With waking writers, each
// subscriber's writer waits on the feed, as an idle socket's does on a
// live edge (a busy one holds a batch and waits on its timer), and each
// change is timed until every writer has read it. Reported per change and
// per socket.
func BenchmarkFanout(b *testing.B) {
	for _, waking := range []bool{false, true} {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("waking-writers=%v/sockets=%d", waking, n), func(b *testing.B) {
				h, subs := hubWith(b, n)
				expect, read := func() {}, func() {}
				if waking {
					var stop func()
					expect, read, stop = parkWriters(subs)
					defer stop()
				}
				vals := make([][]byte, 2)
				for i, st := range []protocol.State{protocol.StateInviting, protocol.StateAvailable} {
					vals[i], _ = json.Marshal(state.User{Room: protocol.Lobby, ID: "u000000", Name: "user 000000", State: st})
				}
				rev := uint64(n + 1)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					expect()
					h.apply(entry{key: state.UserKey(protocol.Lobby, "u000000"), val: vals[i%2], rev: rev, op: jetstream.KeyValuePut})
					rev++
					read()
				}
				b.StopTimer()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/socket")
			})
		}
	}
}

// parkWriters starts a stand-in writer on each socket, which waits on the
// feed and reads what it is woken for. Called before an append, expect
// has read, called after it, return once every writer has read it; stop
// ends them.
func parkWriters(subs []*Sub) (expect, read, stop func()) {
	var stopping atomic.Bool
	var pending sync.WaitGroup
	var ended sync.WaitGroup
	for _, s := range subs {
		ended.Add(1)
		go func() {
			defer ended.Done()
			for {
				<-s.Wait()
				if stopping.Load() {
					return
				}
				for more := true; more; {
					_, more, _ = s.Read(nil, 64<<10)
				}
				pending.Done()
			}
		}()
	}
	expect = func() { pending.Add(len(subs)) }
	read = pending.Wait
	stop = func() {
		stopping.Store(true)
		subs[0].feed.append([]byte("{}"), nil) // wakes them all
		ended.Wait()
	}
	return expect, read, stop
}

// The list a welcome carries: from the cache while the revision stands,
// and rebuilt from the encoded records after a change.
func BenchmarkWelcomeList(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		h, _ := hubWith(b, n)
		b.Run(fmt.Sprintf("users=%d/cached", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				h.list()
			}
		})
		b.Run(fmt.Sprintf("users=%d/after-a-change", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				h.mu.Lock()
				h.listJS = nil
				h.listLocked()
				h.mu.Unlock()
			}
		})
	}
}
