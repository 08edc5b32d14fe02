package state

import (
	"errors"
	"fmt"
	"slices"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// Check returns every violation of docs/behaviour.md §3's invariants (and of the
// records' own cross-references, rooms included: an invitation or a chat
// never spans two rooms) in snap, joined, or nil.
func Check(snap Snapshot) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	checkInvitations(snap, bad)
	for id, u := range snap.Users {
		if room := snap.RoomOf[id]; u.Room != room {
			bad("user %s names room %q but is kept in room %q", id, u.Room, room)
		}
		switch u.State {
		case protocol.StateAvailable:
			if u.Outgoing != "" || u.Chat != "" {
				bad("user %s is available but has outgoing %q, chat %q", id, u.Outgoing, u.Chat)
			}
		case protocol.StateInviting:
			if u.Chat != "" {
				bad("user %s is inviting but has chat %s", id, u.Chat)
			}
			if inv, ok := snap.Invitations[u.Outgoing]; !ok || inv.From != id {
				bad("user %s is inviting but invitation %q is not theirs or missing", id, u.Outgoing)
			}
		case protocol.StateChatting:
			c, ok := snap.Chats[u.Chat]
			if !ok {
				bad("user %s is chatting in missing chat %q", id, u.Chat)
				break
			}
			peer, party := c.Peer(id)
			if !party {
				bad("user %s is chatting in chat %s they are not a party of", id, c.ID)
				break
			}
			if p, ok := snap.Users[peer]; !ok || p.State != protocol.StateChatting || p.Chat != c.ID || peer == id {
				bad("user %s's chat %s: peer %s is not chatting in it", id, c.ID, peer)
			}
		default:
			bad("user %s has unknown state %q", id, u.State)
		}
		for _, invID := range u.Incoming {
			if inv, ok := snap.Invitations[invID]; !ok || inv.To != id {
				bad("user %s lists incoming invitation %s that is missing or not to them", id, invID)
			}
		}
	}
	for id, c := range snap.Chats {
		for _, p := range c.Parties {
			if u, ok := snap.Users[p]; !ok || u.Chat != id {
				bad("chat %s: party %s is gone or not in it", id, p)
			} else if u.Room != snap.RoomOf[id] {
				bad("chat %s in room %q has party %s of room %q", id, snap.RoomOf[id], p, u.Room)
			}
		}
	}
	return errors.Join(errs...)
}

// checkInvitations reports every pending invitation whose parties do not
// hold it as theirs, or that spans two rooms, and every user with more
// than one outgoing.
func checkInvitations(snap Snapshot, bad func(format string, args ...any)) {
	outgoing := map[string]int{}
	for id, inv := range snap.Invitations {
		outgoing[inv.From]++
		from, okFrom := snap.Users[inv.From]
		to, okTo := snap.Users[inv.To]
		if !okFrom || !okTo {
			bad("invitation %s is pending but a party has left (from %t, to %t)", id, okFrom, okTo)
			continue
		}
		if from.State != protocol.StateInviting || from.Outgoing != id {
			bad("invitation %s: inviter %s is %s with outgoing %q", id, from.ID, from.State, from.Outgoing)
		}
		if !slices.Contains(to.Incoming, id) {
			bad("invitation %s: missing from invitee %s's incoming list", id, to.ID)
		}
		if inv.From == inv.To {
			bad("invitation %s: user %s invites themself", id, inv.From)
		}
		if room := snap.RoomOf[id]; from.Room != room || to.Room != room {
			bad("invitation %s in room %q is between users of rooms %q and %q", id, room, from.Room, to.Room)
		}
	}
	for uid, n := range outgoing {
		if n > 1 {
			bad("user %s has %d pending outgoing invitations", uid, n)
		}
	}
}
