// Package client is a Go BuddyTok client speaking the real WebSocket
// protocol. The system, cluster and compose tests use it to play users; it
// keeps the same view of the world a browser tab keeps (buddy list,
// invitations, chat), built only from the frames it receives. (The load
// generator has a lighter client of its own.)
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// ErrClosed is returned once the connection has ended.
var ErrClosed = errors.New("client: connection closed")

// View is what a tab knows, rebuilt from frames.
type View struct {
	Joined   bool
	Room     string // as the welcome names it
	Me       protocol.User
	Secret   string
	Mode     string
	Users    map[string]protocol.User // everyone online, including Me
	Incoming map[string]protocol.Invitation
	Outgoing *protocol.Invitation
	Chat     *protocol.Chat
	// Ended holds the IDs of invitations and chats that ended events
	// were received for. The view's own invitations and chat do not
	// depend on them: they come only from the welcome and the sync frames
	// (derived from the state, in order); events may be late or lost.
	Ended map[string]bool
}

func (v View) clone() View {
	v.Users = maps.Clone(v.Users)
	v.Incoming = maps.Clone(v.Incoming)
	v.Ended = maps.Clone(v.Ended)
	return v
}

// Client is one connection.
type Client struct {
	ws      *websocket.Conn
	writeMu sync.Mutex

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	view    View
	events  []protocol.ServerFrame // frames without a pending ref, in order
	pending map[string]chan protocol.ServerFrame
	nextRef int
	closed  bool
	closeCd int
	closeTx string
	record  bool
	raw     [][]byte // every frame received, when record is on
}

// Dial connects to an edge; base is its http:// URL.
func Dial(ctx context.Context, base string) (*Client, error) {
	return DialHeader(ctx, base, nil)
}

// DialHeader connects to an edge with extra request headers on the
// upgrade (an Origin, an X-Forwarded-For).
func DialHeader(ctx context.Context, base string, h http.Header) (*Client, error) {
	u := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, u, h)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", u, err)
	}
	c := &Client{
		ws:      ws,
		changed: make(chan struct{}),
		pending: map[string]chan protocol.ServerFrame{},
		view:    View{Users: map[string]protocol.User{}, Incoming: map[string]protocol.Invitation{}, Ended: map[string]bool{}},
	}
	go c.readLoop()
	return c, nil
}

// Close ends the connection.
func (c *Client) Close() error {
	c.writeMu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.writeMu.Unlock()
	return c.ws.Close()
}

// Drop ends the connection without a close handshake, as a lost network would.
func (c *Client) Drop() error { return c.ws.UnderlyingConn().Close() }

func (c *Client) readLoop() {
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.closed = true
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				c.closeCd, c.closeTx = ce.Code, ce.Text
			}
			for ref, ch := range c.pending {
				close(ch)
				delete(c.pending, ref)
			}
			c.notifyLocked()
			c.mu.Unlock()
			return
		}
		var f protocol.ServerFrame
		jerr := json.Unmarshal(data, &f)
		c.mu.Lock()
		if c.record {
			c.raw = append(c.raw, data)
		}
		if jerr != nil {
			c.mu.Unlock()
			continue
		}
		c.applyLocked(f)
		if ch, ok := c.pending[f.Ref]; ok && f.Ref != "" {
			delete(c.pending, f.Ref)
			ch <- f
		} else {
			c.events = append(c.events, f)
		}
		c.notifyLocked()
		c.mu.Unlock()
	}
}

func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// applyLocked updates the view the way the web page does.
func (c *Client) applyLocked(f protocol.ServerFrame) {
	v := &c.view
	switch f.Type {
	case protocol.TypeWelcome:
		v.Joined, v.Me, v.Mode, v.Room = true, *f.You, f.Mode, f.Room
		if f.Secret != "" {
			v.Secret = f.Secret
		}
		v.Users = map[string]protocol.User{v.Me.ID: v.Me}
		for _, u := range f.Users {
			v.Users[u.ID] = u
		}
		// The list's copy of me is in step with the deltas that follow.
		v.Me = v.Users[v.Me.ID]
		v.setPersonal(f)
	case protocol.TypeSync:
		v.setPersonal(f)
	case protocol.TypeUser:
		v.Users[f.User.ID] = *f.User
		if f.User.ID == v.Me.ID {
			v.Me = *f.User
		}
	case protocol.TypeUserLeft:
		delete(v.Users, f.UserID)
	case protocol.TypeInvitationEnded:
		v.Ended[f.Invitation.ID] = true
	case protocol.TypeChatEnded:
		v.Ended[f.Chat.ID] = true
	}
}

