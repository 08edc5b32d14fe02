package invites

import (
	"context"
	"errors"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// change gathers one transition: the records it read (with revisions), the
// edits it made, and the events to send once it has committed. Every record
// it reads is written back in the same atomic batch, so a transition built on
// a stale read commits nothing. A change reads and writes one room, the one
// its request names: a transition never spans two rooms.
type change struct {
	store  *state.Store
	room   string
	users  map[string]*loadedUser
	order  []string // user IDs in load order, for a deterministic batch
	txn    state.Txn
	events []event
}

// loadedUser is a user record read for a change, on a goroutine of its
// own if prefetched: ready is closed once rec, rev and err are set. Only a
// user the change asked for (used) is written back.
type loadedUser struct {
	ready   chan struct{}
	rec     state.User
	rev     uint64
	err     error
	used    bool
	deleted bool
}

type event struct {
	to    string
	frame protocol.ServerFrame
}

// closedReady is the ready of a user read where it was asked for.
var closedReady = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

func newChange(store *state.Store, room string) *change {
	return &change{store: store, room: room, users: map[string]*loadedUser{}}
}

// prefetch starts reading the users ids side by side, so that a
// transition that needs several of them waits for one read, not one
// after another; user then waits for the read it needs. A user prefetched
// but never asked for is not written.
func (c *change) prefetch(ctx context.Context, ids ...string) {
	for _, id := range ids {
		if _, ok := c.users[id]; ok || id == "" {
			continue
		}
		lu := &loadedUser{ready: make(chan struct{})}
		c.users[id] = lu
		c.order = append(c.order, id)
		go func() {
			defer close(lu.ready)
			lu.rec, lu.rev, lu.err = c.store.GetUser(ctx, c.room, id)
		}()
	}
}

// user loads a user once per change; later calls return the same record,
// so several edits to one user merge into one write.
func (c *change) user(ctx context.Context, id string) (*state.User, error) {
	lu, ok := c.users[id]
	if !ok { // not prefetched: read here, no goroutine needed
		lu = &loadedUser{ready: closedReady}
		lu.rec, lu.rev, lu.err = c.store.GetUser(ctx, c.room, id)
		c.users[id] = lu
		c.order = append(c.order, id)
	}
	select {
	case <-lu.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	switch {
	case lu.err != nil:
		return nil, lu.err
	case lu.deleted:
		return nil, state.ErrNotFound
	}
	lu.used = true
	return &lu.rec, nil
}

// settle waits for the reads prefetch started, so that none outlives the
// change.
func (c *change) settle() {
	for _, lu := range c.users {
		<-lu.ready
	}
}

// deleteUser removes a loaded user when the change commits.
func (c *change) deleteUser(id string) {
	if lu, ok := c.users[id]; ok {
		lu.deleted = true
	}
}

func (c *change) notify(frame protocol.ServerFrame, to ...string) {
	for _, id := range to {
		c.events = append(c.events, event{to: id, frame: frame})
	}
}

// endInvitation removes a pending invitation: its inviter becomes available
// and it leaves the invitee's incoming list. Both are told why.
func (c *change) endInvitation(ctx context.Context, id, reason string) error {
	inv, rev, err := c.store.GetInvitation(ctx, c.room, id)
	if errors.Is(err, state.ErrNotFound) {
		return nil // already gone; the change that ended it told the parties
	}
	if err != nil {
		return err
	}
	return c.endLoadedInvitation(ctx, inv, rev, reason)
}

// endLoadedInvitation is endInvitation for an invitation already read at
// revision rev; the delete fails the change if it moved since.
func (c *change) endLoadedInvitation(ctx context.Context, inv protocol.Invitation, rev uint64, reason string) error {
	id := inv.ID
	c.txn.Delete(state.InvitationKey(c.room, id), rev)
	if from, err := c.user(ctx, inv.From); err == nil {
		if from.Outgoing == id {
			*from = from.Available()
		}
	} else if !errors.Is(err, state.ErrNotFound) {
		return err
	}
	if to, err := c.user(ctx, inv.To); err == nil {
		*to = to.WithoutIncoming(id)
	} else if !errors.Is(err, state.ErrNotFound) {
		return err
	}
	c.notify(protocol.ServerFrame{Type: protocol.TypeInvitationEnded, Invitation: &inv, Reason: reason}, inv.From, inv.To)
	return nil
}

// endChat removes a chat; both parties become available and are told.
func (c *change) endChat(ctx context.Context, id, reason string) error {
	chat, rev, err := c.store.GetChat(ctx, c.room, id)
	if errors.Is(err, state.ErrNotFound) {
		return nil // already ended
	}
	if err != nil {
		return err
	}
	c.txn.Delete(state.ChatKey(c.room, id), rev)
	for _, p := range chat.Parties {
		u, err := c.user(ctx, p)
		if errors.Is(err, state.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if u.Chat == id {
			*u = u.Available()
		}
	}
	c.notify(protocol.ServerFrame{Type: protocol.TypeChatEnded, Chat: &chat.Chat, Reason: reason}, chat.Parties[:]...)
	return nil
}

// commit writes every user the change asked for (edited or not, so that a
// concurrent change to any of them refuses this one) and the other writes,
// atomically.
func (c *change) commit(ctx context.Context) error {
	for _, id := range c.order {
		lu := c.users[id]
		if !lu.used {
			continue
		}
		if lu.deleted {
			c.txn.Delete(state.UserKey(c.room, id), lu.rev)
			continue
		}
		c.txn.Put(state.UserKey(c.room, id), lu.rev, lu.rec)
	}
	return c.store.Commit(ctx, &c.txn)
}
