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

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// hub is the edge's one view of the buddy list. A single KV watcher on the
// user keys feeds it; it fans each change out to every joined local
// connection. A subscriber gets the snapshot and all later deltas in order,
// because both happen under one lock.
type hub struct {
	mu    sync.Mutex
	users map[string]protocol.User
	conns map[string]attachment // by user ID, for reconciling sockets with the state
	rev   uint64
	ready bool
	subs  map[*client]struct{}
}

// attachment is which connection serves a user, as the state says.
type attachment struct {
	edge, conn string
	connected  bool
}

func newHub() *hub {
	return &hub{users: map[string]protocol.User{}, conns: map[string]attachment{}, subs: map[*client]struct{}{}}
}

// watch applies the watcher's entries until ctx ends or the watcher fails.
func (h *hub) watch(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.Watch(ctx, state.UserPrefix+">")
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	// The initial values name everyone online now. After a restart, users
	// that left while no watcher ran are not among them, and are dropped.
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
					initial[strings.TrimPrefix(e.Key(), state.UserPrefix)] = true
				}
			}
			h.apply(e)
		}
	}
}

// dropExcept removes every user not in keep and tells the subscribers.
func (h *hub) dropExcept(keep map[string]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range h.users {
		if keep[id] {
			continue
		}
		delete(h.users, id)
		delete(h.conns, id)
		h.broadcastLocked(protocol.ServerFrame{Type: protocol.TypeUserLeft, UserID: id, Revision: h.rev})
	}
}

func (h *hub) broadcastLocked(frame protocol.ServerFrame) {
	data, err := json.Marshal(frame)
	if err != nil {
		return
	}
	for c := range h.subs {
		c.deliver(data)
	}
}

func (h *hub) apply(e jetstream.KeyValueEntry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e == nil {
		h.ready = true
		return
	}
	h.rev = e.Revision()
	id := strings.TrimPrefix(e.Key(), state.UserPrefix)
	var frame protocol.ServerFrame
	if e.Operation() != jetstream.KeyValuePut {
		delete(h.conns, id)
		if _, ok := h.users[id]; !ok {
			return
		}
		delete(h.users, id)
		frame = protocol.ServerFrame{Type: protocol.TypeUserLeft, UserID: id, Revision: e.Revision()}
	} else {
		var u state.User
		if err := json.Unmarshal(e.Value(), &u); err != nil {
			return
		}
		h.conns[id] = attachment{edge: u.Edge, conn: u.Conn, connected: u.Connected}
		pub := u.Public()
		if old, ok := h.users[id]; ok && old == pub {
			return // a change others cannot see (invitations, connection)
		}
		h.users[id] = pub
		frame = protocol.ServerFrame{Type: protocol.TypeUser, User: &pub, Revision: e.Revision()}
	}
	h.broadcastLocked(frame)
}

// subscribe adds c to the fan-out and returns, taken under the same lock,
// the list (unsorted, a copy) and its revision: every change after it goes
// to c.deliver, none before.
func (h *hub) subscribe(c *client) ([]protocol.User, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[c] = struct{}{}
	return slices.Collect(maps.Values(h.users)), h.rev
}

func (h *hub) unsubscribe(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, c)
}

// list returns the online users in the page's order: by name, then join time.
func (h *hub) list() []protocol.User {
	h.mu.Lock()
	users := slices.Collect(maps.Values(h.users))
	h.mu.Unlock()
	sortUsers(users)
	return users
}

// sortUsers puts users in the page's order: by name, then join time.
func sortUsers(users []protocol.User) {
	slices.SortFunc(users, func(a, b protocol.User) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.JoinedAt, b.JoinedAt), cmp.Compare(a.ID, b.ID))
	})
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
