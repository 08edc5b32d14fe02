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
// whose writer has read everything so far, told by wakers[i] (a
// testWaker if nil).
func hubWith(b *testing.B, n int, wakers []Waker) (*room, []*Sub) {
	b.Helper()
	h := testRoom(64 << 20) // room for every join the subscribers have yet to read
	subs := make([]*Sub, n)
	for i := range n {
		u := state.User{Room: protocol.Lobby, ID: fmt.Sprintf("u%06d", i), Name: fmt.Sprintf("user %06d", i), State: protocol.StateAvailable, JoinedAt: int64(i)}
		val, _ := json.Marshal(u)
		h.apply(entry{key: state.UserKey(protocol.Lobby, u.ID), val: val, rev: uint64(i + 1), op: jetstream.KeyValuePut})
		var w Waker = newTestWaker()
		if wakers != nil {
			w = wakers[i]
		}
		s, _ := h.subscribe(u.ID, w)
		s.Start()
		subs[i] = s
	}
	for _, s := range subs { // the users who came after
		readAll(b, s)
	}
	return h, subs
}

// One buddy-list change fanned out to every subscriber: decoded once,
// encoded once, appended to the feed once, and every subscriber's writer
// told. With writers, each subscriber has a stand-in writer that runs as
// a socket's does: started when told, stopped once it has read everything
// (on a live edge a busy one holds a batch meanwhile and is not started
// again). Each change is timed until every writer has read it. Reported
// per change and per socket.
func BenchmarkFanout(b *testing.B) {
	for _, writers := range []bool{false, true} {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("writers=%v/sockets=%d", writers, n), func(b *testing.B) {
				var read sync.WaitGroup
				var wakers []Waker
				var stand []*standInWriter
				if writers {
					for range n {
						w := &standInWriter{read: &read}
						stand = append(stand, w)
						wakers = append(wakers, w)
					}
				}
				h, subs := hubWith(b, n, wakers)
				for i, w := range stand {
					w.sub = subs[i]
					w.armed.Store(true)
				}
				vals := make([][]byte, 2)
				for i, st := range []protocol.State{protocol.StateInviting, protocol.StateAvailable} {
					vals[i], _ = json.Marshal(state.User{Room: protocol.Lobby, ID: "u000000", Name: "user 000000", State: st})
				}
				rev := uint64(n + 1)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					read.Add(len(stand))
					h.apply(entry{key: state.UserKey(protocol.Lobby, "u000000"), val: vals[i%2], rev: rev, op: jetstream.KeyValuePut})
					rev++
					read.Wait()
				}
				b.StopTimer()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/socket")
			})
		}
	}
}

// standInWriter is a socket's writer as the fan-out sees it: a goroutine
// started by News when none runs, which reads what the feed holds for it
// and stops, looking once more before it does.
type standInWriter struct {
	sub     *Sub
	armed   atomic.Bool // once the hub is filled and sub set
	running atomic.Bool
	read    *sync.WaitGroup // done once a frame
}

func (w *standInWriter) Own([]byte) {}

func (w *standInWriter) News() {
	if w.armed.Load() && w.running.CompareAndSwap(false, true) {
		go w.run()
	}
}

func (w *standInWriter) run() {
	for {
		for more := true; more; {
			var frames [][]byte
			frames, more, _ = w.sub.Read(nil, 64<<10)
			for range frames {
				w.read.Done()
			}
		}
		w.running.Store(false)
		if !w.sub.Pending() || !w.running.CompareAndSwap(false, true) {
			return
		}
	}
}

// The list a welcome carries: from the cache while the revision stands,
// and rebuilt from the encoded records after a change.
func BenchmarkWelcomeList(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		h, _ := hubWith(b, n, nil)
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
