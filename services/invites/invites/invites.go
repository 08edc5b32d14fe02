// Package invites is the invitations service: it owns the lifecycle of
// invitations and chats and settles the races of docs/behaviour.md §3. Each transition
// reads the records it depends on and writes them back in one atomic batch
// guarded by their revisions, so concurrent requests on any replicas can
// never leave an impossible state: one wins, the others re-read and retry
// or are refused with a clear reason.
package invites

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/buddytok/buddytok/pkg/config"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// Version of the invites service, as micro reports it.
const Version = "0.1.0"

// Config tunes the service.
type Config struct {
	Replicas int // of the state bucket
	// MaxIncoming is how many pending invitations one user may hold
	// (default protocol.MaxIncomingInvitations, at most
	// protocol.IncomingInvitationsCeiling).
	MaxIncoming int
	// LeaveBatch is how many invitations one step of a leave ends (default
	// defaultLeaveBatch): a user holding more leaves in several steps, so
	// that no batch nears the server's limit whatever the state holds.
	LeaveBatch int
}

// defaultLeaveBatch keeps a leave step (the invitations, their inviters,
// the user, a chat and its peer) far below protocol.ServerBatchLimit.
const defaultLeaveBatch = 100

// maxPendingSetting bounds the invitations one user may hold.
var maxPendingSetting = config.Int("MAX_PENDING_INVITATIONS", protocol.MaxIncomingInvitations, 1, protocol.IncomingInvitationsCeiling,
	"invites", fmt.Sprintf("pending invitations one user may hold (at most %d); more are refused with `too_many_invites`", protocol.IncomingInvitationsCeiling))

// ConfigFromEnv reads KV_REPLICAS and MAX_PENDING_INVITATIONS.
func ConfigFromEnv(env *config.Env) Config {
	return Config{
		Replicas:    state.ReplicasSetting.Read(env),
		MaxIncoming: maxPendingSetting.Read(env),
	}
}

func (c Config) withDefaults() Config {
	if c.MaxIncoming <= 0 || c.MaxIncoming > protocol.IncomingInvitationsCeiling {
		c.MaxIncoming = protocol.MaxIncomingInvitations
	}
	if c.LeaveBatch <= 0 || c.LeaveBatch > defaultLeaveBatch {
		c.LeaveBatch = defaultLeaveBatch
	}
	return c
}

// Service is one invites replica.
type Service struct {
	cfg   Config
	nc    *nats.Conn
	log   *slog.Logger
	store *state.Store
	locks *userLocks
	now   func() time.Time
	srv   *natsrpc.Server
}

