package edge

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

// hub is the edge's one view of the state. A single KV watcher on the
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
type hub struct {
	metrics *metrics.Metrics
	mu      sync.Mutex
	users   map[string]protocol.User
	conns   map[string]attachment // by user ID, for reconciling sockets with the state
	own     map[string]ownRefs    // by user ID: their invitations and chat
	invs    map[string]protocol.Invitation
	chats   map[string]protocol.Chat
	rev     uint64
	ready   bool
	feed    *feed
	subs    map[*client]struct{}
	local   map[string]map[*client]struct{} // subscribers by user ID

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

// attachment is which connection serves a user, as the state says.
type attachment struct {
	edge, conn string
	connected  bool
}

// newHub returns a hub whose feed keeps feedBytes of frames: a socket
// further behind than that is too slow.
func newHub(m *metrics.Metrics, feedBytes int) *hub {
	return &hub{metrics: m, feed: newFeed(feedBytes),
		users: map[string]protocol.User{}, conns: map[string]attachment{}, own: map[string]ownRefs{},
		invs: map[string]protocol.Invitation{}, chats: map[string]protocol.Chat{},
		subs: map[*client]struct{}{}, local: map[string]map[*client]struct{}{},
	}
}

// watch applies the watcher's entries until ctx ends or the watcher fails.
func (h *hub) watch(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	// The initial values name every record now. After a restart, records
	// deleted while no watcher ran are not among them, and are dropped.
	initial := map[string]bool{}
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
				} else {
					initial[e.Key()] = true
				}
			}
			h.apply(e)
		}
	}
}

// dropExcept removes every record whose key is not in keep and tells the
// subscribers about users that left.
func (h *hub) dropExcept(keep map[string]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range h.invs {
		if !keep[state.InvitationKey(id)] {
			delete(h.invs, id)
		}
	}
	for id := range h.chats {
		if !keep[state.ChatKey(id)] {
			delete(h.chats, id)
		}
	}
	for id := range h.users {
		if keep[state.UserKey(id)] {
			continue
		}
		h.removeLocked(id)
		delete(h.conns, id)
		delete(h.own, id)
		h.broadcastLocked(protocol.ServerFrame{Type: protocol.TypeUserLeft, UserID: id, Revision: h.rev})
	}
}

func (h *hub) broadcastLocked(frame protocol.ServerFrame) {
	data, err := json.Marshal(frame)
	if err != nil {
		return
	}
	h.metrics.FramesOut.WithLabelValues(frame.Type).Add(float64(len(h.subs)))
	h.feed.append(data, nil)
}

func (h *hub) apply(e jetstream.KeyValueEntry) {
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
	switch key := e.Key(); {
	case strings.HasPrefix(key, state.UserPrefix):
		h.applyUser(e, strings.TrimPrefix(key, state.UserPrefix), put)
	case strings.HasPrefix(key, state.InvitationPrefix):
		id := strings.TrimPrefix(key, state.InvitationPrefix)
		var inv protocol.Invitation
		if !put || json.Unmarshal(e.Value(), &inv) != nil {
			delete(h.invs, id)
			return
		}
		h.invs[id] = inv
	case strings.HasPrefix(key, state.ChatPrefix):
		id := strings.TrimPrefix(key, state.ChatPrefix)
		var c state.Chat
		if !put || json.Unmarshal(e.Value(), &c) != nil {
			delete(h.chats, id)
			return
		}
		h.chats[id] = c.Chat
	}
}

func (h *hub) applyUser(e jetstream.KeyValueEntry, id string, put bool) {
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
	h.conns[id] = attachment{edge: u.Edge, conn: u.Conn, connected: u.Connected}
	refs := refsOf(u)
	if old, ok := h.own[id]; !ok || old != refs {
		h.own[id] = refs
		// The records a user's record names are written before it in the
		// same batch, so they are known by now.
		if subs := h.local[id]; len(subs) > 0 {
			if data, err := json.Marshal(h.syncLocked(id, e.Revision())); err == nil {
				h.metrics.FramesOut.WithLabelValues(protocol.TypeSync).Add(float64(len(subs)))
				for c := range subs {
					h.feed.append(data, c)
					c.box.poke()
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
func (h *hub) putLocked(u protocol.User) {
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
func (h *hub) removeLocked(id string) {
	if i, found := slices.BinarySearchFunc(h.order, h.users[id], compareListed); found {
		h.order = slices.Delete(h.order, i, i+1)
	}
	delete(h.users, id)
	h.listJS = nil
}

// listLocked is the list encoded as a JSON array, in the page's order.
// The slice is never written again: callers may use it after unlocking.
func (h *hub) listLocked() []byte {
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
func (h *hub) syncLocked(id string, rev uint64) protocol.ServerFrame {
	p := h.personalLocked(id)
	return protocol.ServerFrame{Type: protocol.TypeSync, Revision: rev, Incoming: p.Incoming, Outgoing: p.Outgoing, Chat: p.Chat}
}

// personalLocked gathers user id's own invitations and chat from the
// records the hub holds.
func (h *hub) personalLocked(id string) protocol.Personal {
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

// subscribe adds c, the connection of user uid, to the fan-out and
// returns, taken under the same lock, the list (encoded as a JSON array,
// in the page's order, not to be written to), its revision and, if the
// hub holds uid's record, uid's own invitations and chat. c.feedFrom is
// where c's writer is to read the feed after the welcome: every change
// after these is there, none before.
func (h *hub) subscribe(c *client, uid string) ([]byte, uint64, *protocol.Personal) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[c] = struct{}{}
	c.feedFrom = h.feed.next()
	if uid != "" {
		if h.local[uid] == nil {
			h.local[uid] = map[*client]struct{}{}
		}
		h.local[uid][c] = struct{}{}
	}
	var own *protocol.Personal
	if _, ok := h.own[uid]; ok && uid != "" {
		p := h.personalLocked(uid)
		own = &p
	}
	return h.listLocked(), h.rev, own
}

func (h *hub) unsubscribe(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, c)
	// Called on c's reader goroutine, which owns c.userID.
	if subs := h.local[c.userID]; subs != nil {
		delete(subs, c)
		if len(subs) == 0 {
			delete(h.local, c.userID)
		}
	}
}

// list returns the online users in the page's order, encoded as a JSON
// array (not to be written to).
func (h *hub) list() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.listLocked()
}

// compareUsers is the page's order: by name, then join time (then ID, so
// that no two users compare equal).
func compareUsers(a, b protocol.User) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.JoinedAt, b.JoinedAt), cmp.Compare(a.ID, b.ID))
}

// attachments returns, as of the latest change applied, which connection
// serves each user (a copy).
func (h *hub) attachments() (map[string]attachment, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.conns), h.ready
}

func (h *hub) isReady() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ready
}
