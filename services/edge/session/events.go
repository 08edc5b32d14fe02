package session

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// eventQueue bounds the directed events waiting for the relay. Should it
// fill, NATS drops the newest and counts a slow consumer: an event is a
// notice, and the sync frames carry the state it announced.
const eventQueue = 8192

// Events hands each user's directed events to the connection serving
// it. Every connection subscribes to its own user's subject, so that NATS
// sends an event only to the edge that serves its user, but all those
// subscriptions feed one channel read by one goroutine: with thousands of
// users an edge keeps one goroutine for their events, not one each.
type Events struct {
	ch   chan *nats.Msg
	subs sync.Map // *nats.Subscription -> *Session
}

// NewEvents returns an edge's relay of directed events; Run relays them.
func NewEvents() *Events {
	return &Events{ch: make(chan *nats.Msg, eventQueue)}
}

// subscribe relays the events of user to c.
func (r *Events) subscribe(nc *nats.Conn, user string, c *Session) (*nats.Subscription, error) {
	sub, err := nc.ChanSubscribe(protocol.EventSubject(user), r.ch)
	if err != nil {
		return nil, err
	}
	r.subs.Store(sub, c)
	return sub, nil
}

// unsubscribe stops relaying sub's events.
func (r *Events) unsubscribe(sub *nats.Subscription) {
	_ = sub.Unsubscribe()
	r.subs.Delete(sub)
}

// Run relays events, in the order NATS delivers them, until ctx ends.
func (r *Events) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-r.ch:
			if c, ok := r.subs.Load(m.Sub); ok {
				c.(*Session).event(m)
			}
		}
	}
}
