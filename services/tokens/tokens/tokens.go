// Package tokens is the tokens service: it makes the video session of each
// new chat, issues each party its own credentials (and nobody else), and
// relays WebRTC signalling between the two parties of a chat.
package tokens

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/buddytok/buddytok/pkg/config"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/opentok"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// Version of the tokens service, as micro reports it.
const Version = "0.1.0"

// Config tunes the service.
type Config struct {
	Replicas int      // of the state bucket
	Provider Provider // nil: WebRTC
}

// The service's settings.
var (
	openTokKeySetting = config.String("OPENTOK_KEY", "", "tokens",
		"the OpenTok project's API key; with `OPENTOK_SECRET`, chats use OpenTok, without both direct WebRTC ([opentok.md](opentok.md))",
		config.DefaultShown("— (WebRTC mode)"))
	openTokSecretSetting = config.Secret("OPENTOK_SECRET", "tokens", "the OpenTok project's API secret; it never leaves the tokens service")
	openTokURLSetting    = config.String("OPENTOK_API_URL", "", "tokens", "OpenTok REST base URL",
		config.DefaultShown("`https://api.opentok.com`"))
	openTokTokenTypeSetting = config.String("OPENTOK_TOKEN_TYPE", "", "tokens", "client token format: `t1` or `jwt`",
		config.DefaultShown("`t1`"))
	// The TURN credentials in it are secret: never logged.
	iceServersSetting = config.Secret("ICE_SERVERS", "tokens",
		"WebRTC mode: the STUN and TURN servers pages use to reach each other across networks, a JSON array of "+
			"`{\"urls\": URL or [URLs], \"username\", \"credential\"}` (`stun:`, `stuns:`, `turn:`, `turns:`; TURN needs a username "+
			"and credential; at most 8). They reach the chat's two pages with their credentials, and are never logged. Refused with OpenTok, which brings its own",
		config.DefaultShown("— (direct connections only)"))
)

// ConfigFromEnv reads KV_REPLICAS and the OpenTok settings: with
// OPENTOK_KEY and OPENTOK_SECRET set, chats use OpenTok (OPENTOK_API_URL,
// OPENTOK_TOKEN_TYPE=t1|jwt); without them, direct WebRTC, with the STUN
// and TURN servers of ICE_SERVERS (ParseIceServers). A half or malformed
// configuration is an error, never a silent fallback.
func ConfigFromEnv(env *config.Env) Config {
	cfg := Config{Replicas: state.ReplicasSetting.Read(env)}
	key, secret := openTokKeySetting.Read(env), openTokSecretSetting.Read(env)
	apiURL, tokenType := openTokURLSetting.Read(env), openTokTokenTypeSetting.Read(env)
	ice, err := ParseIceServers(iceServersSetting.Read(env))
	if err != nil {
		env.Fail("%v", err)
	}
	if key == "" && secret == "" {
		if apiURL != "" || tokenType != "" {
			env.Fail("OPENTOK_API_URL or OPENTOK_TOKEN_TYPE is set but OPENTOK_KEY and OPENTOK_SECRET are not")
		}
		if len(ice) > 0 {
			cfg.Provider = WebRTC{IceServers: ice}
		}
		return cfg
	}
	if len(ice) > 0 {
		env.Fail("ICE_SERVERS is for direct WebRTC; with OPENTOK_KEY and OPENTOK_SECRET set, OpenTok brings its own")
	}
	client, err := opentok.NewClient(opentok.Config{
		APIKey: key, APISecret: secret, APIURL: apiURL,
		TokenType: opentok.TokenType(strings.ToLower(tokenType)),
	})
	if err != nil {
		env.Fail("OpenTok settings: %w", err)
		return cfg
	}
	cfg.Provider = NewOpenTok(client)
	return cfg
}

// Service is one tokens replica.
type Service struct {
	nc       *nats.Conn
	log      *slog.Logger
	store    *state.Store
	provider Provider
	srv      *natsrpc.Server
	metrics  *metrics.Metrics
}

