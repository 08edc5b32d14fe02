// Package protocol defines BuddyTok's wire contract in one place: the
// WebSocket frames between browser and edge, the NATS subjects and messages
// between services, the error codes and the input limits.
//
// Version is bumped on any incompatible change; docs/protocol.md documents it.
package protocol

import "encoding/json"

// Version of the WebSocket protocol, sent in the welcome frame.
const Version = 1

// State is an online user's state (docs/behaviour.md §1).
type State string

// User states.
const (
	StateAvailable State = "available"
	StateInviting  State = "inviting"
	StateChatting  State = "chatting"
)

// User is what everyone may see of an online user.
type User struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	State    State  `json:"state"`
	JoinedAt int64  `json:"joined_at"` // Unix milliseconds
}

// Invitation is a pending invitation.
type Invitation struct {
	ID        string `json:"id"`
	From      string `json:"from"`
	FromName  string `json:"from_name"`
	To        string `json:"to"`
	ToName    string `json:"to_name"`
	CreatedAt int64  `json:"created_at"` // Unix milliseconds
}

// Chat is a running one-to-one chat.
type Chat struct {
	ID        string    `json:"id"`
	Parties   [2]string `json:"parties"` // user IDs: inviter, accepter
	Names     [2]string `json:"names"`
	Mode      string    `json:"mode"` // ModeWebRTC or ModeOpenTok
	StartedAt int64     `json:"started_at"`
}

// Video modes.
const (
	ModeWebRTC  = "webrtc"  // browser-to-browser, signalled through BuddyTok
	ModeOpenTok = "opentok" // OpenTok / Vonage Video
)

// Credentials let one party of a chat join its video.
type Credentials struct {
	Mode      string `json:"mode"`
	ChatID    string `json:"chat_id"`
	SessionID string `json:"session_id"`
	APIKey    string `json:"api_key,omitempty"` // OpenTok only; public
	Token     string `json:"token,omitempty"`   // OpenTok only; for this party alone
	Peer      string `json:"peer"`              // the other party's user ID
	Initiator bool   `json:"initiator"`         // WebRTC: this side sends the offer
	// IceServers are the STUN and TURN servers a WebRTC page gives its
	// peer connection (the tokens service's ICE_SERVERS); none: the
	// browsers connect directly, which works on one network.
	IceServers []IceServer `json:"ice_servers,omitempty"`
}

// IceServer is one STUN or TURN server, as a browser's RTCIceServer takes
// it.
type IceServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// Client frame types (browser -> edge).
const (
	TypeJoin        = "join"
	TypeResume      = "resume"
	TypeInvite      = "invite"
	TypeCancel      = "cancel"
	TypeAccept      = "accept"
	TypeDecline     = "decline"
	TypeEndChat     = "end_chat"
	TypeCredentials = "credentials" // also the server's answer type
	TypeSignal      = "signal"      // also the server's relay type
	TypePing        = "ping"
)

// Server frame types (edge -> browser).
const (
	TypeWelcome         = "welcome"
	TypeUser            = "user"      // a user appeared or changed
	TypeUserLeft        = "user_left" // a user went offline
	TypeInvitation      = "invitation"
	TypeInvitationEnded = "invitation_ended"
	TypeChatStarted     = "chat_started"
	TypeChatEnded       = "chat_ended"
	TypeSync            = "sync" // your invitations and chat, complete, as the state now has them
	TypeOK              = "ok"
	TypeError           = "error"
	TypePong            = "pong"
)

// Reasons carried by invitation_ended and chat_ended.
const (
	ReasonCancelled = "cancelled" // the inviter withdrew it
	ReasonDeclined  = "declined"  // the invitee said no
	ReasonAccepted  = "accepted"  // it became a chat
	ReasonBusy      = "busy"      // declined automatically: the invitee went into another chat
	ReasonLeft      = "left"      // the other party went offline
	ReasonEnded     = "ended"     // a party ended the chat
	ReasonFailed    = "failed"    // the chat could not be set up
)

// ClientFrame is any frame a browser sends. Which fields matter depends on
// Type; docs/protocol.md lists them.
type ClientFrame struct {
	Type       string          `json:"type"`
	Ref        string          `json:"ref,omitempty"`
	Name       string          `json:"name,omitempty"`
	Room       string          `json:"room,omitempty"`
	UserID     string          `json:"user_id,omitempty"`
	Secret     string          `json:"secret,omitempty"`
	To         string          `json:"to,omitempty"`
	Invitation string          `json:"invitation,omitempty"`
	Chat       string          `json:"chat,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
}

// ServerFrame is any frame the edge sends. Which fields are set depends on Type.
type ServerFrame struct {
	Type        string          `json:"type"`
	Ref         string          `json:"ref,omitempty"`
	Code        Code            `json:"code,omitempty"`
	Message     string          `json:"message,omitempty"`
	Version     int             `json:"version,omitempty"`
	Room        string          `json:"room,omitempty"`
	Mode        string          `json:"mode,omitempty"`
	You         *User           `json:"you,omitempty"`
	Secret      string          `json:"secret,omitempty"`
	Users       []User          `json:"users,omitempty"`
	Revision    uint64          `json:"revision,omitempty"`
	User        *User           `json:"user,omitempty"`
	UserID      string          `json:"user_id,omitempty"`
	Invitation  *Invitation     `json:"invitation,omitempty"`
	Incoming    []Invitation    `json:"incoming,omitempty"`
	Outgoing    *Invitation     `json:"outgoing,omitempty"`
	Chat        *Chat           `json:"chat,omitempty"`
	Reason      string          `json:"reason,omitempty"`
	Credentials *Credentials    `json:"credentials,omitempty"`
	From        string          `json:"from,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
}

// ErrorFrame builds the frame that answers a failed request.
func ErrorFrame(ref string, err error) ServerFrame {
	pe := AsError(err)
	return ServerFrame{Type: TypeError, Ref: ref, Code: pe.Code, Message: pe.Message}
}
