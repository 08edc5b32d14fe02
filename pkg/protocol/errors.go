package protocol

import (
	"errors"
	"fmt"
)

// Code is a stable, machine-readable error code. Codes cross NATS as the
// micro service error code and reach the browser in an error frame.
type Code string

// Error codes. docs/protocol.md lists each with its meaning; keep them in step.
const (
	CodeBadJSON        Code = "bad_json"             // the frame is not a JSON object
	CodeUnknownType    Code = "unknown_type"         // the frame's type is not one this server knows
	CodeBadRequest     Code = "bad_request"          // a field is missing or malformed
	CodeFrameTooLarge  Code = "frame_too_large"      // the frame exceeds MaxFrameBytes
	CodeRateLimited    Code = "rate_limited"         // too many frames; slow down
	CodeInvalidName    Code = "invalid_name"         // the display name breaks the name rules
	CodeInvalidRoom    Code = "invalid_room"         // the room name breaks the room name rule
	CodeRoomFull       Code = "room_full"            // the room holds as many users as it may
	CodeLobbyClosed    Code = "lobby_closed"         // this deployment has no lobby: join a room by its link, or make one
	CodeNotInRoom      Code = "not_in_room"          // the user you invited is not in your room (or has left it)
	CodeNotJoined      Code = "not_joined"           // join or resume first
	CodeAlreadyJoined  Code = "already_joined"       // this connection already has a user
	CodeResumeFailed   Code = "resume_failed"        // unknown user or wrong secret
	CodeNotFound       Code = "not_found"            // the user, invitation or chat does not exist (any more)
	CodeNotParty       Code = "not_party"            // the invitation or chat is someone else's
	CodeBusy           Code = "busy"                 // you are inviting or chatting and cannot do this now
	CodeNotAvailable   Code = "not_available"        // the other user is not available
	CodeSelfInvite     Code = "self_invite"          // you cannot invite yourself
	CodeTooManyInvited Code = "too_many_invites"     // the invitee holds as many pending invitations as allowed
	CodeConflict       Code = "conflict"             // state changed under the request; try again
	CodeUnavailable    Code = "unavailable"          // a service needed for this is not reachable
	CodeInternal       Code = "internal"             // an unexpected server fault (details are in the server log)
	CodeVideoFailed    Code = "video_failed"         // the video provider refused or could not be reached
	CodeOriginRefused  Code = "origin_refused"       // the page's origin is not allowed (HTTP, before upgrade)
	CodeSlowConsumer   Code = "slow_consumer"        // close reason: the client did not read its frames
	CodeServerShutdown Code = "server_shutdown"      // close reason: the edge is stopping; reconnect
	CodeSuperseded     Code = "superseded"           // close reason: another tab resumed this user
	CodeJoinTimeout    Code = "join_timeout"         // close reason: the connection did not join or resume in time
	CodeUnauthorized   Code = "unauthorized"         // an identity token is required and this one is missing, expired or not valid (HTTP 401 before the upgrade)
	CodeForbidden      Code = "forbidden"            // a service request acts for a user without proving it comes from that user's connection
	CodeEdgeFull       Code = "edge_full"            // the edge holds as many connections as it may (HTTP 503 before the upgrade, or close 1013)
	CodeTooManyConns   Code = "too_many_connections" // the client's address holds as many connections as it may (HTTP 429, or close 1008)
	CodeSessionLost    Code = "session_lost"         // close reason: this edge no longer serves the user; reconnect and resume
)

// CloseSuperseded is the WebSocket close code sent to a connection whose
// user was resumed by another connection. Clients must not reconnect.
const CloseSuperseded = 4001

// Error is a protocol error: a code plus a message fit to show a person.
// It never carries internals such as Go error strings from other packages.
type Error struct {
	Code    Code
	Message string
}

// Errorf builds an *Error with a formatted, user-facing message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Is lets errors.Is match any *Error with the same code.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code
	}
	return false
}

// CodeOf returns the code of err if it is (or wraps) an *Error, else CodeInternal.
func CodeOf(err error) Code {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return CodeInternal
}

// AsError returns err as an *Error fit for a client. Anything that is not
// already a protocol error becomes CodeInternal with a generic message, so
// internals never leak to a browser.
func AsError(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	return &Error{Code: CodeInternal, Message: "internal server error"}
}

// Transient reports whether a failed call to a service may succeed if made
// again: the service was unreachable or slow, or failed in a way that is
// not an answer about the request.
func Transient(err error) bool {
	switch CodeOf(err) {
	case CodeUnavailable, CodeInternal, CodeConflict:
		return true
	}
	return false
}
