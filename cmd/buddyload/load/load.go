// Package load plays many BuddyTok users over the real WebSocket protocol
// and measures what they see: how long a buddy-list change takes to reach
// every user, how long an invitation takes to reach its invitee, how long
// joins take until every list is complete, what is lost and who is
// disconnected, and what the server spends (from its /metrics).
//
// The load shape: Users join, at JoinRate a second; then Pairs pairs of
// them alternate invite and cancel, Rate changes a second in all, for
// Duration. Every change of a user's state reaches every other user of its
// room. With Rooms, the users are spread over that many rooms (Skew: most
// small, a few large), each room has Pairs pairs making Rate changes a
// second, and a room's users connect to one of the edges of URL.
package load

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/latency"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// Config is one load run.
type Config struct {
	URL string // the edge or load balancer, http(s)://host:port; with Rooms, a comma-separated list of edges
	// Metrics is where the server's operator endpoints are (OPS_ADDR),
	// http://host:port: one, or one per edge of URL in the same order.
	// Empty: no server figures.
	Metrics  string
	Users    int           // users joined, in the lobby or spread over Rooms
	JoinRate float64       // joins a second (0: all at once)
	Pairs    int           // pairs of users that alternate invite and cancel
	Rate     float64       // list changes a second, over all pairs
	Duration time.Duration // how long the changes go on
	// Settle bounds each wait for every list to be complete or in step.
	Settle time.Duration
	// Abusers misbehave beside the users while the changes go on (see
	// abuseKinds), to show what they cost everyone else.
	Abusers int
	// Rooms spreads the users over that many rooms (0: all in the lobby);
	// Pairs and Rate are then each room's. Skew 0 makes the rooms equal;
	// s > 0 sizes room k in proportion to 1/k^s. RoomPrefix names this
	// run's rooms (load-<prefix>-<k>), so that runs do not meet.
	Rooms      int
	Skew       float64
	RoomPrefix string
	// NameLength pads each user's name with NamePad (default "x") to this
	// many characters (at most the name limit), so that lists weigh what
	// long names make them: "<" weighs the most, 6 bytes in JSON.
	NameLength int
	NamePad    string
	// Stallers resume users and never read, from StallAddrs client
	// addresses, while the changes go on (see stall), to show what
	// sockets that hold their welcome cost the server's memory. Each
	// holds a socket for StallHold (default DefaultStallHold), then opens
	// another.
	Stallers, StallAddrs int
	StallHold            time.Duration
}

// Result is what a run measured. Durations are in milliseconds in JSON.
type Result struct {
	Users, Pairs       int
	Rate               float64
	ChangesMade        int             // invites and cancels that succeeded
	ChangesRefused     int             // that the server refused (counted, not retried)
	ChangesSkipped     int             // not sent: the pair's last change was still in flight
	RateAchieved       float64         // changes made a second
	ListChange         latency.Summary // a state change, from its request to each other user's frame
	InviteDelivery     latency.Summary // an invite, from its request to the invitee's invitation frame
	JoinsTook          time.Duration
	ListsCompleteAfter time.Duration // from the last welcome until every list held every user
	Missed             int           // change frames some user never received
	InvitesUndelivered int           // invitation events that never reached their invitee
	Disconnects        int           // sockets the server closed during the run
	ServerRSSPerUser   float64       // bytes: RSS growth over the joins / users (from /metrics)
	ServerCPUSeconds   float64       // process CPU during the changes (from /metrics)
	// ServerFramesPerWrite is the frames the edge sent a socket per write
	// during the changes: above 1 once it batches (from the /metrics of
	// the edge answering; behind a load balancer, one of them).
	ServerFramesPerWrite float64
	FramesReceived       int64
	ServerMetricsNotice  string `json:",omitempty"` // why the server figures are missing
	Abusers              int
	Abuse                *Abuse        `json:",omitempty"` // what the abusers met
	Stall                *Stall        `json:",omitempty"` // what the stallers cost
	Rooms                *RoomFigures  `json:",omitempty"` // with rooms: their sizes and per-room latencies
	Edges                []EdgeFigures `json:",omitempty"` // with rooms: what each edge received
}

