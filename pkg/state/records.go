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

	"github.com/buddytok/buddytok/pkg/protocol"
)

// Key prefixes inside the state bucket. Watchers of the buddy list watch
// only UserPrefix+">".
const (
	UserPrefix       = "user."
	InvitationPrefix = "inv."
	ChatPrefix       = "chat."
)

// UserKey, InvitationKey and ChatKey name a record's key.
func UserKey(id string) string       { return UserPrefix + id }
func InvitationKey(id string) string { return InvitationPrefix + id }
func ChatKey(id string) string       { return ChatPrefix + id }

// User is the stored record of an online user. Only Public() of it ever
// reaches another user.
type User struct {
	ID       string         `json:"id"`
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
