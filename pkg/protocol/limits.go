package protocol

import "time"

// Limits on what a client may send. They are part of the protocol:
// docs/protocol.md repeats them.
const (
	// MaxNameRunes is the longest display name, in characters after trimming.
	MaxNameRunes = 100
	// MaxFrameBytes is the largest frame the edge reads: at a larger one
	// it stops reading and closes the socket (1009, frame_too_large).
	MaxFrameBytes = 64 << 10
	// JoinTimeout is the default time a new connection has to join or
	// resume before the edge closes it (WS_JOIN_TIMEOUT).
	JoinTimeout = 30 * time.Second
	// MaxSignalBytes bounds the payload of one WebRTC signal message.
	MaxSignalBytes = 48 << 10
	// MaxRefBytes bounds the client-chosen correlation reference.
	MaxRefBytes = 64
	// FramesPerSecond and FrameBurst are the default per-connection rate
	// limit (WS_RATE_LIMIT, WS_RATE_BURST).
	FramesPerSecond = 20
	FrameBurst      = 60
	// SendQueueBytes is how many bytes of outgoing frames may wait for a
	// slow client (its welcome's list, which is the room's, not counted)
	// before the edge disconnects it (WS_SEND_QUEUE_BYTES): ten large
	// signals, or thousands of buddy-list changes.
	SendQueueBytes = 512 << 10
	// SocketSendBufferBytes is the default kernel send buffer of one
	// WebSocket (WS_SEND_BUFFER_BYTES). With SendQueueBytes it bounds what
	// a client that stops reading holds before it is dropped: left to
	// itself the kernel lets one socket's buffer grow to megabytes.
	SocketSendBufferBytes = 256 << 10
	// MaxIncomingInvitations is the default number of pending invitations
	// one user may hold (MAX_PENDING_INVITATIONS); more are refused with
	// CodeTooManyInvited until the invitee answers some.
	MaxIncomingInvitations = 100
	// IncomingInvitationsCeiling is the highest MAX_PENDING_INVITATIONS
	// allowed. An accept ends every other invitation of both parties in the
	// same atomic batch: with at most this many each, the batch stays well
	// under the NATS server's limit of 1,000 messages (AcceptBatchMessages).
	IncomingInvitationsCeiling = 200
	// AcceptBatchMessages is the largest atomic batch an accept can write:
	// for both parties' other invitations, the invitation and its inviter;
	// the accepted invitation, both users, the chat, and the accepter's
	// own outgoing invitation with its invitee.
	AcceptBatchMessages = 2*2*IncomingInvitationsCeiling + 6
	// ServerBatchLimit is the NATS server's limit on the messages of one
	// atomic batch.
	ServerBatchLimit = 1000
)

// The build fails if an accept could outgrow the server's batch limit.
var _ [ServerBatchLimit - AcceptBatchMessages]struct{}

// ValidID reports whether s has the form of a server-issued ID (user,
// invitation, chat): 1–64 characters of [a-z0-9]. The form keeps IDs safe as
// NATS subject tokens and KV keys.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