// Summary is the one-line report.
func (r Result) Summary() string {
	return fmt.Sprintf("users=%d changes=%d/%d (%.1f/s of %.0f/s) list-change %s invite %s undelivered=%d joins %s lists-complete +%s missed=%d disconnects=%d rss/user=%.1fKiB cpu=%.1fs frames/write=%.2f",
		r.Users, r.ChangesMade, r.ChangesMade+r.ChangesRefused+r.ChangesSkipped, r.RateAchieved, r.Rate, r.ListChange, r.InviteDelivery, r.InvitesUndelivered,
		r.JoinsTook.Round(time.Millisecond), r.ListsCompleteAfter.Round(time.Millisecond), r.Missed, r.Disconnects,
		r.ServerRSSPerUser/1024, r.ServerCPUSeconds, r.ServerFramesPerWrite) + r.roomsSummary() + r.abuseSummary() + r.stallSummary()
}

func (r Result) roomsSummary() string {
	if r.Rooms == nil {
		return ""
	}
	s := fmt.Sprintf(" rooms=%d (%d-%d users) room-p99 median %.1fms worst %.1fms", r.Rooms.Rooms, r.Rooms.SmallestRoom, r.Rooms.LargestRoom,
		float64(r.Rooms.ListChangeP99s.Median.Microseconds())/1000, float64(r.Rooms.ListChangeP99s.Worst.Microseconds())/1000)
	for _, e := range r.Edges {
		s += fmt.Sprintf(" edge[%s users=%d rooms=%d watched=%.0f changes=%.0f]", e.URL, e.Users, e.Rooms, e.RoomsWatched, e.RoomChanges)
	}
	return s
}

func (r Result) stallSummary() string {
	if r.Stall == nil {
		return ""
	}
	return " stallers: " + r.Stall.String()
}

func (r Result) abuseSummary() string {
	if r.Abusers == 0 {
		return ""
	}
	return fmt.Sprintf(" abusers=%d %s", r.Abusers, r.Abuse)
}

// user is one simulated tab.
type user struct {
	id    string
	room  int // index in the run's layout
	ws    *websocket.Conn
	wmu   sync.Mutex
	ref   atomic.Int64
	reply sync.Map // ref -> chan frame

	mu sync.Mutex
	// list is the user's buddy list: the state of each user by its
	// run-wide index (see run.index), zero for one not in the list. A
	// byte per user, and nothing for the collector to scan: with
	// thousands of users the lists are millions of entries.
	list  []uint8
	count int           // users in list
	seen  map[int32]int // changing user -> how many of their changes this user saw
	full  time.Time     // when the list first held every user
	want  int
	ended error
}

// stateCodes are the states a list entry holds, by code (0: not listed).
var stateCodes = []protocol.State{"", protocol.StateAvailable, protocol.StateInviting, protocol.StateChatting}

func stateCode(s protocol.State) uint8 {
	for i, c := range stateCodes[1:] {
		if c == s {
			return uint8(i + 1)
		}
	}
	return uint8(len(stateCodes)) // a state this generator does not know
}

// stateOf is user i's state in u's list, "" if not listed.
func (u *user) stateOf(i int32) protocol.State {
	if int(i) >= len(u.list) || u.list[i] == 0 {
		return ""
	}
	if int(u.list[i]) < len(stateCodes) {
		return stateCodes[u.list[i]]
	}
	return "unknown"
}

// set records user i's state in u's list and returns the code it had.
func (u *user) set(i int32, code uint8) uint8 {
	if int(i) >= len(u.list) {
		u.list = append(u.list, make([]uint8, int(i)+1-len(u.list)+64)...)
	}
	old := u.list[i]
	u.list[i] = code
	switch {
	case old == 0 && code != 0:
		u.count++
	case old != 0 && code == 0:
		u.count--
	}
	return old
}

