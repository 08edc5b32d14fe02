// Package floor is the measuring floor of BuddyTok's load runs: a server
// that speaks the part of BuddyTok's protocol cmd/buddyload uses (join,
// invite, cancel, ping) on the same HTTP and WebSocket stack as the edge
// (fiber, contrib/websocket) and does nothing else: each room's users,
// states and invitations live in one map under one lock in this process,
// with no NATS, no services, no persistence, no limits. A frame is encoded
// once and queued on every recipient's socket, and each socket has a
// writer goroutine that writes whatever is queued in one system call, as
// the edge does under load.
//
// Whatever latency a load run measures against it is the cost of the
// sockets, the fan-out and the load generator on this machine, which
// BuddyTok cannot go below: issue #24 asks for that limit to be measured,
// not estimated, before a target is called impossible. It is a yardstick,
// not a BuddyTok: a user that leaves is only removed from the list, and
// nothing of BuddyTok's rules or guarantees is kept.
package floor

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/wsframe"
)

// Server is the floor server.
type Server struct {
	app   *fiber.App
	mu    sync.Mutex
	rooms map[string]*room
}

// room is one room's users and invitations, under its lock.
type room struct {
	mu          sync.Mutex
	name        string
	rev         uint64
	users       map[string]*member // by ID
	order       []*member          // in join order, for the welcome's list
	invitations map[string]protocol.Invitation
}

// member is a joined user and its socket.
type member struct {
	user protocol.User
	out  *outbox
}

// outbox is what waits to be written to one socket.
type outbox struct {
	mu     sync.Mutex
	frames [][]byte
	wake   chan struct{}
	closed bool
}

// queueLimit is how many frames may wait for one socket before it is
// closed: a client that does not read ends, as on the edge.
const queueLimit = 4096

func (o *outbox) push(frame []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	if len(o.frames) >= queueLimit {
		o.closed = true // the writer closes the socket
	} else {
		o.frames = append(o.frames, frame)
	}
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *outbox) take(into [][]byte) ([][]byte, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	into = append(into[:0], o.frames...)
	clear(o.frames)
	o.frames = o.frames[:0]
	return into, o.closed
}

func (o *outbox) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// New returns a floor server.
func New() *Server {
	s := &Server{rooms: map[string]*room{}}
	s.app = fiber.New(fiber.Config{DisableStartupMessage: true, ReduceMemoryUsage: true}) // as the edge
	s.app.Get("/ws", websocket.New(s.serveWS, websocket.Config{
		ReadBufferSize: 1024, WriteBufferSize: 1024, WriteBufferPool: &sync.Pool{},
	}))
	return s
}

// Serve serves on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	done := make(chan error, 1)
	go func() { done <- s.app.Listener(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("floor: %w", err)
	case <-ctx.Done():
	}
	return s.app.ShutdownWithTimeout(5 * time.Second)
}

func (s *Server) room(name string) *room {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[name]
	if r == nil {
		r = &room{name: name, users: map[string]*member{}, invitations: map[string]protocol.Invitation{}}
		s.rooms[name] = r
	}
	return r
}

// serveWS reads one socket's frames and answers them; its writer runs
// beside.
func (s *Server) serveWS(ws *websocket.Conn) {
	out := &outbox{wake: make(chan struct{}, 1)}
	writerDone := make(chan struct{})
	go func() { defer close(writerDone); write(ws, out) }()
	var r *room
	var me *member
	defer func() {
		out.close()
		<-writerDone
		if me != nil {
			r.leave(me)
		}
	}()
	ws.SetReadLimit(protocol.MaxFrameBytes)
	ws.SetPingHandler(func(string) error { return nil })
	ws.SetCloseHandler(func(int, string) error { return nil })
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var f protocol.ClientFrame
		if err := json.Unmarshal(data, &f); err != nil {
			out.push(encode(protocol.ErrorFrame("", protocol.Errorf(protocol.CodeBadJSON, "not JSON"))))
			continue
		}
		switch {
		case f.Type == protocol.TypePing:
			out.push(encode(protocol.ServerFrame{Type: protocol.TypePong, Ref: f.Ref}))
		case f.Type == protocol.TypeJoin && me == nil:
			r = s.room(cmpRoom(f.Room))
			me = r.join(f, out)
		case me == nil:
			out.push(encode(protocol.ErrorFrame(f.Ref, protocol.Errorf(protocol.CodeNotJoined, "join first"))))
		case f.Type == protocol.TypeInvite:
			r.invite(me, f)
		case f.Type == protocol.TypeCancel:
			r.cancel(me, f)
		default:
			out.push(encode(protocol.ErrorFrame(f.Ref, protocol.Errorf(protocol.CodeBadRequest, "the floor server answers join, invite, cancel and ping only"))))
		}
	}
}

func cmpRoom(name string) string {
	if name == "" {
		return protocol.Lobby
	}
	return name
}

