package edge

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// hubWith returns a hub holding n users, each with a welcomed subscriber.
func hubWith(b *testing.B, n int) (*hub, []*client) {
	b.Helper()
	h := newHub(metrics.New())
	subs := make([]*client, n)
	for i := range n {
		u := state.User{ID: fmt.Sprintf("u%06d", i), Name: fmt.Sprintf("user %06d", i), State: protocol.StateAvailable, JoinedAt: int64(i)}
		val, _ := json.Marshal(u)
		h.apply(entry{key: state.UserKey(u.ID), val: val, rev: uint64(i + 1), op: jetstream.KeyValuePut})
		c := testClient()
		h.subscribe(c, u.ID)
		c.sendWelcome([]byte(`{"type":"welcome"}`))
		c.box.take()
		subs[i] = c
	}
	return h, subs
}

// One buddy-list change fanned out to every subscriber: decoded once,
// encoded once, queued on each socket. Reported per change and per socket.
// With waking writers, each socket's writer is parked on its outbox, as on
// a live edge when it does not hold a batch: every frame queued wakes a
// goroutine, which here takes the frames and drops them.
func BenchmarkFanout(b *testing.B) {
	for _, waking := range []bool{false, true} {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("waking-writers=%v/sockets=%d", waking, n), func(b *testing.B) {
				h, subs := hubWith(b, n)
				drain := func() {}
				if waking {
					defer parkWriters(subs)()
				} else {
					drain = func() { // the writers' part, untimed
						b.StopTimer()
						for _, c := range subs {
							c.box.take()
						}
						b.StartTimer()
					}
				}
				vals := make([][]byte, 2)
				for i, st := range []protocol.State{protocol.StateInviting, protocol.StateAvailable} {
					vals[i], _ = json.Marshal(state.User{ID: "u000000", Name: "user 000000", State: st})
				}
				rev := uint64(n + 1)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					h.apply(entry{key: state.UserKey("u000000"), val: vals[i%2], rev: rev, op: jetstream.KeyValuePut})
					rev++
					if i%64 == 63 {
						drain()
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/socket")
			})
		}
	}
}

// parkWriters starts a stand-in writer on each socket, which takes and
// drops what it is woken for; the returned func stops them.
func parkWriters(subs []*client) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				case <-c.box.wake:
					c.box.take()
				}
			}
		}()
	}
	return func() { close(done); wg.Wait() }
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

// A batch of frames encoded for one write.
func BenchmarkAppendTextFrames(b *testing.B) {
	frame, _ := json.Marshal(protocol.ServerFrame{Type: protocol.TypeUser, Revision: 123456,
		User: &protocol.User{ID: protocol.NewID(), Name: "someone", State: protocol.StateInviting, JoinedAt: 1764000000000}})
	for _, n := range []int{1, 4, 16} {
		b.Run(fmt.Sprint("frames=", n), func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				buf = buf[:0]
				for range n {
					buf = appendTextFrame(buf, frame)
				}
			}
		})
	}
}
