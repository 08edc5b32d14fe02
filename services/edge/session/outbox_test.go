package session

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/wsframe"
	"github.com/buddytok/buddytok/services/edge/fanout"
)

// Frames written together in one write arrive as the same messages, in
// order, at a standard WebSocket client, whatever their length encoding.
func TestAppendTextFrameIsReadByAWebSocketClient(t *testing.T) {
	t.Parallel()
	sizes := []int{0, 1, 125, 126, 127, 0xffff, 0x10000, 300_000}
	var want [][]byte
	for i, n := range sizes {
		want = append(want, bytes.Repeat([]byte{byte('a' + i)}, n))
	}
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		var b []byte
		for _, d := range want {
			b = wsframe.AppendText(b, d)
		}
		_, _ = ws.UnderlyingConn().Write(b)
		_, _, _ = ws.ReadMessage() // until the client closes
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for i, w := range want {
		mt, got, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("message %d (%d bytes): %v", i, len(w), err)
		}
		if mt != websocket.TextMessage || !bytes.Equal(got, w) {
			t.Fatalf("message %d: type %d, %d bytes; want text, %d bytes", i, mt, len(got), len(w))
		}
	}
}

// The outbox keeps frames in order, holds what follows a welcome until the
// welcome, never holds answers, and refuses what would take it over its
// limit (a welcome's own bytes counted, not its list, which is the room's).
func TestOutbox(t *testing.T) {
	t.Parallel()
	type op struct {
		kind   string // send, deliver, welcome, drop, take
		size   int    // a welcome's: its own bytes
		shared int    // a welcome's list
		ok     bool   // send and deliver: accepted
		took   string // take: the frames' names, in order
	}
	frame := func(name string, size int) []byte {
		return append([]byte(name+":"), bytes.Repeat([]byte{'x'}, max(0, size-len(name)-1))...)
	}
	name := func(d []byte) string { n, _, _ := bytes.Cut(d, []byte(":")); return string(n) }
	for _, tc := range []struct {
		name  string
		limit int
		ops   []op
	}{
		{"answers go out before the welcome, deltas wait for it", 100, []op{
			{kind: "deliver", size: 10, ok: true},
			{kind: "send", size: 10, ok: true},
			{kind: "take", took: "f1"},
			{kind: "welcome", size: 10},
			{kind: "deliver", size: 10, ok: true},
			{kind: "take", took: "f3 f0 f4"},
		}},
		{"a welcome's list is not counted", 100, []op{
			{kind: "welcome", size: 3, shared: 1000},
			{kind: "deliver", size: 60, ok: true},
			{kind: "deliver", size: 60, ok: false},
			{kind: "take", took: "f0 f1"},
			{kind: "deliver", size: 90, ok: true},
			{kind: "take", took: "f4"},
		}},
		{"a welcome's own bytes are", 100, []op{
			{kind: "welcome", size: 50, shared: 1000},
			{kind: "deliver", size: 60, ok: false},
			{kind: "deliver", size: 50, ok: true},
			{kind: "take", took: "f0 f2"},
			{kind: "deliver", size: 100, ok: true},
		}},
		{"a frame over the whole limit goes alone", 100, []op{
			{kind: "welcome", size: 10},
			{kind: "take", took: "f0"},
			{kind: "deliver", size: 500, ok: true},
			{kind: "send", size: 1, ok: false},
			{kind: "take", took: "f2"},
			{kind: "send", size: 1, ok: true},
			{kind: "take", took: "f5"},
		}},
		{"held frames dropped free their room", 100, []op{
			{kind: "deliver", size: 90, ok: true},
			{kind: "deliver", size: 20, ok: false},
			{kind: "drop"},
			{kind: "deliver", size: 90, ok: true},
			{kind: "welcome", size: 5},
			{kind: "take", took: "f4 f3"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := newOutbox(tc.limit)
			for i, op := range tc.ops {
				data := frame(fmt.Sprint("f", i), op.size)
				switch op.kind {
				case "send", "deliver":
					push := o.send
					if op.kind == "deliver" {
						push = o.deliver
					}
					if got := push(data); got != op.ok {
						t.Fatalf("op %d: %s of %d bytes accepted %v, want %v", i, op.kind, op.size, got, op.ok)
					}
				case "welcome":
					o.welcome(fanout.Parts{Head: data, Shared: bytes.Repeat([]byte{'u'}, op.shared)}, nil)
				case "drop":
					o.dropHeld()
				case "take":
					frames, welcome, _, _ := o.take()
					var names []string
					for _, f := range frames {
						if f == nil {
							f = welcome.Head
						}
						names = append(names, name(f))
					}
					if got := strings.Join(names, " "); got != op.took {
						t.Fatalf("op %d: took %q, want %q", i, got, op.took)
					}
				}
			}
		})
	}
}

// Frames queued before the writer looks are taken at once, each urging
// it (only the first of which starts it), and a ping's answer comes with
// the next take.
func TestOutboxTakesEverythingQueued(t *testing.T) {
	t.Parallel()
	o := newOutbox(1 << 10)
	urges := 0
	o.urge = func() { urges++ }
	o.welcome(fanout.Parts{Head: []byte("w")}, nil)
	for range 5 {
		o.deliver([]byte("d"))
	}
	o.answerPing([]byte("p1"))
	o.answerPing([]byte("p2"))
	if urges != 8 {
		t.Fatalf("%d urges for a welcome, 5 frames and 2 pings; want 8", urges)
	}
	frames, _, ctl, _ := o.take()
	if len(frames) != 6 || !ctl.pongDue || string(ctl.pong) != "p2" {
		t.Fatalf("took %d frames, pong %q due %v; want 6, the latest ping's p2", len(frames), ctl.pong, ctl.pongDue)
	}
	if frames, _, ctl, _ := o.take(); len(frames) != 0 || ctl.pongDue {
		t.Fatalf("second take: %d frames, pong due %v; want nothing", len(frames), ctl.pongDue)
	}
	if got := o.queued(); got != 0 {
		t.Fatalf("%d bytes counted as queued after everything was taken", got)
	}
}

// The keepalive's ping starts an idle writer, and goes with a busy one's
// next take without ending its hold: on a busy edge with short pings, a
// ping that cut holds short would undo the batching.
func TestOutboxPingDoesNotEndAHold(t *testing.T) {
	t.Parallel()
	o := newOutbox(1 << 10)
	kicks, urges := 0, 0
	o.kick = func() { kicks++ }
	o.urge = func() { urges++ }
	o.ping()
	if kicks != 1 || urges != 0 || !o.pending() {
		t.Fatalf("after a ping: %d kicks, %d urges, pending %v; want 1, 0 (it must not end a hold), true", kicks, urges, o.pending())
	}
	if !o.hold() {
		t.Fatal("a ping ended a hold")
	}
	if _, _, ctl, _ := o.take(); !ctl.ping {
		t.Fatal("the ping was not taken")
	}
	if o.pending() {
		t.Fatal("still pending after the take")
	}
	o.send([]byte("an answer"))
	if urges != 1 || o.hold() {
		t.Fatalf("a queued answer: %d urges, hold %v; want 1 (it ends a hold), false", urges, o.hold())
	}
}