// New opens the state bucket and returns a replica ready to Run.
func New(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger, m *metrics.Metrics) (*Service, error) {
	store, err := state.Open(ctx, nc, state.Options{Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	p := cfg.Provider
	if p == nil {
		p = WebRTC{}
	}
	log.Info("video provider", "mode", p.Mode())
	return &Service{nc: nc, log: log, store: store, provider: p, metrics: m,
		srv: natsrpc.NewServer(log, m, 128, 20*time.Second)}, nil
}

// Ready is closed once the replica takes requests.
func (s *Service) Ready() <-chan struct{} { return s.srv.Ready() }

// Run serves the endpoints until ctx ends, then waits for requests in flight.
func (s *Service) Run(ctx context.Context) error {
	return s.srv.Serve(ctx, s.nc, micro.Config{Name: protocol.ServiceTokens, Version: Version, Description: "BuddyTok video sessions, credentials and WebRTC signalling (" + s.provider.Mode() + ")"},
		natsrpc.Endpoint{Name: "session", Subject: protocol.SubjectTokensSession, Handler: natsrpc.Handle(s.srv, s.session)},
		natsrpc.Endpoint{Name: "credentials", Subject: protocol.SubjectTokensCredentials, Handler: natsrpc.Handle(s.srv, s.credentials)},
		natsrpc.Endpoint{Name: "signal", Subject: protocol.SubjectTokensSignal, Handler: natsrpc.Handle(s.srv, s.signal)},
		natsrpc.Endpoint{Name: "mode", Subject: protocol.SubjectTokensMode, Handler: natsrpc.Handle(s.srv, s.mode)},
	)
}

func (s *Service) session(ctx context.Context, req protocol.SessionRequest) (protocol.SessionReply, error) {
	started := time.Now()
	id, err := s.provider.CreateSession(ctx, req)
	if s.provider.Mode() == protocol.ModeOpenTok {
		// OpenTok makes a session with a REST call; WebRTC needs none.
		metrics.Since(s.metrics.OpenTokCalls.WithLabelValues("create_session", metrics.Outcome(err)), started)
	}
	if err != nil {
		s.log.WarnContext(ctx, "video session failed", "chat", req.ChatID, "mode", s.provider.Mode(), "err", err)
		return protocol.SessionReply{}, err
	}
	return protocol.SessionReply{Mode: s.provider.Mode(), SessionID: id}, nil
}

func (s *Service) mode(context.Context, protocol.Empty) (protocol.ModeReply, error) {
	return protocol.ModeReply{Mode: s.provider.Mode()}, nil
}

// chatOf loads a chat of room and checks that userID is one of its two parties,
// and that secret proves the request comes from that user's connection.
func (s *Service) chatOf(ctx context.Context, room, chatID, userID, secret string) (state.Chat, string, error) {
	chat, _, err := s.store.GetChat(ctx, room, chatID)
	if errors.Is(err, state.ErrNotFound) {
		return chat, "", protocol.Errorf(protocol.CodeNotFound, "that chat does not exist or has ended")
	}
	if err != nil {
		return chat, "", err
	}
	peer, ok := chat.Peer(userID)
	if !ok {
		return chat, "", protocol.Errorf(protocol.CodeNotParty, "you are not in that chat")
	}
	u, _, err := s.store.GetUser(ctx, room, userID)
	if errors.Is(err, state.ErrNotFound) {
		return chat, "", protocol.Errorf(protocol.CodeNotFound, "you are not online")
	}
	if err != nil {
		return chat, "", err
	}
	if !u.Proves(secret) {
		return chat, "", protocol.ErrNotProven
	}
	return chat, peer, nil
}

func (s *Service) credentials(ctx context.Context, req protocol.ChatRequest) (protocol.Credentials, error) {
	chat, _, err := s.chatOf(ctx, req.Room, req.Chat, req.UserID, req.Secret)
	if err != nil {
		return protocol.Credentials{}, err
	}
	return s.provider.Credentials(ctx, chat, req.UserID)
}

func (s *Service) signal(ctx context.Context, req protocol.SignalRequest) (protocol.Empty, error) {
	chat, peer, err := s.chatOf(ctx, req.Room, req.Chat, req.UserID, req.Secret)
	if err != nil {
		return protocol.Empty{}, err
	}
	data, err := json.Marshal(protocol.ServerFrame{Type: protocol.TypeSignal, Chat: &chat.Chat, From: req.UserID, Data: req.Data})
	if err != nil {
		return protocol.Empty{}, fmt.Errorf("tokens: encode signal: %w", err)
	}
	if err := s.nc.Publish(protocol.EventSubject(req.Room, peer), data); err != nil {
		return protocol.Empty{}, fmt.Errorf("tokens: relay signal: %w", err)
	}
	return protocol.Empty{}, nil
}