// New opens the state bucket and returns a replica ready to Run.
func New(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger, m *metrics.Metrics) (*Service, error) {
	store, err := state.Open(ctx, nc, state.Options{Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("invites: %w", err)
	}
	return &Service{cfg: cfg.withDefaults(), nc: nc, log: log, store: store, locks: newUserLocks(), now: time.Now,
		srv: natsrpc.NewServer(log, m, 64, 15*time.Second)}, nil
}

// Ready is closed once the replica takes requests.
func (s *Service) Ready() <-chan struct{} { return s.srv.Ready() }

// Run serves the endpoints until ctx ends, then waits for requests in flight.
func (s *Service) Run(ctx context.Context) error {
	return s.srv.Serve(ctx, s.nc, micro.Config{Name: protocol.ServiceInvites, Version: Version, Description: "BuddyTok invitations and chats"},
		natsrpc.Endpoint{Name: "invite", Subject: protocol.SubjectInvitesInvite, Handler: natsrpc.Handle(s.srv, s.invite)},
		natsrpc.Endpoint{Name: "cancel", Subject: protocol.SubjectInvitesCancel, Handler: natsrpc.Handle(s.srv, s.cancel)},
		natsrpc.Endpoint{Name: "accept", Subject: protocol.SubjectInvitesAccept, Handler: natsrpc.Handle(s.srv, s.accept)},
		natsrpc.Endpoint{Name: "decline", Subject: protocol.SubjectInvitesDecline, Handler: natsrpc.Handle(s.srv, s.decline)},
		natsrpc.Endpoint{Name: "end", Subject: protocol.SubjectInvitesEnd, Handler: natsrpc.Handle(s.srv, s.end)},
		natsrpc.Endpoint{Name: "leave", Subject: protocol.SubjectInvitesLeave, Handler: natsrpc.Handle(s.srv, s.leave)},
	)
}

// run waits for this replica's earlier transitions of the same users, then
// retries build+commit on conflicts and publishes the events of the change
// that committed. users names whom the transition is expected to change;
// a user it changes without naming is still guarded by revisions.
func (s *Service) run(ctx context.Context, room string, users []string, build func(context.Context, *change) error) error {
	unlock, err := s.locks.lock(ctx, users...)
	if err != nil {
		return fmt.Errorf("invites: waiting for an earlier change of the same users: %w", err)
	}
	defer unlock()
	var done *change
	err = state.Retry(ctx, func(ctx context.Context) error {
		c := newChange(s.store, room)
		defer c.settle()
		c.prefetch(ctx, users...)
		if err := build(ctx, c); err != nil {
			return err
		}
		if err := c.commit(ctx); err != nil {
			return err
		}
		done = c
		return nil
	})
	if err != nil {
		return notFoundAsProtocol(err)
	}
	for _, e := range done.events {
		s.publish(ctx, room, e.to, e.frame)
	}
	return nil
}

// publish sends a directed event. Events are best effort: a user who is
// between connections rebuilds its view from the resume reply.
func (s *Service) publish(ctx context.Context, room, userID string, frame protocol.ServerFrame) {
	data, err := json.Marshal(frame)
	if err != nil {
		s.log.ErrorContext(ctx, "encode event", "err", err)
		return
	}
	if err := s.nc.Publish(protocol.EventSubject(room, userID), data); err != nil {
		s.log.WarnContext(ctx, "publish event", "user", userID, "type", frame.Type, "err", err)
	}
}

func notFoundAsProtocol(err error) error {
	if errors.Is(err, state.ErrNotFound) {
		return protocol.Errorf(protocol.CodeNotFound, "that no longer exists")
	}
	return err
}

func (s *Service) invite(ctx context.Context, req protocol.InviteRequest) (protocol.Invitation, error) {
	if req.From == req.To {
		return protocol.Invitation{}, protocol.Errorf(protocol.CodeSelfInvite, "you cannot invite yourself")
	}
	var inv protocol.Invitation
	err := s.run(ctx, req.Room, []string{req.From, req.To}, func(ctx context.Context, c *change) error {
		from, err := c.user(ctx, req.From)
		if err != nil {
			return err
		}
		if !from.Proves(req.Secret) {
			return protocol.ErrNotProven
		}
		// A user of another room is not found in this one: which room
		// anyone else is in is not told.
		to, err := c.user(ctx, req.To)
		if errors.Is(err, state.ErrNotFound) {
			return protocol.Errorf(protocol.CodeNotInRoom, "that user is not in this room (or has left it)")
		}
		if err != nil {
			return err
		}
		switch from.State {
		case protocol.StateInviting:
			return protocol.Errorf(protocol.CodeBusy, "you already have a pending invitation; cancel it first")
		case protocol.StateChatting:
			return protocol.Errorf(protocol.CodeBusy, "you are in a chat")
		}
		if to.State != protocol.StateAvailable {
			return protocol.Errorf(protocol.CodeNotAvailable, "%s is %s and cannot be invited now", to.Name, to.State)
		}
		if len(to.Incoming) >= s.cfg.MaxIncoming {
			return protocol.Errorf(protocol.CodeTooManyInvited, "%s has %d invitations waiting for an answer; try again later", to.Name, len(to.Incoming))
		}
		inv = protocol.Invitation{
			ID: protocol.NewID(), From: from.ID, FromName: from.Name, To: to.ID, ToName: to.Name,
			CreatedAt: s.now().UnixMilli(),
		}
		from.State, from.Outgoing = protocol.StateInviting, inv.ID
		to.Incoming = append(slices.Clone(to.Incoming), inv.ID)
		c.txn.Put(state.InvitationKey(c.room, inv.ID), 0, inv)
		c.notify(protocol.ServerFrame{Type: protocol.TypeInvitation, Invitation: &inv}, to.ID)
		return nil
	})
	return inv, err
}

// invitationFor loads an invitation and checks that userID is the party
// allowed to act on it (the inviter when asInviter, else the invitee).
func invitationFor(ctx context.Context, c *change, id, userID string, asInviter bool) (protocol.Invitation, uint64, error) {
	inv, rev, err := c.store.GetInvitation(ctx, c.room, id)
	if errors.Is(err, state.ErrNotFound) {
		return inv, 0, protocol.Errorf(protocol.CodeNotFound, "that invitation is no longer pending")
	}
	if err != nil {
		return inv, 0, err
	}
	party := inv.To
	if asInviter {
		party = inv.From
	}
	if party != userID {
		if asInviter {
			return inv, 0, protocol.Errorf(protocol.CodeNotParty, "only the inviter can cancel an invitation")
		}
		return inv, 0, protocol.Errorf(protocol.CodeNotParty, "only the invited user can answer an invitation")
	}
	return inv, rev, nil
}

// invitationParties names the users a request about an invitation is
// expected to change: the requester and, while the invitation exists, both
// of its parties.
func (s *Service) invitationParties(ctx context.Context, req protocol.InvitationRequest) []string {
	users := []string{req.UserID}
	if inv, _, err := s.store.GetInvitation(ctx, req.Room, req.Invitation); err == nil {
		users = append(users, inv.From, inv.To)
	}
	return users
}

// actor loads the user a request acts for, and refuses the request unless
// secret proves it comes from that user's connection.
func actor(ctx context.Context, c *change, userID, secret string) error {
	u, err := c.user(ctx, userID)
	if errors.Is(err, state.ErrNotFound) {
		return protocol.Errorf(protocol.CodeNotFound, "you are not online")
	}
	if err != nil {
		return err
	}
	if !u.Proves(secret) {
		return protocol.ErrNotProven
	}
	return nil
}

func (s *Service) cancel(ctx context.Context, req protocol.InvitationRequest) (protocol.Empty, error) {
	return protocol.Empty{}, s.run(ctx, req.Room, s.invitationParties(ctx, req), func(ctx context.Context, c *change) error {
		inv, rev, err := invitationFor(ctx, c, req.Invitation, req.UserID, true)
		if err != nil {
			return err
		}
		if err := actor(ctx, c, req.UserID, req.Secret); err != nil {
			return err
		}
		return c.endLoadedInvitation(ctx, inv, rev, protocol.ReasonCancelled)
	})
}

func (s *Service) decline(ctx context.Context, req protocol.InvitationRequest) (protocol.Empty, error) {
	return protocol.Empty{}, s.run(ctx, req.Room, s.invitationParties(ctx, req), func(ctx context.Context, c *change) error {
		inv, rev, err := invitationFor(ctx, c, req.Invitation, req.UserID, false)
		if err != nil {
			return err
		}
		if err := actor(ctx, c, req.UserID, req.Secret); err != nil {
			return err
		}
		return c.endLoadedInvitation(ctx, inv, rev, protocol.ReasonDeclined)
	})
}

var errInChat = protocol.Errorf(protocol.CodeBusy, "you are already in a chat")

func (s *Service) accept(ctx context.Context, req protocol.InvitationRequest) (protocol.Chat, error) {
	inv, err := s.checkAccept(ctx, req)
	if err != nil {
		return protocol.Chat{}, err
	}
	chat := state.Chat{Chat: protocol.Chat{
		ID:      protocol.NewID(),
		Parties: [2]string{inv.From, inv.To},
		Names:   [2]string{inv.FromName, inv.ToName},
	}}
	// The session is made once, before the transition and its retries: a
	// retry must not make another one.
	var sess protocol.SessionReply
	if err := natsrpc.Call(ctx, s.nc, protocol.SubjectTokensSession,
		protocol.SessionRequest{ChatID: chat.ID, Parties: chat.Parties}, &sess); err != nil {
		if protocol.CodeOf(err) == protocol.CodeUnavailable {
			// The tokens service is out of reach for a moment (restarting,
			// NATS recovering): nothing has changed, and the invitation
			// stays pending for the accepter to try again. Only a refusal
			// of the video provider itself ends it.
			return protocol.Chat{}, err
		}
		return protocol.Chat{}, s.failAccept(ctx, req.Room, inv, err)
	}
	chat.Mode, chat.SessionID = sess.Mode, sess.SessionID
	err = s.run(ctx, req.Room, []string{inv.From, inv.To}, func(ctx context.Context, c *change) error {
		return s.startChat(ctx, c, req, &chat)
	})
	return chat.Chat, err
}

// checkAccept refuses, before a video session is made for it, an accept
// that the transition would refuse: the transition decides, this only
// spares a doomed accept its session. It returns the invitation.
func (s *Service) checkAccept(ctx context.Context, req protocol.InvitationRequest) (protocol.Invitation, error) {
	inv, _, err := s.store.GetInvitation(ctx, req.Room, req.Invitation)
	if errors.Is(err, state.ErrNotFound) {
		return inv, protocol.Errorf(protocol.CodeNotFound, "that invitation is no longer pending")
	}
	if err != nil {
		return inv, err
	}
	if inv.To != req.UserID {
		return inv, protocol.Errorf(protocol.CodeNotParty, "only the invited user can answer an invitation")
	}
	if accepter, _, err := s.store.GetUser(ctx, req.Room, inv.To); err == nil {
		if !accepter.Proves(req.Secret) {
			return inv, protocol.ErrNotProven
		}
		if accepter.State == protocol.StateChatting {
			return inv, errInChat
		}
	}
	return inv, nil
}

// startChat is the accept transition: the invitation becomes chat, both
// parties' other invitations end (declined as busy, or the accepter's own
// cancelled), and both parties are chatting in it.
func (s *Service) startChat(ctx context.Context, c *change, req protocol.InvitationRequest, chat *state.Chat) error {
	inv, rev, err := invitationFor(ctx, c, req.Invitation, req.UserID, false)
	if err != nil {
		return err
	}
	accepter, err := c.user(ctx, inv.To)
	if err != nil {
		return err
	}
	if !accepter.Proves(req.Secret) {
		return protocol.ErrNotProven
	}
	if accepter.State == protocol.StateChatting {
		return errInChat
	}
	inviter, err := c.user(ctx, inv.From)
	if err != nil {
		return err
	}
	otherIncoming := append(slices.Clone(accepter.Incoming), inviter.Incoming...)
	outgoing := accepter.Outgoing
	if err := c.endLoadedInvitation(ctx, inv, rev, protocol.ReasonAccepted); err != nil {
		return err
	}
	for _, id := range otherIncoming {
		if id == inv.ID {
			continue
		}
		if err := c.endInvitation(ctx, id, protocol.ReasonBusy); err != nil {
			return err
		}
	}
	if outgoing != "" {
		if err := c.endInvitation(ctx, outgoing, protocol.ReasonCancelled); err != nil {
			return err
		}
	}
	for _, u := range []*state.User{inviter, accepter} {
		*u = u.Available()
		u.State, u.Chat, u.Incoming = protocol.StateChatting, chat.ID, nil
	}
	chat.StartedAt = s.now().UnixMilli()
	c.txn.Put(state.ChatKey(c.room, chat.ID), 0, *chat)
	c.notify(protocol.ServerFrame{Type: protocol.TypeChatStarted, Chat: &chat.Chat}, chat.Parties[:]...)
	return nil
}

// failAccept ends an invitation whose chat could not be set up, so that both
// users are told why and are available again, and returns the error for
// the accepter.
func (s *Service) failAccept(ctx context.Context, room string, inv protocol.Invitation, cause error) error {
	s.log.WarnContext(ctx, "video session failed; ending the invitation", "invitation", inv.ID, "err", cause)
	err := s.run(ctx, room, []string{inv.From, inv.To}, func(ctx context.Context, c *change) error {
		return c.endInvitation(ctx, inv.ID, protocol.ReasonFailed)
	})
	if err != nil && protocol.CodeOf(err) != protocol.CodeNotFound {
		s.log.WarnContext(ctx, "ending failed invitation", "invitation", inv.ID, "err", err)
	}
	if pe := protocol.AsError(cause); pe.Code != protocol.CodeInternal {
		return protocol.Errorf(protocol.CodeVideoFailed, "the video chat could not be set up: %s", pe.Message)
	}
	return protocol.Errorf(protocol.CodeVideoFailed, "the video chat could not be set up")
}

func (s *Service) end(ctx context.Context, req protocol.ChatRequest) (protocol.Empty, error) {
	users := []string{req.UserID}
	if chat, _, err := s.store.GetChat(ctx, req.Room, req.Chat); err == nil {
		users = append(users, chat.Parties[:]...)
	}
	return protocol.Empty{}, s.run(ctx, req.Room, users, func(ctx context.Context, c *change) error {
		chat, _, err := s.store.GetChat(ctx, req.Room, req.Chat)
		if errors.Is(err, state.ErrNotFound) {
			return protocol.Errorf(protocol.CodeNotFound, "that chat has already ended")
		}
		if err != nil {
			return err
		}
		if _, ok := chat.Peer(req.UserID); !ok {
			return protocol.Errorf(protocol.CodeNotParty, "you are not in that chat")
		}
		if err := actor(ctx, c, req.UserID, req.Secret); err != nil {
			return err
		}
		return c.endChat(ctx, req.Chat, protocol.ReasonEnded)
	})
}

// leave removes a user whose grace period ran out: their outgoing
// invitation is cancelled, incoming ones declined, their chat ended. It
// ends the incoming invitations LeaveBatch at a time, each step a
// transition of its own, and removes the user with the last one.
func (s *Service) leave(ctx context.Context, req protocol.LeaveRequest) (protocol.Empty, error) {
	for {
		left, err := s.leaveStep(ctx, req)
		if err != nil || left {
			return protocol.Empty{}, err
		}
	}
}

// leaveStep ends up to LeaveBatch of the user's incoming invitations and,
// when no more remain, the rest of the user; it reports whether the user
// is gone.
func (s *Service) leaveStep(ctx context.Context, req protocol.LeaveRequest) (bool, error) {
	var left bool
	err := s.run(ctx, req.Room, []string{req.UserID}, func(ctx context.Context, c *change) error {
		left = false
		u, err := c.user(ctx, req.UserID)
		if err != nil {
			return err
		}
		if u.Connected || u.Conn != req.Conn {
			return protocol.Errorf(protocol.CodeConflict, "the user has resumed")
		}
		incoming := slices.Clone(u.Incoming)
		if len(incoming) > s.cfg.LeaveBatch {
			for _, id := range incoming[:s.cfg.LeaveBatch] {
				if err := c.endInvitation(ctx, id, protocol.ReasonLeft); err != nil {
					return err
				}
				// An invitation already gone is still dropped from the list.
				*u = u.WithoutIncoming(id)
			}
			return nil
		}
		outgoing, chat := u.Outgoing, u.Chat
		if outgoing != "" {
			if err := c.endInvitation(ctx, outgoing, protocol.ReasonLeft); err != nil {
				return err
			}
		}
		for _, id := range incoming {
			if err := c.endInvitation(ctx, id, protocol.ReasonLeft); err != nil {
				return err
			}
		}
		if chat != "" {
			if err := c.endChat(ctx, chat, protocol.ReasonLeft); err != nil {
				return err
			}
		}
		c.deleteUser(u.ID)
		left = true
		return nil
	})
	if err == nil && left {
		s.log.InfoContext(ctx, "user left", "user", req.UserID, "room", req.Room)
	}
	return left, err
}
