// Package fanout is the edge's buddy list: one KV watcher on the state
// feeds a Hub, which keeps the list (and each user's own invitations and
// chat) and fans every change out to the edge's subscribers through one
// shared, append-only feed. A subscriber gets a snapshot and its place in
// the feed under one lock, so it gets every later change, in order, and none
// before. The package knows nothing of sockets: a subscriber is a Sub, read
// by whoever writes its frames.
package fanout

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// Hub is the edge's one view of the state. A single KV watcher on the
// whole state bucket feeds it; it fans each buddy-list change out to every
// joined local connection through its feed. A subscriber gets the snapshot
// and its place in the feed under one lock, so it gets all later deltas,
// in order, and none before.
//
// It also keeps the pending invitations and running chats, so that it can
// tell each local user, in the order of the state's changes, what that
// user's own invitations and chat now are (a sync frame) whenever they
// change: a directed event that was lost (its publisher died after the
// commit, the edge was reconnecting) costs the page nothing but the notice.
type Hub struct {
	metrics *metrics.Metrics
	mu      sync.Mutex
	users   map[string]protocol.User
	conns   map[string]Attachment // by user ID, for reconciling sockets with the state
	own     map[string]ownRefs    // by user ID: their invitations and chat
	invs    map[string]protocol.Invitation
	chats   map[string]protocol.Chat
	rev     uint64
	ready   bool
	feed    *feed
	subs    map[*Sub]struct{}
	local   map[string]map[*Sub]struct{} // subscribers by user ID

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

// Attachment is which connection serves a user, as the state says.
type Attachment struct {
	Room       string
	Edge, Conn string
	Connected  bool
}

// New returns a hub whose feed keeps feedBytes of frames: a subscriber
// further behind than that is too slow (Sub.Read reports it).
func New(m *metrics.Metrics, feedBytes int) *Hub {
	return &Hub{metrics: m, feed: newFeed(feedBytes),
		users: map[string]protocol.User{}, conns: map[string]Attachment{}, own: map[string]ownRefs{},
		invs: map[string]protocol.Invitation{}, chats: map[string]protocol.Chat{},
		subs: map[*Sub]struct{}{}, local: map[string]map[*Sub]struct{}{},
	}
}

// Watch applies the watcher's entries until ctx ends or the watcher fails.
func (h *Hub) Watch(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	// The initial values name every record now. After a restart, records
	// deleted while no watcher ran are not among them, and are dropped.
	initial := map[record]bool{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return cmp.Or(ctx.Err(), errors.New("user watcher closed"))
			}
			if initial != nil {
				if e == nil {
					h.dropExcept(initial)
					initial = nil
				} else if k, ok := state.ParseKey(e.Key()); ok {
					initial[record{k.Kind, k.ID}] = true
				}
			}
			h.apply(e)
		}
	}
}

// record names a record the hub holds. IDs are unique across rooms.
type record struct{ kind, id string }

// dropExcept removes every record not in keep and tells the subscribers
// about users that left.
func (h *Hub) dropExcept(keep map[record]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range h.invs {
		if !keep[record{state.KindInvitation, id}] {
			delete(h.invs, id)
		}
	}
	for id := range h.chats {
		if !keep[record{state.KindChat, id}] {
			delete(h.chats, id)
		}
	}
	for id := range h.users {
		if keep[record{state.KindUser, id}] {
			continue
		}
		h.removeLocked(id)
		delete(h.conns, id)
		delete(h.own, id)
		h.broadcastLocked(protocol.ServerFrame{Type: protocol.TypeUserLeft, UserID: id, Revision: h.rev})
	}
}

func (h *Hub) broadcastLocked(frame protocol.ServerFrame) {
	data, err := json.Marshal(frame)
	if err != nil {
		return
	}
	h.metrics.FramesOut.WithLabelValues(frame.Type).Add(float64(len(h.subs)))
	h.feed.append(data, nil)
}

func (h *Hub) apply(e jetstream.KeyValueEntry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e == nil {
		h.ready = true
		return
	}
	if h.ready {
		// Whatever this change sends is queued on every socket when apply
		// returns. The initial values are old news, not lag.
		defer metrics.Since(h.metrics.FanoutLag, e.Created())
	}
	h.rev = e.Revision()
	put := e.Operation() == jetstream.KeyValuePut
	k, ok := state.ParseKey(e.Key())
	if !ok {
		return
	}
	switch id := k.ID; k.Kind {
	case state.KindUser:
		h.applyUser(e, id, put)
	case state.KindInvitation:
		var inv protocol.Invitation
		if !put || json.Unmarshal(e.Value(), &inv) != nil {
			delete(h.invs, id)
			return
		}
		h.invs[id] = inv
	case state.KindChat:
		var c state.Chat
		if !put || json.Unmarshal(e.Value(), &c) != nil {
			delete(h.chats, id)
			return
		}
		h.chats[id] = c.Chat
	}
}

