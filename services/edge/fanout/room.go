package fanout

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// room is the buddy list of one room, as the edge holds it while one of
// its local users is in the room. The room's republished changes feed it
// (Hub); it fans each change of the list out to the room's local
// subscribers through its feed. A subscriber gets the snapshot and its
// place in the feed under one lock, so it gets all later deltas, in order,
// and none before.
//
// It also keeps the room's pending invitations and running chats, so that
// it can tell each local user, in the order of the state's changes, what
// that user's own invitations and chat now are (a sync frame) whenever
// they change: a directed event that was lost (its publisher died after
// the commit, the edge was reconnecting) costs the page nothing but the
// notice.
type room struct {
	name    string
	metrics *metrics.Metrics
	mu      sync.Mutex
	users   map[string]protocol.User
	conns   map[string]Attachment // by user ID, for reconciling sockets with the state
	own     map[string]ownRefs    // by user ID: their invitations and chat
	invs    map[string]protocol.Invitation
	chats   map[string]protocol.Chat
	rev     uint64
	feed    *feed
	subs    map[*Sub]struct{}
	local   map[string]map[*Sub]struct{} // subscribers by user ID

	// revs is each record's revision as the room holds it, deleted ones
	// included: a change applies only on top of the revision its key had
	// before it (state.Change.Last), so that a change that never arrived
	// (a reconnect, a slow subscription, a stream leader that died before
	// republishing) is noticed and the room read again.
	revs map[state.Key]uint64

	// Kept by the Hub, under its lock: how many subscribers hold the room
	// open, and the NATS subscription feeding it.
	refs int
	sub  *nats.Subscription

	// ready is closed once the room's first snapshot is in.
	ready   chan struct{}
	isReady bool
	syncing bool           // a snapshot is being read: changes wait in held
	held    []state.Change // changes that came while syncing
	resync  func(reason string)
	closed  bool
	life    context.Context // ends when the room closes
	end     context.CancelFunc
	dropped int // the subscription's dropped messages when last looked

	// The list as a welcome carries it, kept ready: each user's record
	// encoded once when it changes, the users in the page's order
	// (maintained as they come and go; a user's sort key never changes),
	// and the encoded list, built at most once per revision that a
	// subscriber asks for it. A join then costs a copy, not a sort and
	// an encoding of every user under the lock that the fan-out needs.
	order  []listed
	listJS []byte // nil: to be built from order
}

// listed is a user in the list, with its record encoded.
type listed struct {
	user protocol.User
	json []byte
}

func compareListed(a listed, b protocol.User) int { return compareUsers(a.user, b) }

// ownRefs names a user's own invitations and chat, as its record does.
type ownRefs struct {
	outgoing string
	incoming string // IDs joined by commas, in the record's order
	chat     string
}

func refsOf(u state.User) ownRefs {
	return ownRefs{outgoing: u.Outgoing, incoming: strings.Join(u.Incoming, ","), chat: u.Chat}
}

func newRoom(name string, m *metrics.Metrics, feedBytes int) *room {
	r := &room{name: name, metrics: m, feed: newFeed(feedBytes), ready: make(chan struct{}),
		users: map[string]protocol.User{}, conns: map[string]Attachment{}, own: map[string]ownRefs{},
		invs: map[string]protocol.Invitation{}, chats: map[string]protocol.Chat{},
		subs: map[*Sub]struct{}{}, local: map[string]map[*Sub]struct{}{}, revs: map[state.Key]uint64{},
		syncing: true, resync: func(string) {},
	}
	r.life, r.end = context.WithCancel(context.Background())
	return r
}

// beginSync holds the changes that arrive from now on until a snapshot
// read after this is loaded; false if the room has closed.
func (r *room) beginSync() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.syncing {
		r.syncing, r.held = true, nil
	}
	return !r.closed
}

// close stops the room: nothing more is applied to it.
func (r *room) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed, r.held = true, nil
	r.end()
}

// droppedMore reports whether the room's subscription dropped messages
// (its handler fell too far behind) since it last looked.
func (r *room) droppedMore() bool {
	n, err := r.sub.Dropped()
	if err != nil || n == r.dropped {
		return false
	}
	r.dropped = n
	return true
}

// receive takes one republished change: it applies it, or holds it while a
// snapshot is being read. A change that does not follow the revision the
// room holds for its key means one was missed: the room is read again.
func (r *room) receive(c state.Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if r.syncing {
		r.held = append(r.held, c)
		return
	}
	if !r.followsLocked(c) {
		return
	}
	// Whatever this change sends is queued on every socket when apply
	// returns.
	defer metrics.Since(r.metrics.FanoutLag, c.Stored)
	r.applyLocked(c)
}

