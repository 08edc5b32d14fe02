package session

import (
	"context"
	"slices"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// eventQueue bounds the directed events waiting for the relay. Should it
// fill, NATS drops the newest and counts a slow consumer: an event is a
// notice, and the sync frames carry the state it announced.
const eventQueue = 8192

// Events hands each user's directed events to the connections serving
// it. The edge subscribes to a room's events (protocol.RoomEvents) while
// it serves one of the room's users, so that NATS sends an event only to
// the edges that hold its room, and keeps one subscription a room open on
// an edge, not one a user. All those subscriptions feed one channel read
// by one goroutine: with thousands of users an edge keeps one goroutine
// for their events, not one each.
type Events struct {
	ch chan *nats.Msg

	mu    sync.Mutex
	rooms map[string]*roomEvents
}

// roomEvents is one room's subscription and the connections of the room's
// users on this edge.
type roomEvents struct {
	sub   *nats.Subscription
	conns map[string][]*Session // by user ID
}

// NewEvents returns an edge's relay of directed events; Run relays them.
func NewEvents() *Events {
	return &Events{ch: make(chan *nats.Msg, eventQueue), rooms: map[string]*roomEvents{}}
}

// subscribe relays the events of user u to c: from the room's
// subscription, made now if c is the room's first connection here.
func (r *Events) subscribe(nc *nats.Conn, u User, c *Session) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	room := r.rooms[u.Room]
	if room == nil {
		sub, err := nc.ChanSubscribe(protocol.RoomEvents(u.Room), r.ch)
		if err != nil {
			return err
		}
		room = &roomEvents{sub: sub, conns: map[string][]*Session{}}
		r.rooms[u.Room] = room
	}
	room.conns[u.ID] = append(room.conns[u.ID], c)
	return nil
}

// unsubscribe stops relaying user u's events to c, and the room's
// subscription with its last connection here.
func (r *Events) unsubscribe(u User, c *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	room := r.rooms[u.Room]
	if room == nil {
		return
	}
	conns := slices.DeleteFunc(room.conns[u.ID], func(s *Session) bool { return s == c })
	if len(conns) > 0 {
		room.conns[u.ID] = conns
		return
	}
	delete(room.conns, u.ID)
	if len(room.conns) == 0 {
		_ = room.sub.Unsubscribe()
		delete(r.rooms, u.Room)
	}
}

// to returns the connections serving user of room (a copy).
func (r *Events) to(room, user string) []*Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	if re := r.rooms[room]; re != nil {
		return slices.Clone(re.conns[user])
	}
	return nil
}

// Run relays events, in the order NATS delivers them, until ctx ends. An
// event for a user this edge does not serve (another edge's user of the
// same room) is dropped.
func (r *Events) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-r.ch:
			room, user, ok := protocol.ParseEventSubject(m.Subject)
			if !ok {
				continue
			}
			for _, c := range r.to(room, user) {
				c.event(m)
			}
		}
	}
}