func (h *Hub) applyUser(e jetstream.KeyValueEntry, id string, put bool) {
	if !put {
		delete(h.conns, id)
		delete(h.own, id)
		if _, ok := h.users[id]; !ok {
			return
		}
		h.removeLocked(id)
		h.broadcastLocked(protocol.ServerFrame{Type: protocol.TypeUserLeft, UserID: id, Revision: e.Revision()})
		return
	}
	var u state.User
	if err := json.Unmarshal(e.Value(), &u); err != nil {
		return
	}
	h.conns[id] = Attachment{Room: u.Room, Edge: u.Edge, Conn: u.Conn, Connected: u.Connected}
	refs := refsOf(u)
	if old, ok := h.own[id]; !ok || old != refs {
		h.own[id] = refs
		// The records a user's record names are written before it in the
		// same batch, so they are known by now.
		if subs := h.local[id]; len(subs) > 0 {
			if data, err := json.Marshal(h.syncLocked(id, e.Revision())); err == nil {
				h.metrics.FramesOut.WithLabelValues(protocol.TypeSync).Add(float64(len(subs)))
				for s := range subs {
					h.feed.append(data, s)
					s.wake()
				}
			}
		}
	}
	pub := u.Public()
	if old, ok := h.users[id]; ok && old == pub {
		return // a change others cannot see (invitations, connection)
	}
	h.putLocked(pub)
	h.broadcastLocked(protocol.ServerFrame{Type: protocol.TypeUser, User: &pub, Revision: e.Revision()})
}

// putLocked adds or updates a user in the list.
func (h *Hub) putLocked(u protocol.User) {
	data, err := json.Marshal(u)
	if err != nil {
		return
	}
	if old, ok := h.users[u.ID]; ok {
		if i, found := slices.BinarySearchFunc(h.order, old, compareListed); found {
			h.order = slices.Delete(h.order, i, i+1)
		}
	}
	i, _ := slices.BinarySearchFunc(h.order, u, compareListed)
	h.order = slices.Insert(h.order, i, listed{user: u, json: data})
	h.users[u.ID] = u
	h.listJS = nil
}

// removeLocked takes a listed user out of the list.
func (h *Hub) removeLocked(id string) {
	if i, found := slices.BinarySearchFunc(h.order, h.users[id], compareListed); found {
		h.order = slices.Delete(h.order, i, i+1)
	}
	delete(h.users, id)
	h.listJS = nil
}

// listLocked is the list encoded as a JSON array, in the page's order.
// The slice is never written again: callers may use it after unlocking.
func (h *Hub) listLocked() []byte {
	if h.listJS != nil {
		return h.listJS
	}
	n := 2
	for _, l := range h.order {
		n += len(l.json) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, l := range h.order {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, l.json...)
	}
	h.listJS = append(b, ']')
	return h.listJS
}

// syncLocked is the sync frame of user id: its invitations and chat as the
// hub knows them at rev.
func (h *Hub) syncLocked(id string, rev uint64) protocol.ServerFrame {
	p := h.personalLocked(id)
	return protocol.ServerFrame{Type: protocol.TypeSync, Revision: rev, Incoming: p.Incoming, Outgoing: p.Outgoing, Chat: p.Chat}
}

// personalLocked gathers user id's own invitations and chat from the
// records the hub holds.
func (h *Hub) personalLocked(id string) protocol.Personal {
	var p protocol.Personal
	refs := h.own[id]
	if refs.incoming != "" {
		for _, inv := range strings.Split(refs.incoming, ",") {
			if v, ok := h.invs[inv]; ok {
				p.Incoming = append(p.Incoming, v)
			}
		}
	}
	if v, ok := h.invs[refs.outgoing]; ok && refs.outgoing != "" {
		p.Outgoing = &v
	}
	if v, ok := h.chats[refs.chat]; ok && refs.chat != "" {
		p.Chat = &v
	}
	return p
}

// Subscribe adds a subscriber for user uid and returns it with, taken
// under the same lock, the snapshot it starts from: every change after it
// is in the feed from the Sub's start, none before. wake is called for a
// frame appended for this subscriber alone (its sync), which its writer
// must not hold back; frames for everyone wake the writers waiting on
// Sub.Wait.
func (h *Hub) Subscribe(uid string, wake func()) (*Sub, Snapshot) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &Sub{feed: h.feed, user: uid, wake: wake, from: h.feed.next()}
	h.subs[s] = struct{}{}
	if uid != "" {
		if h.local[uid] == nil {
			h.local[uid] = map[*Sub]struct{}{}
		}
		h.local[uid][s] = struct{}{}
	}
	var own *protocol.Personal
	if _, ok := h.own[uid]; ok && uid != "" {
		p := h.personalLocked(uid)
		own = &p
	}
	return s, Snapshot{List: h.listLocked(), Revision: h.rev, Own: own}
}

// Unsubscribe removes s: nothing more is appended for it.
func (h *Hub) Unsubscribe(s *Sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, s)
	if subs := h.local[s.user]; subs != nil {
		delete(subs, s)
		if len(subs) == 0 {
			delete(h.local, s.user)
		}
	}
}

// List returns the online users in the page's order, encoded as a JSON
// array (not to be written to).
func (h *Hub) List() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.listLocked()
}

// compareUsers is the page's order: by name, then join time (then ID, so
// that no two users compare equal).
func compareUsers(a, b protocol.User) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.JoinedAt, b.JoinedAt), cmp.Compare(a.ID, b.ID))
}

// Attachments returns, as of the latest change applied, which connection
// serves each user (a copy), and whether the hub has read the state once
// (before that it knows nothing).
func (h *Hub) Attachments() (map[string]Attachment, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.conns), h.ready
}

// Ready reports whether the hub has read the whole state once: until then
// its list is not the state's.
func (h *Hub) Ready() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ready
}
