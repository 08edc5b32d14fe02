// Package presence is the presence service: it creates users on join,
// reattaches them on resume, marks them detached when their connection ends
// or their edge's lease expires, and has them leave when the grace period
// runs out. Any number of replicas may run; they share all state in NATS.
package presence

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/buddytok/buddytok/pkg/config"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// Version of the presence service, as micro reports it.
const Version = "0.1.0"

// Config tunes the service.
type Config struct {
	// Grace is how long a detached user is kept for a resume (docs/behaviour.md §2.9).
	Grace time.Duration
	// LeaseTTL is how long an edge may go silent before its users count as
	// detached: 0 takes the deployment's (its lease bucket carries it); any
	// other value must equal it.
	LeaseTTL time.Duration
	// SweepEvery is how often the reaper looks for users to detach or remove.
	SweepEvery time.Duration
	// Replicas of the JetStream buckets.
	Replicas int
	// RoomMaxUsers and LobbyMaxUsers bound the users of a room, and of
	// the lobby (0: no bound).
	RoomMaxUsers, LobbyMaxUsers int
}

// Service is one presence replica.
type Service struct {
	nc        *nats.Conn
	cfg       Config
	log       *slog.Logger
	store     *state.Store
	leases    jetstream.KeyValue
	now       func() time.Time
	srv       *natsrpc.Server
	leaseLane *natsrpc.Server // edges' leases, never behind a storm of joins
	metrics   *metrics.Metrics
	rooms     *roomIndex // who is in each room, kept by the reaper
	joins     joinQueues
}