// setPersonal takes the user's invitations and chat from a welcome or a
// sync frame, which carries them complete.
func (v *View) setPersonal(f protocol.ServerFrame) {
	v.Incoming = map[string]protocol.Invitation{}
	for _, inv := range f.Incoming {
		v.Incoming[inv.ID] = inv
	}
	v.Outgoing, v.Chat = f.Outgoing, f.Chat
}

// View returns a copy of the client's current view.
func (c *Client) View() View {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.view.clone()
}

// WaitView waits until pred holds for the view.
func (c *Client) WaitView(ctx context.Context, pred func(View) bool) (View, error) {
	for {
		c.mu.Lock()
		v, ch, closed := c.view.clone(), c.changed, c.closed
		c.mu.Unlock()
		if pred(v) {
			return v, nil
		}
		if closed {
			return v, ErrClosed
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("client %s (%s): view condition not met: %w", v.Me.Name, v.Me.ID, ctx.Err())
		case <-ch:
		}
	}
}

// WaitEvent waits for an unsolicited frame matching pred, consuming the
// frames before it.
func (c *Client) WaitEvent(ctx context.Context, pred func(protocol.ServerFrame) bool) (protocol.ServerFrame, error) {
	for {
		c.mu.Lock()
		for len(c.events) > 0 {
			f := c.events[0]
			c.events = c.events[1:]
			if pred(f) {
				c.mu.Unlock()
				return f, nil
			}
		}
		ch, closed := c.changed, c.closed
		c.mu.Unlock()
		if closed {
			return protocol.ServerFrame{}, ErrClosed
		}
		select {
		case <-ctx.Done():
			return protocol.ServerFrame{}, fmt.Errorf("client: event not seen: %w", ctx.Err())
		case <-ch:
		}
	}
}

// RecordFrames keeps every frame received from now on, for Frames.
func (c *Client) RecordFrames() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.record = true
}

// Frames returns the frames received since RecordFrames, as sent.
func (c *Client) Frames() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.raw...)
}

// CloseCode is the close code the server sent, once closed (0 if none).
func (c *Client) CloseCode() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCd, c.closed
}

// CloseReason is the reason the server gave with its close code.
func (c *Client) CloseReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeTx
}

// WriteRaw sends a frame as is (for tests of bad input).
func (c *Client) WriteRaw(messageType int, data []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.ws.WriteMessage(messageType, data)
}

// Request sends f with a fresh ref and waits for the frame answering it.
// An error frame comes back as *protocol.Error.
func (c *Client) Request(ctx context.Context, f protocol.ClientFrame) (protocol.ServerFrame, error) {
	ch := make(chan protocol.ServerFrame, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return protocol.ServerFrame{}, ErrClosed
	}
	c.nextRef++
	f.Ref = "r" + strconv.Itoa(c.nextRef)
	c.pending[f.Ref] = ch
	c.mu.Unlock()
	data, err := json.Marshal(f)
	if err != nil {
		return protocol.ServerFrame{}, err
	}
	if err := c.WriteRaw(websocket.TextMessage, data); err != nil {
		return protocol.ServerFrame{}, fmt.Errorf("client: send %s: %w", f.Type, err)
	}
	select {
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, f.Ref)
		c.mu.Unlock()
		return protocol.ServerFrame{}, fmt.Errorf("client: %s: no answer: %w", f.Type, ctx.Err())
	case reply, ok := <-ch:
		if !ok {
			return protocol.ServerFrame{}, ErrClosed
		}
		if reply.Type == protocol.TypeError {
			return reply, &protocol.Error{Code: reply.Code, Message: reply.Message}
		}
		return reply, nil
	}
}

// Join joins the lobby with a display name.
func (c *Client) Join(ctx context.Context, name string) (protocol.ServerFrame, error) {
	return c.Request(ctx, protocol.ClientFrame{Type: protocol.TypeJoin, Name: name})
}

