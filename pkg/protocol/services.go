package protocol

import (
	"crypto/sha256"
	"encoding/json"
	"strings"
)

// Micro service names, as `nats micro ls` shows them.
const (
	ServicePresence = "presence"
	ServiceInvites  = "invites"
	ServiceTokens   = "tokens"
)

// NATS subjects of the service endpoints. Every request and reply body is
// JSON of the type named in the comment.
const (
	SubjectPresenceJoin       = "buddytok.presence.join"       // JoinRequest -> JoinReply
	SubjectPresenceResume     = "buddytok.presence.resume"     // ResumeRequest -> Personal
	SubjectPresenceDisconnect = "buddytok.presence.disconnect" // DisconnectRequest -> Empty
	SubjectPresenceAttach     = "buddytok.presence.attach"     // AttachRequest -> Empty (edges only)
	SubjectPresenceLease      = "buddytok.presence.lease"      // LeaseRequest -> LeaseReply (edges only)

	SubjectInvitesInvite  = "buddytok.invites.invite"  // InviteRequest -> Invitation
	SubjectInvitesCancel  = "buddytok.invites.cancel"  // InvitationRequest -> Empty
	SubjectInvitesAccept  = "buddytok.invites.accept"  // InvitationRequest -> Chat
	SubjectInvitesDecline = "buddytok.invites.decline" // InvitationRequest -> Empty
	SubjectInvitesEnd     = "buddytok.invites.end"     // ChatRequest -> Empty
	SubjectInvitesLeave   = "buddytok.invites.leave"   // LeaveRequest -> Empty (presence only)

	SubjectTokensSession     = "buddytok.tokens.session"     // SessionRequest -> SessionReply
	SubjectTokensCredentials = "buddytok.tokens.credentials" // ChatRequest -> Credentials
	SubjectTokensSignal      = "buddytok.tokens.signal"      // SignalRequest -> Empty
	SubjectTokensMode        = "buddytok.tokens.mode"        // Empty -> ModeReply

	// eventPrefix + room + "." + user ID carries ServerFrame events
	// directed at one user.
	eventPrefix = "buddytok.events."
)

// HeaderBudget carries, on every service request, how many milliseconds the
// caller will still wait for the reply when it sends it. A service never
// starts, and never commits, work its caller has already given up on. It is
// relative, not a wall-clock deadline, so that clock skew between hosts does
// not matter.
const HeaderBudget = "BuddyTok-Budget-Ms"

// HeaderRequestID carries the ID of the browser request (or reaper action)
// a service request serves, so that every log line about it names it
// (package requestid).
const HeaderRequestID = "BuddyTok-Request-Id"

// HeaderControl marks a message on a user's event subject that is meant
// for the edges, not the browser. Its only value so far is
// ControlSuperseded, whose body is the connection ID that now serves the
// user: every other connection of that user is closed.
const (
	HeaderControl     = "BuddyTok-Control"
	ControlSuperseded = "superseded"
)

// EventSubject is the subject of events directed at user userID of room;
// an edge subscribes to its room's (RoomEvents) while it serves one of
// the room's users.
func EventSubject(room, userID string) string { return eventPrefix + room + "." + userID }

// RoomEvents is the subject filter of the events directed at room's users:
// one subscription an edge, not one a user, so that NATS keeps interest in
// as many subjects as there are rooms open on edges.
func RoomEvents(room string) string { return EventSubject(room, "*") }

// ParseEventSubject takes an event subject apart; ok is false for any
// other subject.
func ParseEventSubject(subject string) (room, userID string, ok bool) {
	rest, ok := strings.CutPrefix(subject, eventPrefix)
	if !ok {
		return "", "", false
	}
	room, userID, ok = strings.Cut(rest, ".")
	return room, userID, ok && room != "" && userID != "" && !strings.Contains(userID, ".")
}

// Every request that acts on a user names the user's room (Room, checked
// by CheckRoom): a user, and everything it does, lives in one room, and
// the services find its records there.

// JoinRequest asks presence to create a user in Room. The edge picks the ID so it
// can subscribe to the user's events before anyone can see the user, and
// the resume secret (NewSecret) so that it holds the proof every later
// request for the user needs, the disconnect report among them, even when
// the join's reply is lost.
type JoinRequest struct {
	Room   string `json:"room"`
	UserID string `json:"user_id"`
	Name   string `json:"name"`
	Edge   string `json:"edge"`
	Conn   string `json:"conn"`
	Secret string `json:"secret"`
}