// followsLocked reports whether c is the next change of its key: an older
// one (already in a snapshot, or sent twice) is skipped, and one after a
// change that never came asks for the room to be read again.
func (r *room) followsLocked(c state.Change) bool {
	have := r.revs[c.Key]
	switch {
	case c.Seq <= have:
		return false
	case c.Last != have:
		// c, and whatever came before it, is committed: the snapshot
		// read next holds it.
		r.syncing, r.held = true, nil
		r.resync("gap")
		return false
	}
	return true
}

// load replaces what the room holds with a snapshot read after its
// subscription began, tells the subscribers what changed, then applies the
// changes that came meanwhile. It reports false if one of those shows a
// change missing: the room is then read again (it stays syncing).
func (r *room) load(snap []state.Change) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return true
	}
	keep := map[state.Key]bool{}
	revs := make(map[state.Key]uint64, len(snap))
	for _, c := range snap {
		keep[c.Key] = true
		revs[c.Key] = max(c.Seq, r.revs[c.Key])
		if c.Seq > r.revs[c.Key] {
			r.applyLocked(c)
		}
	}
	r.dropExceptLocked(keep)
	r.revs = revs
	held := r.held
	r.held, r.syncing = nil, false
	for _, c := range held {
		if r.syncing {
			break // a gap: the snapshot read next holds the rest
		}
		if r.followsLocked(c) {
			r.applyLocked(c)
		}
	}
	if r.syncing {
		return false
	}
	if !r.isReady {
		r.isReady = true
		close(r.ready)
	}
	return true
}

// dropExceptLocked removes every record not in keep and tells the
// subscribers about users that left.
func (r *room) dropExceptLocked(keep map[state.Key]bool) {
	for id := range r.invs {
		if !keep[state.Key{Room: r.name, Kind: state.KindInvitation, ID: id}] {
			delete(r.invs, id)
		}
	}
	for id := range r.chats {
		if !keep[state.Key{Room: r.name, Kind: state.KindChat, ID: id}] {
			delete(r.chats, id)
		}
	}
	for id := range r.users {
		if keep[state.Key{Room: r.name, Kind: state.KindUser, ID: id}] {
			continue
		}
		r.removeLocked(id)
		delete(r.conns, id)
		delete(r.own, id)
		r.broadcastLocked(protocol.ServerFrame{Type: protocol.TypeUserLeft, UserID: id, Revision: r.rev})
	}
}

func (r *room) broadcastLocked(frame protocol.ServerFrame) {
	data, err := json.Marshal(frame)
	if err != nil {
		return
	}
	r.metrics.FramesOut.WithLabelValues(frame.Type).Add(float64(len(r.subs)))
	r.feed.append(data)
	for s := range r.subs {
		s.wake.News()
	}
	r.trimLocked()
}

// feedTrimAt is how much a room's feed holds before it drops what every
// subscriber has read. The feed's limit (WS_SEND_QUEUE_BYTES) bounds what
// it holds for a slow one; without trimming, every room an edge holds
// would keep that much, read or not, and an edge holds thousands.
const feedTrimAt = 16 << 10

// trimLocked drops, once the feed holds feedTrimAt, the frames that every
// subscriber of the room has read.
func (r *room) trimLocked() {
	if r.feed.size() < feedTrimAt {
		return
	}
	least := r.feed.next()
	for s := range r.subs {
		least = min(least, s.pos.Load())
	}
	r.feed.trim(least)
}

// applyLocked applies one change of the room's records.
func (r *room) applyLocked(c state.Change) {
	r.rev = max(r.rev, c.Seq)
	r.revs[c.Key] = c.Seq
	switch id := c.ID; c.Kind {
	case state.KindUser:
		r.applyUser(c, id)
	case state.KindInvitation:
		var inv protocol.Invitation
		if c.Deleted || json.Unmarshal(c.Value, &inv) != nil {
			delete(r.invs, id)
			return
		}
		r.invs[id] = inv
	case state.KindChat:
		var ch state.Chat
		if c.Deleted || json.Unmarshal(c.Value, &ch) != nil {
			delete(r.chats, id)
			return
		}
		r.chats[id] = ch.Chat
	}
}