// New opens the buckets and returns a replica ready to Run.
func New(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger, m *metrics.Metrics) (*Service, error) {
	cfg = cfg.withDefaults()
	store, err := state.Open(ctx, nc, state.Options{Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	leases, ttl, err := state.OpenLeases(ctx, nc, cfg.LeaseTTL, state.Options{Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	cfg.LeaseTTL = ttl
	// A store written by a release before rooms keeps its records under
	// other keys; their connections ended with that release (docs/rooms.md,
	// Upgrading).
	n, err := store.ClearOldLayout(ctx)
	if err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	if n > 0 {
		log.Warn("cleared the records of a release before rooms: their users join again", "keys", n)
	}
	srv := natsrpc.NewServer(log, m, 64, 10*time.Second)
	return &Service{nc: nc, cfg: cfg, log: log, store: store, leases: leases, now: time.Now, metrics: m, rooms: newRoomIndex(),
		joins: joinQueues{rooms: map[string][]*pendingJoin{}}, srv: srv, leaseLane: srv.Lane(8)}, nil
}

// withDefaults fills the settings that must not be zero. A zero Grace is
// valid: users leave as soon as they are detached.
func (c Config) withDefaults() Config {
	c.SweepEvery = cmp.Or(c.SweepEvery, sweepSetting.Def)
	c.RoomMaxUsers = cmp.Or(c.RoomMaxUsers, roomMaxSetting.Def)
	return c
}

// The service's settings.
var (
	graceSetting = config.Duration("GRACE_PERIOD", 5*time.Second, 0, time.Hour, "presence",
		"how long a disconnected user is kept for a resume ([behaviour.md](behaviour.md) §2.9), measured on the NATS server's clock")
	sweepSetting = config.Duration("SWEEP_INTERVAL", 500*time.Millisecond, 10*time.Millisecond, time.Minute, "presence",
		"how often presence looks for users to detach or remove")
	roomMaxSetting = config.Int("ROOM_MAX_USERS", 500, 1, 100_000, "presence",
		"the most users a room may hold; a join beyond it is refused with `room_full` ([behaviour.md](behaviour.md), Rooms)")
	lobbyMaxSetting = config.Int("LOBBY_MAX_USERS", 5000, 0, 1_000_000, "presence",
		"the most users the lobby may hold (0: no bound)")
)

// Ready is closed once the replica takes requests.
func (s *Service) Ready() <-chan struct{} { return s.srv.Ready() }

// Run serves the presence endpoints and runs the reaper until ctx ends,
// then stops taking requests and waits for those in flight.
func (s *Service) Run(ctx context.Context) error {
	reaperDone := make(chan error, 1)
	go func() { reaperDone <- s.reapUntilDone(ctx) }()
	purgeDone := make(chan struct{})
	go func() { defer close(purgeDone); s.purgeUntilDone(ctx) }()
	defer func() { <-purgeDone }()
	countDone := make(chan struct{})
	go func() { defer close(countDone); s.countRoomsUntilDone(ctx) }()
	defer func() { <-countDone }()
	err := s.srv.Serve(ctx, s.nc, micro.Config{Name: protocol.ServicePresence, Version: Version, Description: "BuddyTok presence: joins, resumes, disconnects, leaves, edge leases"},
		natsrpc.Endpoint{Name: "join", Subject: protocol.SubjectPresenceJoin, Handler: natsrpc.Handle(s.srv, s.join)},
		natsrpc.Endpoint{Name: "resume", Subject: protocol.SubjectPresenceResume, Handler: natsrpc.Handle(s.srv, s.resume)},
		natsrpc.Endpoint{Name: "disconnect", Subject: protocol.SubjectPresenceDisconnect, Handler: natsrpc.Handle(s.srv, s.disconnect)},
		natsrpc.Endpoint{Name: "attach", Subject: protocol.SubjectPresenceAttach, Handler: natsrpc.Handle(s.srv, s.attach)},
		natsrpc.Endpoint{Name: "lease", Subject: protocol.SubjectPresenceLease, Handler: natsrpc.Handle(s.leaseLane, s.lease)},
	)
	if rerr := <-reaperDone; rerr != nil && !errors.Is(rerr, context.Canceled) {
		err = errors.Join(err, rerr)
	}
	return err
}

func (s *Service) join(ctx context.Context, req protocol.JoinRequest) (protocol.JoinReply, error) {
	u := state.User{
		ID:         req.UserID,
		Room:       req.Room,
		Name:       req.Name,
		State:      protocol.StateAvailable,
		JoinedAt:   s.now().UnixMilli(),
		SecretHash: state.HashSecret(req.Secret),
		Edge:       req.Edge,
		Conn:       req.Conn,
		Connected:  true,
	}
	if err := s.admit(ctx, u); err != nil {
		return protocol.JoinReply{}, err
	}
	s.log.InfoContext(ctx, "user joined", "user", u.ID, "room", u.Room, "edge", u.Edge)
	return protocol.JoinReply{User: u.Public()}, nil
}

var errResume = protocol.Errorf(protocol.CodeResumeFailed, "unknown user or wrong secret")

func (s *Service) resume(ctx context.Context, req protocol.ResumeRequest) (protocol.Personal, error) {
	var u state.User
	err := state.Retry(ctx, func(ctx context.Context) error {
		cur, rev, err := s.store.GetUser(ctx, req.Room, req.UserID)
		if errors.Is(err, state.ErrNotFound) {
			return errResume
		}
		if err != nil {
			return err
		}
		if !cur.Proves(req.Secret) {
			return errResume
		}
		cur.Edge, cur.Conn, cur.Connected, cur.DisconnectedAt = req.Edge, req.Conn, true, 0
		var txn state.Txn
		txn.Put(state.UserKey(cur.Room, cur.ID), rev, cur)
		if err := s.store.Commit(ctx, &txn); err != nil {
			return err
		}
		u = cur
		return nil
	})
	if err != nil {
		return protocol.Personal{}, err
	}
	s.log.InfoContext(ctx, "user resumed", "user", u.ID, "edge", u.Edge)
	s.supersede(ctx, req.Room, u.ID, req.Conn)
	return s.personal(ctx, u)
}

// supersede tells every edge that conn now serves the user: any other
// connection of the user (a duplicated tab, or one not yet known to be
// dead) closes. Presence says so, not the resuming edge, so that edges
// never publish on users' event subjects. A lost message costs only time:
// each edge's reconcile loop closes a connection the state no longer
// names.
func (s *Service) supersede(ctx context.Context, room, userID, conn string) {
	msg := &nats.Msg{Subject: protocol.EventSubject(room, userID), Data: []byte(conn), Header: nats.Header{}}
	msg.Header.Set(protocol.HeaderControl, protocol.ControlSuperseded)
	if err := s.nc.PublishMsg(msg); err != nil {
		s.log.WarnContext(ctx, "superseding the user's other connections failed", "user", userID, "err", err)
	}
}

// personal gathers u's own invitations and chat. Records that vanished
// since u was read are left out: their end events are on their way.
func (s *Service) personal(ctx context.Context, u state.User) (protocol.Personal, error) {
	p := protocol.Personal{User: u.Public()}
	for _, id := range u.Incoming {
		inv, _, err := s.store.GetInvitation(ctx, u.Room, id)
		if errors.Is(err, state.ErrNotFound) {
			continue
		}
		if err != nil {
			return p, err
		}
		p.Incoming = append(p.Incoming, inv)
	}
	if u.Outgoing != "" {
		inv, _, err := s.store.GetInvitation(ctx, u.Room, u.Outgoing)
		switch {
		case err == nil:
			p.Outgoing = &inv
		case !errors.Is(err, state.ErrNotFound):
			return p, err
		}
	}
	if u.Chat != "" {
		c, _, err := s.store.GetChat(ctx, u.Room, u.Chat)
		switch {
		case err == nil:
			p.Chat = &c.Chat
		case !errors.Is(err, state.ErrNotFound):
			return p, err
		}
	}
	return p, nil
}

// disconnect starts the grace period of a user whose connection ended, if
// the report proves it comes from the edge that served the user.
func (s *Service) disconnect(ctx context.Context, req protocol.DisconnectRequest) (protocol.Empty, error) {
	return protocol.Empty{}, s.detach(ctx, req.Room, req.UserID, req.Conn, func(u state.User) error {
		if !u.Proves(req.Secret) {
			return protocol.ErrNotProven
		}
		return nil
	})
}

// attach marks a user connected again through the connection that served
// it, still open, after the user was detached (its edge's lease lapsed).
func (s *Service) attach(ctx context.Context, req protocol.AttachRequest) (protocol.Empty, error) {
	return protocol.Empty{}, state.Retry(ctx, func(ctx context.Context) error {
		u, rev, err := s.store.GetUser(ctx, req.Room, req.UserID)
		if errors.Is(err, state.ErrNotFound) {
			return protocol.Errorf(protocol.CodeNotFound, "that user has left")
		}
		if err != nil {
			return err
		}
		if !u.Proves(req.Secret) {
			return protocol.ErrNotProven
		}
		if u.Edge != req.Edge || u.Conn != req.Conn {
			return protocol.Errorf(protocol.CodeSuperseded, "another connection serves that user")
		}
		if u.Connected {
			return nil
		}
		u.Connected, u.DisconnectedAt = true, 0
		var txn state.Txn
		txn.Put(state.UserKey(u.Room, u.ID), rev, u)
		if err := s.store.Commit(ctx, &txn); err != nil {
			return err
		}
		s.log.InfoContext(ctx, "user attached again", "user", u.ID, "edge", u.Edge, "conn", u.Conn)
		return nil
	})
}

// detach marks the user's connection conn as ended, starting the grace
// period. A user already served by another connection is left alone.
// allowed, if not nil, refuses a request that may not act for the user
// (its error is the answer); the reaper, acting on the state itself,
// passes nil.
func (s *Service) detach(ctx context.Context, room, userID, conn string, allowed func(state.User) error) error {
	return state.Retry(ctx, func(ctx context.Context) error {
		u, rev, err := s.store.GetUser(ctx, room, userID)
		if errors.Is(err, state.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if allowed != nil {
			if err := allowed(u); err != nil {
				return err
			}
		}
		if u.Conn != conn || !u.Connected {
			return nil
		}
		u.Connected, u.DisconnectedAt = false, s.now().UnixMilli()
		var txn state.Txn
		txn.Put(state.UserKey(u.Room, u.ID), rev, u)
		if err := s.store.Commit(ctx, &txn); err != nil {
			return err
		}
		s.log.InfoContext(ctx, "user detached", "user", u.ID, "conn", conn)
		return nil
	})
}

// ConfigFromEnv reads the service's settings: GRACE_PERIOD, EDGE_LEASE_TTL,
// SWEEP_INTERVAL, KV_REPLICAS.
func ConfigFromEnv(env *config.Env) Config {
	return Config{
		Grace:      graceSetting.Read(env),
		LeaseTTL:   state.LeaseTTLSetting.Read(env),
		SweepEvery: sweepSetting.Read(env),
		Replicas:   state.ReplicasSetting.Read(env),

		RoomMaxUsers:  roomMaxSetting.Read(env),
		LobbyMaxUsers: lobbyMaxSetting.Read(env),
	}
}
