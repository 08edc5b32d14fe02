package tokens

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/buddytok/buddytok/pkg/opentok"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// tokenTTL is how long a chat token stays valid. A tab that reloads later
// simply asks for new credentials.
const tokenTTL = 4 * time.Hour

// OpenTok is the provider that makes a relayed OpenTok session per chat and
// a publisher token per party, with the party's name in connection_data.
type OpenTok struct {
	client *opentok.Client
}

// NewOpenTok returns the OpenTok provider using client.
func NewOpenTok(client *opentok.Client) OpenTok { return OpenTok{client: client} }

// Mode implements Provider.
func (OpenTok) Mode() string { return protocol.ModeOpenTok }

// CreateSession implements Provider. Its errors are fit for users; the
// cause stays in the error chain for the log.
func (o OpenTok) CreateSession(ctx context.Context, _ protocol.SessionRequest) (string, error) {
	id, err := o.client.CreateSession(ctx, opentok.SessionOptions{MediaMode: opentok.Relayed})
	if err == nil {
		return id, nil
	}
	var why string
	switch {
	case errors.Is(err, opentok.ErrAuth):
		why = "OpenTok refused this server's credentials"
	case errors.Is(err, opentok.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		why = "OpenTok could not be reached"
	default:
		why = "OpenTok could not create a session"
	}
	return "", fmt.Errorf("%w: %w", protocol.Errorf(protocol.CodeVideoFailed, "%s", why), err)
}

// Credentials implements Provider.
func (o OpenTok) Credentials(_ context.Context, chat state.Chat, userID string) (protocol.Credentials, error) {
	peer, _ := chat.Peer(userID)
	name := chat.Names[0]
	if userID == chat.Parties[1] {
		name = chat.Names[1]
	}
	// Names are at most 100 characters, so this stays far below the
	// 1000-byte connection_data limit.
	data, err := json.Marshal(map[string]string{"name": name, "user_id": userID})
	if err != nil {
		return protocol.Credentials{}, fmt.Errorf("tokens: connection data: %w", err)
	}
	token, err := o.client.Token(chat.SessionID, opentok.TokenOptions{
		Role:           opentok.RolePublisher,
		ExpireTime:     time.Now().Add(tokenTTL),
		ConnectionData: string(data),
	})
	if err != nil {
		return protocol.Credentials{}, fmt.Errorf("tokens: OpenTok token: %w", err)
	}
	return protocol.Credentials{
		Mode:      protocol.ModeOpenTok,
		ChatID:    chat.ID,
		SessionID: chat.SessionID,
		APIKey:    o.client.APIKey(),
		Token:     token,
		Peer:      peer,
		Initiator: userID == chat.Parties[0],
	}, nil
}
