// Package state is BuddyTok's shared state in NATS JetStream: the records
// kept in one KV bucket (users, invitations, chats), the atomic multi-key
// transactions that change them, the edge lease bucket, and the invariant
// checker of docs/behaviour.md §3.
package state

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"slices"
	"strings"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// Every record lives under its room's prefix, r.<room>.<kind>.<id>
// (docs/rooms.md), so that one filter reads or watches a room alone. Room
// names follow protocol.CheckRoom and IDs protocol.ValidID, so neither
// holds a '.'.
const (
	roomsPrefix = "r."

	KindUser       = "user"
	KindInvitation = "inv"
	KindChat       = "chat"
)

// RoomPrefix is the key prefix of every record of room.
func RoomPrefix(room string) string { return roomsPrefix + room + "." }

// UserKey, InvitationKey and ChatKey name a record's key.
func UserKey(room, id string) string       { return RoomPrefix(room) + KindUser + "." + id }
func InvitationKey(room, id string) string { return RoomPrefix(room) + KindInvitation + "." + id }
func ChatKey(room, id string) string       { return RoomPrefix(room) + KindChat + "." + id }

// AllUsers is the key filter of every room's user records.
const AllUsers = roomsPrefix + "*." + KindUser + ".*"

// RoomUsers is the key filter of room's user records.
func RoomUsers(room string) string { return RoomPrefix(room) + KindUser + ".*" }

// Key is a record's key taken apart.
type Key struct {
	Room, Kind, ID string
}

// ParseKey takes a record's key apart; ok is false for a key that is not a
// record's (a store written before rooms holds such keys).
func ParseKey(key string) (k Key, ok bool) {
	rest, ok := strings.CutPrefix(key, roomsPrefix)
	if !ok {
		return Key{}, false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return Key{}, false
	}
	switch parts[1] {
	case KindUser, KindInvitation, KindChat:
		return Key{Room: parts[0], Kind: parts[1], ID: parts[2]}, true
	}
	return Key{}, false
}

// User is the stored record of an online user. Only Public() of it ever
// reaches another user.
type User struct {
	ID       string         `json:"id"`
	Room     string         `json:"room"`
	Name     string         `json:"name"`
	State    protocol.State `json:"state"`
	JoinedAt int64          `json:"joined_at"`
	// SecretHash is the SHA-256 of the tab's resume secret, hex.
	SecretHash string `json:"secret_hash"`
	// Edge and Conn name the connection serving the user; Connected is
	// false during the grace period after it ended, since DisconnectedAt.
	Edge           string `json:"edge"`
	Conn           string `json:"conn"`
	Connected      bool   `json:"connected"`
	DisconnectedAt int64  `json:"disconnected_at,omitempty"`
	// Outgoing is the ID of the user's pending invitation, if inviting.
	Outgoing string `json:"outgoing,omitempty"`
	// Incoming lists the pending invitations to the user.
	Incoming []string `json:"incoming,omitempty"`
	// Chat is the ID of the user's chat, if chatting.
	Chat string `json:"chat,omitempty"`
}

// HashSecret is what a user record keeps of its resume secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Proves reports whether secret is u's resume secret. Only the tab, and
// the edge serving it, hold it: a service acting for u on a request that
// does not prove it refuses (protocol.CodeForbidden).
func (u User) Proves(secret string) bool {
	return subtle.ConstantTimeCompare([]byte(u.SecretHash), []byte(HashSecret(secret))) == 1
}

// Public is what other users may see of u.
func (u User) Public() protocol.User {
	return protocol.User{ID: u.ID, Name: u.Name, State: u.State, JoinedAt: u.JoinedAt}
}

// WithoutIncoming returns u with invitation id removed from Incoming.
func (u User) WithoutIncoming(id string) User {
	u.Incoming = slices.DeleteFunc(slices.Clone(u.Incoming), func(s string) bool { return s == id })
	if len(u.Incoming) == 0 {
		u.Incoming = nil
	}
	return u
}

// Available returns u back in the available state, with no outgoing
// invitation and no chat.
func (u User) Available() User {
	u.State, u.Outgoing, u.Chat = protocol.StateAvailable, "", ""
	return u
}

// Chat is the stored record of a running chat.
type Chat struct {
	protocol.Chat
	// SessionID is the video session (OpenTok session ID, or the WebRTC
	// room) that the tokens service made for this chat.
	SessionID string `json:"session_id"`
}

// Peer returns the other party of the chat, and whether userID is a party.
func (c Chat) Peer(userID string) (string, bool) {
	switch userID {
	case c.Parties[0]:
		return c.Parties[1], true
	case c.Parties[1]:
		return c.Parties[0], true
	}
	return "", false
}