func (r *room) applyUser(c state.Change, id string) {
	if c.Deleted {
		delete(r.conns, id)
		delete(r.own, id)
		if _, ok := r.users[id]; !ok {
			return
		}
		r.removeLocked(id)
		r.broadcastLocked(protocol.ServerFrame{Type: protocol.TypeUserLeft, UserID: id, Revision: c.Seq})
		return
	}
	var u state.User
	if err := json.Unmarshal(c.Value, &u); err != nil {
		return
	}
	r.conns[id] = Attachment{Room: u.Room, Edge: u.Edge, Conn: u.Conn, Connected: u.Connected}
	refs := refsOf(u)
	if old, ok := r.own[id]; !ok || old != refs {
		r.own[id] = refs
		// The records a user's record names are written before it in the
		// same batch, so they are known by now.
		if subs := r.local[id]; len(subs) > 0 {
			if data, err := json.Marshal(r.syncLocked(id, c.Seq)); err == nil {
				r.metrics.FramesOut.WithLabelValues(protocol.TypeSync).Add(float64(len(subs)))
				for s := range subs {
					s.wake.Own(data)
				}
			}
		}
	}
	pub := u.Public()
	if old, ok := r.users[id]; ok && old == pub {
		return // a change others cannot see (invitations, connection)
	}
	r.putLocked(pub)
	r.broadcastLocked(protocol.ServerFrame{Type: protocol.TypeUser, User: &pub, Revision: c.Seq})
}

// putLocked adds or updates a user in the list.
func (r *room) putLocked(u protocol.User) {
	data, err := json.Marshal(u)
	if err != nil {
		return
	}
	if old, ok := r.users[u.ID]; ok {
		if i, found := slices.BinarySearchFunc(r.order, old, compareListed); found {
			r.order = slices.Delete(r.order, i, i+1)
		}
	}
	i, _ := slices.BinarySearchFunc(r.order, u, compareListed)
	r.order = slices.Insert(r.order, i, listed{user: u, json: data})
	r.users[u.ID] = u
	r.listJS = nil
}

// removeLocked takes a listed user out of the list.
func (r *room) removeLocked(id string) {
	if i, found := slices.BinarySearchFunc(r.order, r.users[id], compareListed); found {
		r.order = slices.Delete(r.order, i, i+1)
	}
	delete(r.users, id)
	r.listJS = nil
}

// listLocked is the list encoded as a JSON array, in the page's order.
// The slice is never written again: callers may use it after unlocking.
func (r *room) listLocked() []byte {
	if r.listJS != nil {
		return r.listJS
	}
	n := 2
	for _, l := range r.order {
		n += len(l.json) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, l := range r.order {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, l.json...)
	}
	r.listJS = append(b, ']')
	return r.listJS
}

// syncLocked is the sync frame of user id: its invitations and chat as the
// hub knows them at rev.
func (r *room) syncLocked(id string, rev uint64) protocol.ServerFrame {
	p := r.personalLocked(id)
	return protocol.ServerFrame{Type: protocol.TypeSync, Revision: rev, Incoming: p.Incoming, Outgoing: p.Outgoing, Chat: p.Chat}
}

// personalLocked gathers user id's own invitations and chat from the
// records the hub holds.
func (r *room) personalLocked(id string) protocol.Personal {
	var p protocol.Personal
	refs := r.own[id]
	if refs.incoming != "" {
		for _, inv := range strings.Split(refs.incoming, ",") {
			if v, ok := r.invs[inv]; ok {
				p.Incoming = append(p.Incoming, v)
			}
		}
	}
	if v, ok := r.invs[refs.outgoing]; ok && refs.outgoing != "" {
		p.Outgoing = &v
	}
	if v, ok := r.chats[refs.chat]; ok && refs.chat != "" {
		p.Chat = &v
	}
	return p
}

// subscribe adds a subscriber for user uid and returns it with, taken
// under the same lock, the snapshot it starts from: every change after it
// is in the feed from the Sub's start, none before.
func (r *room) subscribe(uid string, wake Waker) (*Sub, Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &Sub{room: r, feed: r.feed, user: uid, wake: wake, from: r.feed.next()}
	s.pos.Store(s.from)
	r.subs[s] = struct{}{}
	if uid != "" {
		if r.local[uid] == nil {
			r.local[uid] = map[*Sub]struct{}{}
		}
		r.local[uid][s] = struct{}{}
	}
	var own *protocol.Personal
	if _, ok := r.own[uid]; ok && uid != "" {
		p := r.personalLocked(uid)
		own = &p
	}
	return s, Snapshot{List: r.listLocked(), Revision: r.rev, Own: own}
}

// unsubscribe removes s: nothing more is appended for it.
func (r *room) unsubscribe(s *Sub) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.subs, s)
	if subs := r.local[s.user]; subs != nil {
		delete(subs, s)
		if len(subs) == 0 {
			delete(r.local, s.user)
		}
	}
}

// list returns the room's users in the page's order, encoded as a JSON
// array (not to be written to).
func (r *room) list() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listLocked()
}

// compareUsers is the page's order: by name, then join time (then ID, so
// that no two users compare equal).
func compareUsers(a, b protocol.User) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.JoinedAt, b.JoinedAt), cmp.Compare(a.ID, b.ID))
}

func (r *room) eachAttachment(fn func(uid string, a Attachment)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for uid, a := range r.conns {
		fn(uid, a)
	}
}
