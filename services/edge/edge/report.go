package edge

import (
	"context"
	"time"

	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/requestid"
	"github.com/buddytok/buddytok/pkg/retry"
	"github.com/buddytok/buddytok/services/edge/session"
)

// reportDisconnect tells presence a connection ended. A lost report would
// keep the user online, so it is retried for up to reportFor while presence
// is unreachable or failing, and no longer than the edge lives: a shutdown
// cuts the retries short, and the lease the edge then drops tells presence
// about every user still attached to it. secret proves the report comes
// from the connection's edge; the edge keeps it (ended) while the state may
// still show the user attached to the ended connection, so that the
// reconcile loop can report again (exorcise): after a failed report, or
// a join that timed out here and committed after its report.
func (e *Edge) reportDisconnect(u session.User, connID string) {
	e.mu.Lock()
	e.ended[connID] = endedConn{user: u, reporting: true}
	e.mu.Unlock()
	e.reports.Add(1)
	go func() {
		defer e.reports.Done()
		ctx, cancel := context.WithTimeout(requestid.With(e.life, requestid.New()), reportFor)
		defer cancel()
		req := protocol.DisconnectRequest{Room: u.Room, UserID: u.ID, Conn: connID, Secret: u.Secret}
		policy := retry.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second,
			Retryable: func(err error) bool { return protocol.Transient(err) && !e.nc.IsClosed() }}
		err := retry.Do(ctx, policy, func(ctx context.Context) error {
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return natsrpc.Call(callCtx, e.nc, protocol.SubjectPresenceDisconnect, req, nil)
		})
		e.mu.Lock()
		e.ended[connID] = endedConn{user: u, keepUntil: time.Now().Add(reportFor)}
		e.mu.Unlock()
		if err != nil {
			e.log.WarnContext(ctx, "disconnect report failed", "user", u.ID, "conn", connID, "err", err)
		}
	}()
}

// endedConn is a connection that ended: its user, with the proof a
// disconnect report needs.
type endedConn struct {
	user      session.User
	reporting bool      // a report is being made
	keepUntil time.Time // else kept at least until then, and while the state shows the user on it
}

// reportFor bounds the retries of one disconnect report. Every failure but
// a refusal of the request itself is retried, while the edge has NATS.
const reportFor = time.Minute
