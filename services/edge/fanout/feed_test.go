package fanout

import (
	"cmp"
	"math"
	"strings"
	"testing"
)

// A reader gets, in order, the frames for everyone and those for its own
// client after its place, never another subscriber's, a bounded number of
// bytes at a time; the frames beyond the byte limit are dropped from the
// front, and a reader that still needed them learns it fell behind.
func TestFeed(t *testing.T) {
	t.Parallel()
	ann, bob := &Sub{}, &Sub{}
	type op struct {
		kind string // append (to: "", "ann", "bob"), read (by: "ann", "bob")
		data string
		to   string
		max  int    // read: bytes to stop at (0: no bound)
		want string // read: the frames, space-separated
		more bool   // read: frames left for the next read
		ok   bool   // read: not fallen behind
	}
	for _, tc := range []struct {
		name  string
		limit int
		ops   []op
	}{
		{"everyone's and one's own, in order", 100, []op{
			{kind: "append", data: "a1"},
			{kind: "append", data: "b1", to: "bob"},
			{kind: "append", data: "n1", to: "ann"},
			{kind: "append", data: "a2"},
			{kind: "read", to: "ann", want: "a1 n1 a2", ok: true},
			{kind: "read", to: "bob", want: "a1 b1 a2", ok: true},
			{kind: "read", to: "ann", want: "", ok: true},
			{kind: "append", data: "a3"},
			{kind: "read", to: "ann", want: "a3", ok: true},
		}},
		{"a reader behind the limit fell behind; one within it did not", 6, []op{
			{kind: "append", data: "a1"},
			{kind: "read", to: "bob", want: "a1", ok: true},
			{kind: "append", data: "a2"},
			{kind: "append", data: "a3"},
			{kind: "append", data: "a4"}, // a1 dropped: 6 bytes kept
			{kind: "read", to: "ann", want: "", ok: false},
			{kind: "read", to: "bob", want: "a2 a3 a4", ok: true},
		}},
		{"a read stops once it holds its bytes, and the next goes on", 100, []op{
			{kind: "append", data: "a1"},
			{kind: "append", data: "a2"},
			{kind: "append", data: "b1", to: "bob"},
			{kind: "append", data: "a3"},
			{kind: "append", data: "a4"},
			{kind: "read", to: "ann", max: 3, want: "a1 a2", more: true, ok: true},
			{kind: "read", to: "ann", max: 3, want: "a3 a4", more: false, ok: true},
			{kind: "read", to: "bob", max: 2, want: "a1", more: true, ok: true},
			{kind: "read", to: "bob", max: 4, want: "a2 b1", more: true, ok: true},
			{kind: "read", to: "bob", max: 4, want: "a3 a4", more: false, ok: true},
			{kind: "read", to: "bob", max: 4, want: "", more: false, ok: true},
		}},
		{"a frame larger than the limit is kept until the next", 2, []op{
			{kind: "append", data: "big frame"},
			{kind: "read", to: "ann", want: "big frame", ok: true},
			{kind: "append", data: "b"},
			{kind: "read", to: "bob", want: "", ok: false},
			{kind: "read", to: "ann", want: "b", ok: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFeed(tc.limit)
			subs := map[string]*Sub{"ann": ann, "bob": bob}
			pos := map[string]*uint64{"ann": new(uint64), "bob": new(uint64)}
			for i, op := range tc.ops {
				switch op.kind {
				case "append":
					f.append([]byte(op.data), subs[op.to])
				case "read":
					frames, more, ok := f.read(pos[op.to], subs[op.to], nil, cmp.Or(op.max, math.MaxInt))
					var got []string
					for _, fr := range frames {
						got = append(got, string(fr))
					}
					if strings.Join(got, " ") != op.want || more != op.more || ok != op.ok {
						t.Fatalf("op %d: %s read %q more %v ok %v, want %q more %v ok %v",
							i, op.to, strings.Join(got, " "), more, ok, op.want, op.more, op.ok)
					}
				}
			}
		})
	}
}

// A writer about to stop sees a frame for everyone after its place, and
// not a frame for another subscriber or one it has read.
func TestFeedPending(t *testing.T) {
	t.Parallel()
	f := newFeed(1 << 10)
	ann := &Sub{feed: f, from: f.next()}
	bob := &Sub{feed: f}
	f.append([]byte("before the start"), nil)
	if ann.Pending() {
		t.Fatal("a subscriber not started yet has frames pending")
	}
	ann.pos.Store(f.next())
	ann.Start()
	if ann.Pending() {
		t.Fatal("frames pending with nothing appended")
	}
	f.append([]byte("for bob"), bob)
	if ann.Pending() {
		t.Fatal("a frame for another subscriber is pending")
	}
	f.append([]byte("for all"), nil)
	if !ann.Pending() {
		t.Fatal("a frame for everyone is not pending")
	}
	if frames, _, ok := ann.Read(nil, math.MaxInt); !ok || len(frames) != 1 || string(frames[0]) != "for all" {
		t.Fatalf("read %q ok %v, want the frame for everyone only", frames, ok)
	}
	if ann.Pending() {
		t.Fatal("a frame already read is pending")
	}
}
