package tokens

import (
	"context"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// Provider makes video sessions and per-party credentials. The WebRTC
// provider (no credentials needed) is the default; the OpenTok provider
// implements the same interface.
type Provider interface {
	// Mode names the provider in chats and credentials.
	Mode() string
	// CreateSession makes a new video session for a chat about to start.
	CreateSession(ctx context.Context, req protocol.SessionRequest) (sessionID string, err error)
	// Credentials issues what party userID of chat needs to join its
	// session. The caller has checked that userID is a party.
	Credentials(ctx context.Context, chat state.Chat, userID string) (protocol.Credentials, error)
}

// WebRTC is the no-credentials provider: the browsers call each other
// directly and signal through BuddyTok, so a session is just the chat's room.
// IceServers (STUN, TURN) reach every page with its credentials.
type WebRTC struct {
	IceServers []protocol.IceServer
}

// Mode implements Provider.
func (WebRTC) Mode() string { return protocol.ModeWebRTC }

// CreateSession implements Provider: the room is named after the chat.
func (WebRTC) CreateSession(_ context.Context, req protocol.SessionRequest) (string, error) {
	return "webrtc-" + req.ChatID, nil
}

// Credentials implements Provider. The inviter sends the WebRTC offer.
func (w WebRTC) Credentials(_ context.Context, chat state.Chat, userID string) (protocol.Credentials, error) {
	peer, _ := chat.Peer(userID)
	return protocol.Credentials{
		Mode:       protocol.ModeWebRTC,
		ChatID:     chat.ID,
		SessionID:  chat.SessionID,
		Peer:       peer,
		Initiator:  userID == chat.Parties[0],
		IceServers: w.IceServers,
	}, nil
}
