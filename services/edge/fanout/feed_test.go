package fanout

import (
	"cmp"
	"math"
	"strings"
	"testing"
)

// A reader gets, in order, the frames after its place, a bounded number
// of bytes at a time; the frames beyond the byte limit are dropped from
// the front, and a reader that still needed them learns it fell behind.
func TestFeed(t *testing.T) {
	t.Parallel()
	type op struct {
		kind string // append, read (by: "ann", "bob")
		data string
		by   string
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
		{"in order, each reader from its own place", 100, []op{
			{kind: "append", data: "a1"},
			{kind: "append", data: "a2"},
			{kind: "read", by: "ann", want: "a1 a2", ok: true},
			{kind: "append", data: "a3"},
			{kind: "read", by: "bob", want: "a1 a2 a3", ok: true},
			{kind: "read", by: "ann", want: "a3", ok: true},
			{kind: "read", by: "ann", want: "", ok: true},
		}},
		{"a reader behind the limit fell behind; one within it did not", 6, []op{
			{kind: "append", data: "a1"},
			{kind: "read", by: "bob", want: "a1", ok: true},
			{kind: "append", data: "a2"},
			{kind: "append", data: "a3"},
			{kind: "append", data: "a4"}, // a1 dropped: 6 bytes kept
			{kind: "read", by: "ann", want: "", ok: false},
			{kind: "read", by: "bob", want: "a2 a3 a4", ok: true},
		}},
		{"a read stops once it holds its bytes, and the next goes on", 100, []op{
			{kind: "append", data: "a1"},
			{kind: "append", data: "a2"},
			{kind: "append", data: "a3"},
			{kind: "append", data: "a4"},
			{kind: "read", by: "ann", max: 3, want: "a1 a2", more: true, ok: true},
			{kind: "read", by: "ann", max: 3, want: "a3 a4", more: false, ok: true},
			{kind: "read", by: "bob", max: 2, want: "a1", more: true, ok: true},
			{kind: "read", by: "bob", max: 4, want: "a2 a3", more: true, ok: true},
			{kind: "read", by: "bob", max: 4, want: "a4", more: false, ok: true},
			{kind: "read", by: "bob", max: 4, want: "", more: false, ok: true},
		}},
		{"a frame larger than the limit is kept until the next", 2, []op{
			{kind: "append", data: "big frame"},
			{kind: "read", by: "ann", want: "big frame", ok: true},
			{kind: "append", data: "b"},
			{kind: "read", by: "bob", want: "", ok: false},
			{kind: "read", by: "ann", want: "b", ok: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFeed(tc.limit)
			pos := map[string]*uint64{"ann": new(uint64), "bob": new(uint64)}
			for i, op := range tc.ops {
				switch op.kind {
				case "append":
					f.append([]byte(op.data))
				case "read":
					frames, more, ok := f.read(pos[op.by], nil, cmp.Or(op.max, math.MaxInt))
					var got []string
					for _, fr := range frames {
						got = append(got, string(fr))
					}
					if strings.Join(got, " ") != op.want || more != op.more || ok != op.ok {
						t.Fatalf("op %d: %s read %q more %v ok %v, want %q more %v ok %v",
							i, op.by, strings.Join(got, " "), more, ok, op.want, op.more, op.ok)
					}
				}
			}
		})
	}
}

// A writer about to stop sees a frame after its place, and not one it
// has read.
func TestFeedPending(t *testing.T) {
	t.Parallel()
	f := newFeed(1 << 10)
	ann := &Sub{feed: f, from: f.next()}
	f.append([]byte("before the start"))
	if ann.Pending() {
		t.Fatal("a subscriber not started yet has frames pending")
	}
	ann.pos.Store(f.next())
	ann.Start()
	if ann.Pending() {
		t.Fatal("frames pending with nothing appended")
	}
	f.append([]byte("for all"))
	if !ann.Pending() {
		t.Fatal("a frame is not pending")
	}
	if frames, _, ok := ann.Read(nil, math.MaxInt); !ok || len(frames) != 1 || string(frames[0]) != "for all" {
		t.Fatalf("read %q ok %v, want the frame", frames, ok)
	}
	if ann.Pending() {
		t.Fatal("a frame already read is pending")
	}
}
