package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/client"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// Stall is what the stalled readers of a run cost the server: sockets
// that resume a user and never read what they are sent (the welcome's
// list first), each reopened when it has been held a while, from many
// client addresses at once.
type Stall struct {
	Sockets   int // held at once
	Addresses int // client addresses they came from
	Opened    int // sockets opened over the run
	Refused   int // upgrades the server refused
	// ClosedByServer are the sockets the server had closed when their
	// client let go of them.
	ClosedByServer int
	// RSSBefore is the server's resident memory just before the stallers
	// started; PeakRSSGrowth the most it grew over that while they ran
	// (sampled every 250 ms from the server's /metrics).
	RSSBefore, PeakRSSGrowth float64
}

func (s *Stall) String() string {
	if s == nil {
		return "none"
	}
	return fmt.Sprintf("sockets=%d from %d addresses: opened=%d refused=%d closed-by-server=%d server RSS +%.1f MiB at most (%.1f KiB a socket)",
		s.Sockets, s.Addresses, s.Opened, s.Refused, s.ClosedByServer, s.PeakRSSGrowth/(1<<20), s.PeakRSSGrowth/float64(max(s.Sockets, 1))/1024)
}

// DefaultStallHold is how long a staller holds a socket before it lets go
// and opens another: longer than an edge's write timeout (10 s), so that
// the server, not the staller, decides when a socket that reads nothing
// ends.
const DefaultStallHold = 12 * time.Second

// stallAddr is the i-th client address the stallers dial from: loopback
// addresses other than 127.0.0.1 (where the users are), so that the
// server's per-address limits count each apart.
func stallAddr(i int) net.IP { return net.IPv4(127, 0, byte(1+i/250), byte(1+i%250)) }

// stall runs sockets stallers from addrs addresses against url until ctx
// ends, each holding a socket for hold, sampling the server's memory from
// metricsURL.
func stall(ctx context.Context, url, room, metricsURL string, sockets, addrs int, hold time.Duration) (*Stall, error) {
	s := &Stall{Sockets: sockets, Addresses: addrs}
	before, err := serverFigures(ctx, metricsURL)
	if err != nil {
		return nil, fmt.Errorf("stallers: %w", err)
	}
	s.RSSBefore = before.rss
	// Each address's stallers resume one user it joined first.
	ids, secrets := make([]string, addrs), make([]string, addrs)
	for a := range addrs {
		if ids[a], secrets[a], err = stallUser(ctx, url, room, a); err != nil {
			return nil, err
		}
	}
	var opened, refused, closed atomic.Int64
	var wg sync.WaitGroup
	for i := range sockets {
		a := i % addrs
		resume, _ := json.Marshal(protocol.ClientFrame{Type: protocol.TypeResume, Ref: "r", UserID: ids[a], Secret: secrets[a], Room: room})
		wg.Go(func() {
			// Spread the first opens over the first hold.
			if !sleepCtx(ctx, hold*time.Duration(i)/time.Duration(sockets)) {
				return
			}
			for ctx.Err() == nil {
				ws, _, err := stallDialer(stallAddr(a)).DialContext(ctx, url, nil)
				if err != nil {
					if ctx.Err() != nil {
						return // the run ended during the dial: nothing refused it
					}
					refused.Add(1)
					sleepCtx(ctx, 100*time.Millisecond)
					continue
				}
				opened.Add(1)
				if ws.WriteMessage(websocket.TextMessage, resume) == nil {
					sleepCtx(ctx, hold)
				}
				if serverClosed(ws) {
					closed.Add(1)
				}
				_ = ws.Close()
			}
		})
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			if f, err := serverFigures(context.WithoutCancel(ctx), metricsURL); err == nil {
				s.PeakRSSGrowth = max(s.PeakRSSGrowth, f.rss-s.RSSBefore)
			}
		}
	}
	wg.Wait()
	s.Opened, s.Refused, s.ClosedByServer = int(opened.Load()), int(refused.Load()), int(closed.Load())
	return s, nil
}

// stallUser joins a user from client address a, as the stallers there
// will resume it, and returns its ID and secret.
func stallUser(ctx context.Context, url, room string, a int) (id, secret string, err error) {
	ws, _, err := stallDialer(stallAddr(a)).DialContext(ctx, url, nil)
	if err != nil {
		return "", "", fmt.Errorf("stallers: dial from %s: %w", stallAddr(a), err)
	}
	defer ws.Close()
	join, _ := json.Marshal(protocol.ClientFrame{Type: protocol.TypeJoin, Ref: "j", Name: fmt.Sprintf("staller %d", a), Room: room})
	if err := ws.WriteMessage(websocket.TextMessage, join); err != nil {
		return "", "", fmt.Errorf("stallers: join: %w", err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return "", "", fmt.Errorf("stallers: join: %w", err)
		}
		var f protocol.ServerFrame
		if json.Unmarshal(data, &f) != nil || f.Ref != "j" {
			continue
		}
		if f.Type != protocol.TypeWelcome || f.You == nil {
			return "", "", fmt.Errorf("stallers: join from %s answered %s %s %s", stallAddr(a), f.Type, f.Code, f.Message)
		}
		return f.You.ID, f.Secret, nil
	}
}

// serverClosed reports whether the server has closed ws: its read side
// ends (after whatever it had sent) within a second.
func serverClosed(ws *websocket.Conn) bool {
	_ = ws.SetReadDeadline(time.Now().Add(time.Second))
	for {
		if _, _, err := ws.NextReader(); err != nil {
			ne, ok := errors.AsType[net.Error](err)
			return !ok || !ne.Timeout()
		}
	}
}

// sleepCtx sleeps for d unless ctx ends first, and reports whether it
// slept all of it.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// stallDialer dials from local address from, with a small kernel receive
// buffer (where the system lets it be set): a client that never reads
// then holds up the server's writes at once, not after megabytes of
// kernel buffers.
func stallDialer(from net.IP) *websocket.Dialer {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: from}, Control: client.SmallReceiveBuffer}
	return &websocket.Dialer{NetDialContext: d.DialContext, HandshakeTimeout: 10 * time.Second}
}