// frame is the part of a server frame the load generator reads.
type frame struct {
	Type       string               `json:"type"`
	Ref        string               `json:"ref"`
	Code       string               `json:"code"`
	You        *protocol.User       `json:"you"`
	Users      []protocol.User      `json:"users"`
	User       *protocol.User       `json:"user"`
	UserID     string               `json:"user_id"`
	Invitation *protocol.Invitation `json:"invitation"`
}

// change is one state change a pair made: who changed, to what, when the
// request was sent, and how many other users have seen it.
type change struct {
	room  int
	user  string
	state protocol.State
	sent  time.Time
	seen  atomic.Int64
}

type history struct {
	mu      sync.Mutex
	changes []*change
}

func (h *history) at(n int) *change {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n < len(h.changes) {
		return h.changes[n]
	}
	return nil
}

type run struct {
	cfg     Config
	lay     layout
	roomLat []latency.Recorder // list changes, per room
	frames  atomic.Int64
	lat     latency.Recorder
	invites latency.Recorder
	// made is each changing user's changes in order: the n-th change of
	// a user's state another user sees is that user's n-th change.
	made       sync.Map // user ID -> *history
	idMu       sync.RWMutex
	ids        []map[string]int32 // per room: user ID -> index in every list of the room
	inviteSent sync.Map           // invitation ID -> time the invite was sent
	inviteGot  sync.Map           // invitation ID -> time the invitee got it (may come before the inviter's answer)
	closing    atomic.Bool
}

// Run plays cfg against the deployment at cfg.URL: every user joins, then
// the pairs change state at the rate asked, then the figures are gathered.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Users < 2*cfg.Pairs || cfg.Users < 2 {
		return Result{}, fmt.Errorf("load: %d users cannot hold %d pairs", cfg.Users, cfg.Pairs)
	}
	if cfg.Settle <= 0 {
		cfg.Settle = time.Minute
	}
	if cfg.RoomPrefix == "" {
		cfg.RoomPrefix = protocol.NewID()[:6]
	}
	lay, err := plan(cfg)
	if err != nil {
		return Result{}, err
	}
	r := &run{cfg: cfg, lay: lay, roomLat: newRoomLatencies(len(lay.rooms)), ids: make([]map[string]int32, len(lay.rooms))}
	for k := range r.ids {
		r.ids[k] = map[string]int32{}
	}
	res := Result{Users: cfg.Users, Pairs: len(lay.pairs), Rate: cfg.Rate, Abusers: cfg.Abusers}
	if cfg.Rooms > 0 {
		res.Rate = cfg.Rate * float64(len(lay.rooms))
	}
	var figs [3]figures // before the joins, after them, after the changes
	var figErrs [3]error
	figs[0], figErrs[0] = serverFigures(ctx, lay.metrics(0))

	users := make([]*user, cfg.Users)
	defer func() {
		r.closing.Store(true)
		for _, u := range users {
			if u != nil {
				_ = u.ws.Close()
			}
		}
	}()
	start := time.Now()
	lastWelcome, err := r.joinAll(ctx, users)
	if err != nil {
		return res, err
	}
	res.JoinsTook = lastWelcome.Sub(start)
	complete, err := r.awaitLists(ctx, users)
	if err != nil {
		return res, err
	}
	res.ListsCompleteAfter = max(0, complete.Sub(lastWelcome))
	figs[1], figErrs[1] = serverFigures(ctx, lay.metrics(0))
	edgesBefore := r.edgeFigures(ctx)

	stopAbuse, stopStall := r.startAbusers(ctx), r.startStallers(ctx)
	defer stopAbuse()
	defer func() { _, _ = stopStall() }()
	changes, err := r.makeChanges(ctx, users, &res)
	if err != nil {
		return res, err
	}
	res.Abuse = stopAbuse()
	if res.Stall, err = stopStall(); err != nil {
		return res, err
	}
	figs[2], figErrs[2] = serverFigures(ctx, lay.metrics(0))
	r.summarise(&res, users, changes)
	if cfg.Rooms > 0 {
		r.summariseRooms(ctx, &res, edgesBefore)
	}
	if err := errors.Join(figErrs[:]...); err != nil {
		res.ServerMetricsNotice = err.Error()
	} else {
		res.serverFigures(figs, cfg.Users)
	}
	return res, nil
}