// write writes what out holds until out is closed: all that waits at
// once, each frame a WebSocket text message, in one write to the socket.
// It is the socket's only writer: the reader answers no ping or close.
func write(ws *websocket.Conn, out *outbox) {
	var frames [][]byte
	var buf []byte
	conn := ws.NetConn()
	for range out.wake {
		var closed bool
		frames, closed = out.take(frames)
		buf = buf[:0]
		for _, f := range frames {
			buf = wsframe.AppendText(buf, f)
		}
		if len(buf) > 0 {
			_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := conn.Write(buf); err != nil {
				_ = conn.Close()
				return
			}
		}
		if closed {
			_ = conn.Close()
			return
		}
	}
}

// encode encodes a frame; a ServerFrame always encodes.
func encode(f protocol.ServerFrame) []byte {
	data, _ := json.Marshal(f)
	return data
}

// join adds a user for frame f on out and welcomes it: its list is last in
// the welcome, as the edge writes it.
func (r *room) join(f protocol.ClientFrame, out *outbox) *member {
	r.mu.Lock()
	defer r.mu.Unlock()
	me := &member{out: out, user: protocol.User{ID: protocol.NewID(), Name: f.Name, State: protocol.StateAvailable, JoinedAt: time.Now().UnixMilli()}}
	r.rev++
	r.users[me.user.ID] = me
	r.order = append(r.order, me)
	list, _ := json.Marshal(r.list()) // the user too, as the edge lists it
	head := encode(protocol.ServerFrame{Type: protocol.TypeWelcome, Ref: f.Ref, Version: 1, Room: r.name, Mode: "webrtc",
		You: &me.user, Secret: protocol.NewSecret(), Revision: r.rev})
	welcome := append(append(append(head[:len(head)-1:len(head)-1], `,"users":`...), list...), '}')
	out.push(welcome)
	r.broadcast(encode(protocol.ServerFrame{Type: protocol.TypeUser, User: &me.user, Revision: r.rev}), me)
	return me
}

// list is the room's users (r locked).
func (r *room) list() []protocol.User {
	users := make([]protocol.User, len(r.order))
	for i, m := range r.order {
		users[i] = m.user
	}
	return users
}

// broadcast queues frame on every member but except (r locked).
func (r *room) broadcast(frame []byte, except *member) {
	for _, m := range r.order {
		if m != except {
			m.out.push(frame)
		}
	}
}

// leave removes me and tells the others.
func (r *room) leave(me *member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.users, me.user.ID)
	for i, m := range r.order {
		if m == me {
			r.order = append(r.order[:i], r.order[i+1:]...)
			break
		}
	}
	for id, inv := range r.invitations {
		if inv.From == me.user.ID || inv.To == me.user.ID {
			delete(r.invitations, id)
		}
	}
	r.rev++
	r.broadcast(encode(protocol.ServerFrame{Type: protocol.TypeUserLeft, UserID: me.user.ID, Revision: r.rev}), nil)
}

// invite makes an invitation from me to f.To if both are available.
func (r *room) invite(me *member, f protocol.ClientFrame) {
	r.mu.Lock()
	defer r.mu.Unlock()
	to := r.users[f.To]
	if to == nil || to == me || me.user.State != protocol.StateAvailable || to.user.State != protocol.StateAvailable {
		me.out.push(encode(protocol.ErrorFrame(f.Ref, protocol.Errorf(protocol.CodeNotAvailable, "not available"))))
		return
	}
	inv := protocol.Invitation{ID: protocol.NewID(), From: me.user.ID, FromName: me.user.Name, To: to.user.ID, ToName: to.user.Name,
		CreatedAt: time.Now().UnixMilli()}
	r.invitations[inv.ID] = inv
	me.user.State = protocol.StateInviting
	r.rev++
	me.out.push(encode(protocol.ServerFrame{Type: protocol.TypeOK, Ref: f.Ref, Invitation: &inv}))
	to.out.push(encode(protocol.ServerFrame{Type: protocol.TypeInvitation, Invitation: &inv}))
	r.broadcast(encode(protocol.ServerFrame{Type: protocol.TypeUser, User: &me.user, Revision: r.rev}), nil) // the changing user too, as the edge tells its room
}

// cancel ends me's invitation f.Invitation.
func (r *room) cancel(me *member, f protocol.ClientFrame) {
	r.mu.Lock()
	defer r.mu.Unlock()
	inv, ok := r.invitations[f.Invitation]
	if !ok || inv.From != me.user.ID {
		me.out.push(encode(protocol.ErrorFrame(f.Ref, protocol.Errorf(protocol.CodeNotFound, "no such invitation"))))
		return
	}
	delete(r.invitations, inv.ID)
	me.user.State = protocol.StateAvailable
	r.rev++
	me.out.push(encode(protocol.ServerFrame{Type: protocol.TypeOK, Ref: f.Ref}))
	if to := r.users[inv.To]; to != nil {
		to.out.push(encode(protocol.ServerFrame{Type: protocol.TypeInvitationEnded, Invitation: &inv, Reason: "cancelled"}))
	}
	r.broadcast(encode(protocol.ServerFrame{Type: protocol.TypeUser, User: &me.user, Revision: r.rev}), nil) // the changing user too, as the edge tells its room
}
