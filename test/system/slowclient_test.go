package system_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/test/kit"
)

// A client that stops reading is disconnected once its queue fills; it
// never slows the edge down for anyone else.
func TestSlowClientIsDisconnected(t *testing.T) {
	t.Parallel()
	// A short queue, a small send buffer, and a write to a stalled reader
	// given up after a second: how soon Bob is dropped then depends little
	// on how fast a busy machine relays the flood.
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: 200 * time.Millisecond, Rapid: true, SendQueueBytes: 128 << 10, SendBuffer: 16 << 10, WriteTimeout: time.Second})
	ann := w.Join("Ann")
	ctx, cancel := w.WaitCtx()
	defer cancel()

	// Bob is a bare WebSocket: he joins and accepts Ann's invitation, then
	// reads nothing more.
	url := "ws" + strings.TrimPrefix(w.Sys.EdgeURLs[0], "http") + "/ws"
	// Bob's socket takes in little: the edge's writes to him stall at
	// once instead of after megabytes of kernel buffers, however slowly a
	// busy machine relays the flood.
	bob, _, err := smallReceiver.DialContext(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	send := func(f protocol.ClientFrame) {
		data, _ := json.Marshal(f)
		if err := bob.WriteMessage(websocket.TextMessage, data); err != nil {
			t.Fatal(err)
		}
	}
	readUntil := func(what string, ok func(protocol.ServerFrame) bool) protocol.ServerFrame {
		for {
			_ = bob.SetReadDeadline(time.Now().Add(kit.WaitFor))
			_, data, err := bob.ReadMessage()
			if err != nil {
				t.Fatalf("Bob waiting for %s: %v", what, err)
			}
			var f protocol.ServerFrame
			if json.Unmarshal(data, &f) == nil && ok(f) {
				return f
			}
		}
	}
	send(protocol.ClientFrame{Type: protocol.TypeJoin, Name: "Bob", Ref: "j"})
	bobID := readUntil("welcome", func(f protocol.ServerFrame) bool { return f.Type == protocol.TypeWelcome }).You.ID
	w.Sees(bobID, protocol.StateAvailable, ann)
	inv, err := ann.Invite(ctx, bobID)
	if err != nil {
		t.Fatal(err)
	}
	readUntil("invitation", func(f protocol.ServerFrame) bool { return f.Type == protocol.TypeInvitation })
	send(protocol.ClientFrame{Type: protocol.TypeAccept, Invitation: inv.ID, Ref: "a"})
	chat := readUntil("chat", func(f protocol.ServerFrame) bool { return f.Type == protocol.TypeOK && f.Ref == "a" }).Chat

	// Ann floods Bob with large WebRTC signals; Bob reads none of them.
	payload, _ := json.Marshal(map[string]string{"sdp": strings.Repeat("x", 40<<10)})
	flood, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for flood.Err() == nil {
			if err := ann.Signal(flood, chat.ID, payload); err != nil {
				return // Bob's chat has ended: he is gone
			}
		}
	}()
	// The edge gives up on Bob: he leaves every list, and Ann, whose own
	// connection was never held up, is available again.
	w.Sees(bobID, "", ann)
	stop()
	w.Sees(kit.ID(ann), protocol.StateAvailable, ann)
	pctx, cancelPing := w.WaitCtx()
	defer cancelPing()
	if _, err := ann.Request(pctx, protocol.ClientFrame{Type: protocol.TypePing}); err != nil {
		t.Fatalf("Ann's connection suffered: %v", err)
	}
}

// smallReceiver dials WebSockets whose kernel receive buffer is 4 KiB
// (client.SmallReceiveBuffer).
var smallReceiver = websocket.Dialer{NetDialContext: (&net.Dialer{Control: client.SmallReceiveBuffer}).DialContext}