// startAbusers starts the run's abusers, if any, against its first edge
// until the function it returns is called, which says what they met.
func (r *run) startAbusers(ctx context.Context) func() *Abuse {
	if r.cfg.Abusers == 0 {
		return func() *Abuse { return nil }
	}
	ctx, cancel := context.WithCancel(ctx)
	abused := make(chan *Abuse, 1)
	go func() { abused <- abuse(ctx, wsURL(r.lay.urls[0]), r.cfg.Abusers) }()
	return sync.OnceValue(func() *Abuse { cancel(); return <-abused })
}

// startStallers starts the run's stallers, if any, in its first room
// until the function it returns is called, which says what they cost.
func (r *run) startStallers(ctx context.Context) func() (*Stall, error) {
	if r.cfg.Stallers == 0 {
		return func() (*Stall, error) { return nil, nil }
	}
	ctx, cancel := context.WithCancel(ctx)
	type stalled struct {
		s   *Stall
		err error
	}
	done := make(chan stalled, 1)
	go func() {
		s, err := stall(ctx, wsURL(r.lay.urls[0]), r.lay.rooms[0].name, r.lay.metrics(0),
			r.cfg.Stallers, max(r.cfg.StallAddrs, 1), cmp.Or(r.cfg.StallHold, DefaultStallHold))
		done <- stalled{s, err}
	}()
	return sync.OnceValues(func() (*Stall, error) { cancel(); s := <-done; return s.s, s.err })
}

// serverFigures puts into r what the server's metrics before the joins,
// after them and after the changes say.
func (r *Result) serverFigures(figs [3]figures, users int) {
	r.ServerRSSPerUser = (figs[1].rss - figs[0].rss) / float64(users)
	r.ServerCPUSeconds = figs[2].cpu - figs[1].cpu
	if w := figs[2].writes - figs[1].writes; w > 0 {
		r.ServerFramesPerWrite = (figs[2].framesOut - figs[1].framesOut) / w
	}
}

