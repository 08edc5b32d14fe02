package load

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/buddytok/buddytok/pkg/latency"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// layout is where the users are: the rooms, their sizes, the edge each
// room's users connect to, and the pairs that change state in each.
type layout struct {
	rooms  []roomPlan
	roomOf []int    // by user index
	pairs  [][2]int // user indices, inviter first; a room's pairs are its first users
	pairIn []int    // the room of each pair
	urls   []string // the edges, in the order users were spread over them
	ops    []string // their operator endpoints: one per edge, or one for all
}

type roomPlan struct {
	name  string
	users []int // user indices
	url   string
}

// metrics is the operator endpoints of edge i ("" if not given).
func (l layout) metrics(i int) string {
	if len(l.ops) == 0 {
		return ""
	}
	return l.ops[min(i, len(l.ops)-1)]
}

// plan spreads cfg.Users over cfg.Rooms rooms (none: everyone in the
// lobby). With Skew 0 the rooms are as equal as the numbers allow; with
// Skew s > 0 room k (from 1) holds users in proportion to 1/k^s, most of
// them small and a few large, each at least 2. Each room has Pairs pairs
// of its first users (as many as fit). Rooms take the edges of cfg.URL (a
// comma-separated list) in turn.
func plan(cfg Config) (layout, error) {
	urls := strings.Split(cfg.URL, ",")
	var l layout
	l.urls = urls
	if cfg.Metrics != "" {
		l.ops = strings.Split(cfg.Metrics, ",")
		if len(l.ops) != 1 && len(l.ops) != len(urls) {
			return l, fmt.Errorf("load: %d metrics URLs for %d edges: give one, or one per edge", len(l.ops), len(urls))
		}
	}
	if cfg.Rooms <= 0 {
		all := make([]int, cfg.Users)
		for i := range all {
			all[i] = i
		}
		l.rooms = []roomPlan{{name: protocol.Lobby, users: all, url: urls[0]}}
	} else {
		if cfg.Users < 2*cfg.Rooms {
			return l, fmt.Errorf("load: %d users cannot fill %d rooms of at least 2", cfg.Users, cfg.Rooms)
		}
		sizes := roomSizes(cfg.Users, cfg.Rooms, cfg.Skew)
		next := 0
		for k, n := range sizes {
			rp := roomPlan{name: fmt.Sprintf("load-%s-%04d", cfg.RoomPrefix, k), url: urls[k%len(urls)]}
			for range n {
				rp.users = append(rp.users, next)
				next++
			}
			l.rooms = append(l.rooms, rp)
		}
	}
	l.roomOf = make([]int, cfg.Users)
	for k, rp := range l.rooms {
		for _, i := range rp.users {
			l.roomOf[i] = k
		}
		for p := 0; p < cfg.Pairs && 2*p+1 < len(rp.users); p++ {
			l.pairs = append(l.pairs, [2]int{rp.users[2*p], rp.users[2*p+1]})
			l.pairIn = append(l.pairIn, k)
		}
	}
	if cfg.Pairs > 0 && len(l.pairs) == 0 {
		return l, fmt.Errorf("load: no room holds a pair")
	}
	return l, nil
}

// roomSizes splits users over rooms: equally (skew 0), or in proportion
// to 1/k^skew, every room at least 2, the sizes adding up to users.
func roomSizes(users, rooms int, skew float64) []int {
	weights := make([]float64, rooms)
	var total float64
	for k := range weights {
		weights[k] = math.Pow(float64(k+1), -skew)
		total += weights[k]
	}
	sizes := make([]int, rooms)
	spare := users - 2*rooms
	given := 0
	for k, w := range weights {
		sizes[k] = 2 + int(float64(spare)*w/total)
		given += sizes[k]
	}
	for k := 0; given < users; k = (k + 1) % rooms {
		sizes[k]++
		given++
	}
	return sizes
}

// RoomFigures are the per-room latencies of a run with rooms.
type RoomFigures struct {
	Rooms          int
	SmallestRoom   int
	LargestRoom    int
	ListChangeP99s struct{ Median, Worst time.Duration } // over the rooms, each room's p99
}

func (r *run) roomFigures(l layout) RoomFigures {
	var f RoomFigures
	f.Rooms = len(l.rooms)
	var p99s []time.Duration
	for k, rp := range l.rooms {
		if f.SmallestRoom == 0 || len(rp.users) < f.SmallestRoom {
			f.SmallestRoom = len(rp.users)
		}
		f.LargestRoom = max(f.LargestRoom, len(rp.users))
		if s := r.roomLat[k].Summary(); s.Count > 0 {
			p99s = append(p99s, s.P99)
		}
	}
	if len(p99s) > 0 {
		slices.Sort(p99s)
		f.ListChangeP99s.Median, f.ListChangeP99s.Worst = p99s[len(p99s)/2], p99s[len(p99s)-1]
	}
	return f
}

// EdgeFigures are what one edge received during the changes, from its
// /metrics: the rooms it held open and the changes of them it received.
type EdgeFigures struct {
	URL          string
	Users        int     // the run's users connected to it
	Rooms        int     // the run's rooms on it
	RoomsWatched float64 // buddytok_edge_rooms_watched at the end
	RoomChanges  float64 // buddytok_edge_room_changes_total during the changes
}

// newRoomLatencies makes a latency recorder per room.
func newRoomLatencies(n int) []latency.Recorder { return make([]latency.Recorder, n) }

// edgeFigures reads, from each edge's /metrics, the rooms it holds open and
// the changes of them it received so far, with the run's users and rooms
// on it.
func (r *run) edgeFigures(ctx context.Context) []EdgeFigures {
	out := make([]EdgeFigures, len(r.lay.urls))
	for i, url := range r.lay.urls {
		out[i].URL = url
		for _, rp := range r.lay.rooms {
			if rp.url == url {
				out[i].Rooms++
				out[i].Users += len(rp.users)
			}
		}
		if r.lay.metrics(i) == "" {
			continue
		}
		s, err := metrics.Scrape(ctx, r.lay.metrics(i))
		if err != nil {
			continue
		}
		out[i].RoomsWatched, out[i].RoomChanges = s["buddytok_edge_rooms_watched"], s["buddytok_edge_room_changes_total"]
	}
	return out
}

// summariseRooms puts the rooms' figures into res, and each edge's, its
// room changes counted since before (after the joins).
func (r *run) summariseRooms(ctx context.Context, res *Result, before []EdgeFigures) {
	rf := r.roomFigures(r.lay)
	res.Rooms = &rf
	res.Edges = r.edgeFigures(ctx)
	for i := range res.Edges {
		if i < len(before) {
			res.Edges[i].RoomChanges -= before[i].RoomChanges
		}
	}
}