// JoinReply is the new user. Secret is empty: the edge picked it; a
// presence older than JoinRequest.Secret made its own and sent it here,
// and the edge then uses that one.
type JoinReply struct {
	User   User   `json:"user"`
	Secret string `json:"secret,omitempty"`
}

// ResumeRequest reattaches a connection to an existing user.
type ResumeRequest struct {
	Room   string `json:"room"`
	UserID string `json:"user_id"`
	Secret string `json:"secret"`
	Edge   string `json:"edge"`
	Conn   string `json:"conn"`
}

// Personal is everything a user needs to rebuild its own view.
type Personal struct {
	User     User         `json:"user"`
	Incoming []Invitation `json:"incoming,omitempty"`
	Outgoing *Invitation  `json:"outgoing,omitempty"`
	Chat     *Chat        `json:"chat,omitempty"`
}

// DisconnectRequest reports that a connection ended; the user is kept for
// the grace period. Conn guards against a late report after a resume.
type DisconnectRequest struct {
	Room   string `json:"room"`
	UserID string `json:"user_id"`
	Conn   string `json:"conn"`
	Secret string `json:"secret"`
}

// AttachRequest marks a user connected again through a connection that
// never closed, after presence detached it (the edge's lease lapsed: a NATS
// outage, a paused process). It succeeds only while the user is still
// served by exactly this edge and connection.
type AttachRequest struct {
	Room   string `json:"room"`
	UserID string `json:"user_id"`
	Edge   string `json:"edge"`
	Conn   string `json:"conn"`
	Secret string `json:"secret"`
}

// LeaseRequest stores, renews or releases an edge's lease. An edge does not
// write its lease itself: presence writes it, under the ID the secret
// names (EdgeID), so that an edge credential cannot keep another edge's
// lease alive after it died, nor end a live one's.
type LeaseRequest struct {
	// Secret is the edge's lease secret, picked at its start; its ID is
	// EdgeID(Secret).
	Secret string `json:"secret"`
	// Revision is the revision of the lease the edge last stored; 0 makes
	// a new one.
	Revision uint64 `json:"revision,omitempty"`
	// Release removes the lease: the edge is shutting down.
	Release bool `json:"release,omitempty"`
}

// LeaseReply is the lease's revision after a LeaseRequest.
type LeaseReply struct {
	Revision uint64 `json:"revision"`
	// Lost: the lease the request named had lapsed (it expired, or was
	// removed) and a new one was stored.
	Lost bool `json:"lost,omitempty"`
}

// EdgeID is the ID of the edge whose lease secret is secret: the first 80
// bits of its SHA-256, in the form of every ID. Knowing an edge's ID (user
// records name it) tells nothing of its secret.
func EdgeID(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return strings.ToLower(idEncoding.EncodeToString(sum[:10]))
}

// LeaveRequest removes a user whose grace period ran out, ending its
// invitations and chat. It succeeds only if the user is still detached
// from Conn.
type LeaveRequest struct {
	Room   string `json:"room"`
	UserID string `json:"user_id"`
	Conn   string `json:"conn"`
}

// InviteRequest asks for an invitation from one user to another. Secret
// is From's resume secret: it proves the request comes from the edge that
// serves From (as in every request that acts for a user).
type InviteRequest struct {
	Room   string `json:"room"`
	From   string `json:"from"`
	To     string `json:"to"`
	Secret string `json:"secret"`
}

// InvitationRequest acts (cancel, accept, decline) on an invitation on
// behalf of UserID.
type InvitationRequest struct {
	Room       string `json:"room"`
	UserID     string `json:"user_id"`
	Invitation string `json:"invitation"`
	Secret     string `json:"secret"`
}

// ChatRequest acts on a chat on behalf of UserID.
type ChatRequest struct {
	Room   string `json:"room"`
	UserID string `json:"user_id"`
	Chat   string `json:"chat"`
	Secret string `json:"secret"`
}

// SignalRequest relays a WebRTC signal to the other party of a chat.
type SignalRequest struct {
	Room   string          `json:"room"`
	UserID string          `json:"user_id"`
	Chat   string          `json:"chat"`
	Data   json.RawMessage `json:"data"`
	Secret string          `json:"secret"`
}

// SessionRequest asks the tokens service for a video session for a chat
// that is about to start.
type SessionRequest struct {
	ChatID  string    `json:"chat_id"`
	Parties [2]string `json:"parties"`
}

// SessionReply names the video session of a chat.
type SessionReply struct {
	Mode      string `json:"mode"`
	SessionID string `json:"session_id"`
}

// ModeReply tells which video mode the tokens service runs in.
type ModeReply struct {
	Mode string `json:"mode"`
}

// Empty is the reply of requests that return nothing but success.
type Empty struct{}