// joinAll joins every user into users, at the join rate whether or not
// earlier joins were answered (a storm of them is what a deployment
// meets), and returns when the last welcome came.
func (r *run) joinAll(ctx context.Context, users []*user) (lastWelcome time.Time, err error) {
	start := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	inflight := make(chan struct{}, maxJoinsInFlight)
	for i := range users {
		if r.cfg.JoinRate > 0 {
			if d := time.Until(start.Add(time.Duration(float64(i) / r.cfg.JoinRate * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		select {
		case inflight <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return lastWelcome, ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inflight }()
			u, jerr := r.join(ctx, paddedName(fmt.Sprintf("load%05d", i), r.cfg.NameLength, cmp.Or(r.cfg.NamePad, "x")), r.lay.roomOf[i])
			mu.Lock()
			defer mu.Unlock()
			if jerr != nil {
				err = cmp.Or(err, fmt.Errorf("load: user %d: %w", i, jerr))
				return
			}
			users[i] = u
			if now := time.Now(); now.After(lastWelcome) {
				lastWelcome = now
			}
		}()
	}
	wg.Wait()
	return lastWelcome, err
}

// awaitLists waits until every user's list holds every user, and returns
// when the last one did.
func (r *run) awaitLists(ctx context.Context, users []*user) (time.Time, error) {
	for _, u := range users {
		u.mu.Lock()
		u.want = len(r.lay.rooms[u.room].users)
		if u.count >= u.want && u.full.IsZero() {
			u.full = time.Now()
		}
		u.mu.Unlock()
	}
	complete, err := r.await(ctx, users, func(u *user) bool { return !u.full.IsZero() })
	if err != nil {
		return complete, fmt.Errorf("load: lists never complete: %w", err)
	}
	return complete, nil
}

// makeChanges has the pairs change state at the rate asked for the
// duration asked (pair i is users 2i, the inviter, and 2i+1), then waits
// until every list shows the last change. It counts the changes in res.
func (r *run) makeChanges(ctx context.Context, users []*user, res *Result) ([]*change, error) {
	cfg := r.cfg
	if cfg.Pairs <= 0 || cfg.Rate <= 0 {
		return nil, nil
	}
	pairs := r.lay.pairs
	rate := cfg.Rate
	if cfg.Rooms > 0 {
		rate *= float64(len(r.lay.rooms)) // Rate is each room's
	}
	var made, refused, skipped atomic.Int64
	var changes []*change
	var cmu sync.Mutex
	every := time.Duration(float64(time.Second) / rate)
	tick := time.NewTicker(every)
	defer tick.Stop()
	end := time.Now().Add(cfg.Duration)
	pending := make([]string, len(pairs)) // each pair's pending invitation
	var wg sync.WaitGroup
	busy := make([]atomic.Bool, len(pairs))
	for n := 0; time.Now().Before(end); n++ {
		select {
		case <-ctx.Done():
			return changes, ctx.Err()
		case <-tick.C:
		}
		p := n % len(pairs)
		if !busy[p].CompareAndSwap(false, true) {
			skipped.Add(1) // its last change is still in flight
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer busy[p].Store(false)
			c, ok := r.changePair(ctx, users[pairs[p][0]], users[pairs[p][1]], &pending[p])
			if !ok {
				refused.Add(1)
				return
			}
			made.Add(1)
			cmu.Lock()
			changes = append(changes, c)
			cmu.Unlock()
		}()
	}
	tick.Stop()
	wg.Wait()
	res.ChangesMade, res.ChangesRefused, res.ChangesSkipped = int(made.Load()), int(refused.Load()), int(skipped.Load())
	// Let the last changes arrive everywhere.
	if _, err := r.await(ctx, users, func(u *user) bool { return r.inStep(u, users, pending) }); err != nil {
		return changes, fmt.Errorf("load: lists not in step with the changes made: %w", err)
	}
	res.RateAchieved = float64(made.Load()) / cfg.Duration.Seconds()
	return changes, nil
}

// changePair makes one change of a pair: from invites to if the pair has
// no invitation pending (*pending), else cancels it. It reports false if
// the change was refused.
func (r *run) changePair(ctx context.Context, from, to *user, pending *string) (*change, bool) {
	c := &change{room: from.room, user: from.id, state: protocol.StateInviting, sent: time.Now()}
	req := protocol.ClientFrame{Type: protocol.TypeInvite, To: to.id}
	if *pending != "" {
		c.state = protocol.StateAvailable
		req = protocol.ClientFrame{Type: protocol.TypeCancel, Invitation: *pending}
	}
	// Known before the request goes: its frames may come first.
	hv, _ := r.made.LoadOrStore(from.id, &history{})
	h := hv.(*history)
	h.mu.Lock()
	h.changes = append(h.changes, c)
	h.mu.Unlock()
	f, err := from.request(ctx, req)
	switch {
	case err != nil:
		h.mu.Lock()
		h.changes = h.changes[:len(h.changes)-1]
		h.mu.Unlock()
		return c, false
	case req.Type == protocol.TypeInvite && f.Invitation != nil:
		*pending = f.Invitation.ID
		r.inviteSent.Store(f.Invitation.ID, c.sent)
	default:
		*pending = ""
	}
	return c, true
}

// summarise puts what the run measured into res: latencies, invitations
// never delivered, changes some list missed, disconnects.
func (r *run) summarise(res *Result, users []*user, changes []*change) {
	r.inviteSent.Range(func(id, sent any) bool {
		if got, ok := r.inviteGot.Load(id); ok {
			r.invites.Add(got.(time.Time).Sub(sent.(time.Time)))
		} else {
			res.InvitesUndelivered++
		}
		return true
	})
	res.ListChange, res.InviteDelivery = r.lat.Summary(), r.invites.Summary()
	for _, c := range changes {
		res.Missed += len(r.lay.rooms[c.room].users) - 1 - int(c.seen.Load())
	}
	for _, u := range users {
		u.mu.Lock()
		if u.ended != nil {
			res.Disconnects++
		}
		u.mu.Unlock()
	}
	res.FramesReceived = r.frames.Load()
}

// inStep reports whether u's list shows every changing user of its room
// as the last successful change left it.
func (r *run) inStep(u *user, users []*user, pending []string) bool {
	for p, pair := range r.lay.pairs {
		if r.lay.pairIn[p] != u.room {
			continue
		}
		want := protocol.StateAvailable
		if pending[p] != "" {
			want = protocol.StateInviting
		}
		if u.stateOf(r.index(u.room, users[pair[0]].id)) != want {
			return false
		}
	}
	return true
}

// await waits until ok holds for every user (under its lock) and returns
// when the last one got there.
func (r *run) await(ctx context.Context, users []*user, ok func(*user) bool) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Settle)
	defer cancel()
	for {
		done, least, most, ended := 0, -1, 0, 0
		var last time.Time
		for _, u := range users {
			u.mu.Lock()
			if ok(u) {
				done++
				if u.full.After(last) {
					last = u.full
				}
			} else {
				if least < 0 || u.count < least {
					least = u.count
				}
				most = max(most, u.count)
			}
			if u.ended != nil {
				ended++
			}
			u.mu.Unlock()
		}
		if done == len(users) {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%d of %d users (the others' lists hold %d to %d users; %d sockets ended): %w",
				done, len(users), least, most, ended, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (r *run) join(ctx context.Context, name string, room int) (*user, error) {
	rp := r.lay.rooms[room]
	url := wsURL(rp.url)
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	u := &user{ws: ws, room: room, seen: map[int32]int{}}
	go r.read(u)
	f, err := u.request(ctx, protocol.ClientFrame{Type: protocol.TypeJoin, Name: name, Room: rp.name})
	if err != nil {
		_ = ws.Close()
		return nil, err
	}
	u.mu.Lock()
	u.id = f.You.ID
	u.mu.Unlock()
	return u, nil
}

// paddedName pads name with pad to n characters (at most the name limit).
func paddedName(name string, n int, pad string) string {
	n = min(n, protocol.MaxNameRunes)
	if len(name) >= n {
		return name
	}
	return name + " " + strings.Repeat(pad, n-len(name)-1)
}

// wsURL is the WebSocket endpoint of the deployment at base.
func wsURL(base string) string { return "ws" + strings.TrimPrefix(base, "http") + "/ws" }

// request sends f and waits for its answer; an error frame is an error.
func (u *user) request(ctx context.Context, f protocol.ClientFrame) (frame, error) {
	ref := fmt.Sprint(u.ref.Add(1))
	f.Ref = ref
	ch := make(chan frame, 1)
	u.reply.Store(ref, ch)
	defer u.reply.Delete(ref)
	data, err := json.Marshal(f)
	if err != nil {
		return frame{}, err
	}
	u.wmu.Lock()
	err = u.ws.WriteMessage(websocket.TextMessage, data)
	u.wmu.Unlock()
	if err != nil {
		return frame{}, err
	}
	select {
	case <-ctx.Done():
		return frame{}, ctx.Err()
	case a := <-ch:
		if a.Type == protocol.TypeError {
			if a.Code == string(protocol.CodeRateLimited) && f.Type == protocol.TypeJoin {
				// Every simulated user comes from this one address.
				return a, fmt.Errorf("%s refused: %s: run the server with WS_JOIN_RATE_PER_ADDR=0 WS_MAX_CONNS_PER_ADDR=0, and WS_JOIN_RATE=0 for storms over 500 joins a second", f.Type, a.Code)
			}
			return a, fmt.Errorf("%s refused: %s", f.Type, a.Code)
		}
		return a, nil
	}
}

// read applies every frame u receives and measures the changes. Each
// frame is read into the same buffer: what is kept of a frame is copied
// out of it (decoded, or an ID as a string).
func (r *run) read(u *user) {
	var buf bytes.Buffer
	for {
		buf.Reset()
		_, rd, err := u.ws.NextReader()
		if err == nil {
			_, err = buf.ReadFrom(rd)
		}
		data := buf.Bytes()
		now := time.Now()
		if err != nil {
			if !r.closing.Load() {
				u.mu.Lock()
				u.ended = err
				u.mu.Unlock()
			}
			return
		}
		r.frames.Add(1)
		if id, st, ok := scanUserFrame(data); ok {
			u.mu.Lock()
			r.sawUser(u, id, st, now)
			u.checkFull(now)
			u.mu.Unlock()
			continue
		}
		f, list, err := decodeFrame(data)
		if err != nil {
			continue
		}
		if f.Ref != "" {
			if ch, ok := u.reply.Load(f.Ref); ok {
				ch.(chan frame) <- f
			}
		}
		u.mu.Lock()
		switch f.Type {
		case protocol.TypeWelcome:
			for _, x := range f.Users {
				u.set(r.index(u.room, x.ID), stateCode(x.State))
			}
			scanUsers(list, func(id string, st protocol.State) { u.set(r.index(u.room, id), stateCode(st)) })
		case protocol.TypeUser:
			if f.User != nil {
				r.sawUser(u, f.User.ID, f.User.State, now)
			}
		case protocol.TypeUserLeft:
			u.set(r.index(u.room, f.UserID), 0)
		case protocol.TypeInvitation:
			if f.Invitation != nil {
				r.inviteGot.Store(f.Invitation.ID, now)
			}
		}
		u.checkFull(now)
		u.mu.Unlock()
	}
}

// checkFull notes when u's list first held every user (u locked).
func (u *user) checkFull(now time.Time) {
	if u.want > 0 && u.full.IsZero() && u.count >= u.want {
		u.full = now
	}
}

// sawUser applies a user frame to u's list (u locked) and, if it shows
// a change a pair made, records how long the change took to get here.
func (r *run) sawUser(u *user, id string, st protocol.State, now time.Time) {
	i := r.index(u.room, id)
	code := stateCode(st)
	old := u.set(i, code)
	if old == 0 || old == code || id == u.id {
		return
	}
	if h, ok := r.made.Load(id); ok {
		n := u.seen[i]
		u.seen[i] = n + 1
		if c := h.(*history).at(n); c != nil && c.state == st {
			c.seen.Add(1)
			r.lat.Add(now.Sub(c.sent))
			r.roomLat[u.room].Add(now.Sub(c.sent))
		}
	}
}

// index is user id's place in the lists of room's users, the same in all
// of them: a list is as long as its room is large.
func (r *run) index(room int, id string) int32 {
	r.idMu.RLock()
	i, ok := r.ids[room][id]
	r.idMu.RUnlock()
	if ok {
		return i
	}
	r.idMu.Lock()
	defer r.idMu.Unlock()
	if i, ok := r.ids[room][id]; ok {
		return i
	}
	i = int32(len(r.ids[room]))
	r.ids[room][id] = i
	return i
}

// maxJoinsInFlight bounds the joins waiting for their welcome at once.
const maxJoinsInFlight = 2000

type figures struct{ rss, cpu, framesOut, writes float64 }

// serverFigures reads the process's resident memory and CPU time from the
// server's /metrics at base, its operator endpoints (the all-in-one's
// count the whole process).
func serverFigures(ctx context.Context, base string) (figures, error) {
	if base == "" {
		return figures{}, errors.New("server figures: no -metrics given (the server's OPS_ADDR)")
	}
	s, err := metrics.Scrape(ctx, base)
	if err != nil {
		return figures{}, err
	}
	rss, ok := s["process_resident_memory_bytes"]
	if !ok {
		return figures{}, errors.New("server metrics: no process_resident_memory_bytes (not Linux?)")
	}
	f := figures{rss: rss, cpu: s["process_cpu_seconds_total"], writes: s["buddytok_edge_socket_writes_total"]}
	for name, v := range s {
		if strings.HasPrefix(name, "buddytok_edge_frames_out_total{") {
			f.framesOut += v
		}
	}
	return f, nil
}