// JoinRoom joins room with a display name.
func (c *Client) JoinRoom(ctx context.Context, name, room string) (protocol.ServerFrame, error) {
	return c.Request(ctx, protocol.ClientFrame{Type: protocol.TypeJoin, Name: name, Room: room})
}

// Resume reattaches to a user of the lobby with its secret.
func (c *Client) Resume(ctx context.Context, userID, secret string) (protocol.ServerFrame, error) {
	return c.Request(ctx, protocol.ClientFrame{Type: protocol.TypeResume, UserID: userID, Secret: secret})
}

// ResumeRoom reattaches to a user of room with its secret.
func (c *Client) ResumeRoom(ctx context.Context, userID, secret, room string) (protocol.ServerFrame, error) {
	return c.Request(ctx, protocol.ClientFrame{Type: protocol.TypeResume, UserID: userID, Secret: secret, Room: room})
}

// Invite invites user to.
func (c *Client) Invite(ctx context.Context, to string) (protocol.Invitation, error) {
	f, err := c.Request(ctx, protocol.ClientFrame{Type: protocol.TypeInvite, To: to})
	if err != nil {
		return protocol.Invitation{}, err
	}
	return *f.Invitation, nil
}

// Cancel withdraws the client's invitation.
func (c *Client) Cancel(ctx context.Context, invitation string) error {
	_, err := c.Request(ctx, protocol.ClientFrame{Type: protocol.TypeCancel, Invitation: invitation})
	return err
}

// Decline declines an incoming invitation.
func (c *Client) Decline(ctx context.Context, invitation string) error {
	_, err := c.Request(ctx, protocol.ClientFrame{Type: protocol.TypeDecline, Invitation: invitation})
	return err
}

// Accept accepts an incoming invitation and returns the chat.
func (c *Client) Accept(ctx context.Context, invitation string) (protocol.Chat, error) {
	f, err := c.Request(ctx, protocol.ClientFrame{Type: protocol.TypeAccept, Invitation: invitation})
	if err != nil {
		return protocol.Chat{}, err
	}
	return *f.Chat, nil
}

// EndChat ends a chat.
func (c *Client) EndChat(ctx context.Context, chat string) error {
	_, err := c.Request(ctx, protocol.ClientFrame{Type: protocol.TypeEndChat, Chat: chat})
	return err
}

// Credentials asks for this client's credentials for a chat.
func (c *Client) Credentials(ctx context.Context, chat string) (protocol.Credentials, error) {
	f, err := c.Request(ctx, protocol.ClientFrame{Type: protocol.TypeCredentials, Chat: chat})
	if err != nil {
		return protocol.Credentials{}, err
	}
	return *f.Credentials, nil
}

// Signal relays a WebRTC signal to the other party of a chat.
func (c *Client) Signal(ctx context.Context, chat string, data json.RawMessage) error {
	_, err := c.Request(ctx, protocol.ClientFrame{Type: protocol.TypeSignal, Chat: chat, Data: data})
	return err
}

// Differs says how the view differs from the stored state snap (nil if it
// does not): the buddy list, and the user's own invitations and chat.
func (v View) Differs(snap state.Snapshot) error {
	if len(v.Users) != len(snap.Users) {
		return fmt.Errorf("sees %d users, state has %d", len(v.Users), len(snap.Users))
	}
	for id, u := range snap.Users {
		if v.Users[id] != u.Public() {
			return fmt.Errorf("user %s: sees %+v, state %+v", id, v.Users[id], u.Public())
		}
	}
	me, ok := snap.Users[v.Me.ID]
	if !ok {
		return fmt.Errorf("its user %s is not in the state", v.Me.ID)
	}
	if !slices.Equal(slices.Sorted(maps.Keys(v.Incoming)), slices.Sorted(slices.Values(me.Incoming))) {
		return errors.New("incoming invitations differ")
	}
	if (v.Outgoing == nil) != (me.Outgoing == "") || v.Outgoing != nil && v.Outgoing.ID != me.Outgoing {
		return errors.New("outgoing invitation differs")
	}
	if (v.Chat == nil) != (me.Chat == "") || v.Chat != nil && v.Chat.ID != me.Chat {
		return errors.New("chat differs")
	}
	return nil
}
