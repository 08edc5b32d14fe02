// Package natsrpc is the one way BuddyTok services call each other: JSON
// requests over NATS whose failures come back as micro service errors and are
// mapped to *protocol.Error on the caller's side.
package natsrpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/buddytok/buddytok/pkg/config"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/requestid"
	"github.com/buddytok/buddytok/pkg/retry"
)

// DefaultTimeout bounds a call whose context has no deadline.
const DefaultTimeout = 10 * time.Second

// Call sends req as JSON on subject and decodes the reply into resp (which
// may be nil). A service error comes back as *protocol.Error; no responders
// or a timeout as CodeUnavailable. The time left until ctx's deadline
// travels with the request (protocol.HeaderBudget), so the service gives up
// when the caller does.
func Call(ctx context.Context, nc *nats.Conn, subject string, req, resp any) error {
	data, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("natsrpc: encode %s request: %w", subject, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
		deadline, _ = ctx.Deadline()
	}
	out := nats.NewMsg(subject)
	out.Data = data
	out.Header.Set(protocol.HeaderBudget, strconv.FormatInt(time.Until(deadline).Milliseconds(), 10))
	if id := requestid.From(ctx); id != "" {
		out.Header.Set(protocol.HeaderRequestID, id)
	}
	msg, err := nc.RequestMsgWithContext(ctx, out)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return &protocol.Error{Code: protocol.CodeUnavailable, Message: "a service is not reachable right now; try again"}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return &protocol.Error{Code: protocol.CodeUnavailable, Message: "a service did not answer in time; try again"}
	case err != nil:
		return fmt.Errorf("natsrpc: request %s: %w", subject, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		return &protocol.Error{Code: protocol.Code(code), Message: msg.Header.Get(micro.ErrorHeader)}
	}
	if resp == nil {
		return nil
	}
	if err := json.Unmarshal(msg.Data, resp); err != nil {
		return fmt.Errorf("natsrpc: decode %s reply: %w", subject, err)
	}
	return nil
}

// slowRequest is how long a handler may take before it is logged as slow.
const slowRequest = time.Second

// Validator is implemented by request types that can check themselves.
type Validator interface {
	Validate() error
}

// Auth is how a process proves itself to NATS and checks the server's
// certificate: at most one of a credentials file (a user JWT and its nkey
// seed, NATS_CREDS), an nkey seed file (NATS_NKEY), a user and password
// (NATS_USER, NATS_PASSWORD) or a token (NATS_TOKEN); and, for TLS, the
// CA that signed the server's certificate (NATS_TLS_CA) and a client
// certificate and key (NATS_TLS_CERT, NATS_TLS_KEY). A tls:// URL, or a
// server that requires TLS, uses TLS with the system's CAs if no CA is
// given.
type Auth struct {
	// InboxPrefix replaces "_INBOX" in the connection's reply subjects
	// (permissions.InboxPrefix of its role), so that a server giving each
	// role its own inboxes lets no other role read its replies.
	InboxPrefix  string
	CredsFile    string
	NKeySeedFile string
	User         string
	Password     string
	Token        string
	TLSCA        string
	TLSCert      string
	TLSKey       string
}

// The NATS settings every process reads. Exactly one way to authenticate
// may be set (Auth.options says which combinations are refused).
var (
	// URLSetting is NATS_URL; the all-in-one reads it with its own default
	// (none: its embedded server).
	URLSetting = config.String("NATS_URL", "nats://127.0.0.1:4222", "all",
		"the NATS server (JetStream on); several comma-separated URLs for a cluster. A password in it is never logged",
		config.DefaultShown("all-in-one: its embedded server; services: `nats://127.0.0.1:4222`"), config.Deployed())
	credsSetting = config.String("NATS_CREDS", "", "all", "authenticate to NATS with this credentials file (a user JWT and its seed)")
	nkeySetting  = config.String("NATS_NKEY", "", "all", "authenticate to NATS with this nkey seed file")
	userSetting  = config.String("NATS_USER", "", "all",
		"authenticate to NATS as this user, with `NATS_PASSWORD`; compose and Kubernetes give each role its own", config.Deployed())
	passwordSetting = config.Secret("NATS_PASSWORD", "all", "the password of `NATS_USER`", config.Deployed())
	tokenSetting    = config.Secret("NATS_TOKEN", "all", "authenticate to NATS with this token")
	tlsCASetting    = config.String("NATS_TLS_CA", "", "all",
		"TLS to NATS: the CA of the server's certificate (else the system's, for a `tls://` URL or a server that requires TLS)")
	tlsCertSetting = config.String("NATS_TLS_CERT", "", "all", "TLS to NATS: a client certificate, with `NATS_TLS_KEY`")
	tlsKeySetting  = config.String("NATS_TLS_KEY", "", "all", "TLS to NATS: the client certificate's key")
)

// AuthFromEnv reads the NATS_* settings of Auth; the password and the
// token are secrets, never logged.
func AuthFromEnv(env *config.Env) Auth {
	a := Auth{
		CredsFile:    credsSetting.Read(env),
		NKeySeedFile: nkeySetting.Read(env),
		User:         userSetting.Read(env),
		Password:     passwordSetting.Read(env),
		Token:        tokenSetting.Read(env),
		TLSCA:        tlsCASetting.Read(env),
		TLSCert:      tlsCertSetting.Read(env),
		TLSKey:       tlsKeySetting.Read(env),
	}
	if _, err := a.options(); err != nil {
		env.Fail("%v", err)
	}
	return a
}

// options are a's nats.Options, or why a is not a valid combination.
func (a Auth) options() ([]nats.Option, error) {
	var opts []nats.Option
	if a.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(a.InboxPrefix))
	}
	ways := 0
	if a.CredsFile != "" {
		ways++
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	}
	if a.NKeySeedFile != "" {
		ways++
		opt, err := nats.NkeyOptionFromSeed(a.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY: %w", err)
		}
		opts = append(opts, opt)
	}
	if a.User != "" || a.Password != "" {
		ways++
		if a.User == "" || a.Password == "" {
			return nil, errors.New("NATS_USER and NATS_PASSWORD go together")
		}
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	if a.Token != "" {
		ways++
		opts = append(opts, nats.Token(a.Token))
	}
	if ways > 1 {
		return nil, errors.New("give NATS one way to authenticate: NATS_CREDS, NATS_NKEY, NATS_USER and NATS_PASSWORD, or NATS_TOKEN")
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		return nil, errors.New("NATS_TLS_CERT and NATS_TLS_KEY go together")
	}
	if a.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if a.TLSCert != "" {
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	}
	return opts, nil
}

// Decode decodes a request and validates it, if it can validate itself: the
// one way a service reads what arrives over NATS. Its errors are protocol
// errors to answer with.
func Decode[Req any](data []byte) (Req, error) {
	var req Req
	if err := json.Unmarshal(data, &req); err != nil {
		return req, protocol.Errorf(protocol.CodeBadRequest, "request is not valid JSON")
	}
	if v, ok := any(&req).(Validator); ok {
		if err := v.Validate(); err != nil {
			return req, err
		}
	}
	return req, nil
}

// Server runs endpoint handlers on a bounded pool of goroutines, because a
// micro endpoint otherwise handles one request at a time.
type Server struct {
	log     *slog.Logger
	metrics *metrics.Metrics
	slots   chan struct{}
	wg      *sync.WaitGroup // the handlers running, its lanes' included
	timeout time.Duration
	ready   chan struct{}
}

// NewServer returns a Server that runs at most workers handlers at once,
// each bounded by timeout, and counts them in m.
func NewServer(log *slog.Logger, m *metrics.Metrics, workers int, timeout time.Duration) *Server {
	return &Server{log: log, metrics: m, slots: make(chan struct{}, workers), wg: &sync.WaitGroup{}, timeout: timeout, ready: make(chan struct{})}
}

// Lane returns a Server whose handlers run on a pool of workers of their
// own, apart from s's, for requests that must not wait behind s's (an
// edge's lease renewal behind a storm of joins). Its endpoints are served
// by s.Serve, which waits for their handlers too.
func (s *Server) Lane(workers int) *Server {
	return &Server{log: s.log, metrics: s.metrics, slots: make(chan struct{}, workers), wg: s.wg, timeout: s.timeout, ready: s.ready}
}

// Ready is closed once Serve has every endpoint subscribed on the NATS
// server, so that a request sent after it finds a responder.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Handle adapts fn to a micro.Handler: it decodes the JSON request,
// validates it when it can, runs fn on the pool and replies with fn's result
// or a micro error carrying the protocol error code.
//
// fn's context ends when the caller stops waiting (its budget, less a
// margin for the reply's way back) or after the Server's timeout, whichever
// comes first. A request still waiting for a free worker when that happens
// is not run at all: work the caller gave up on must not change the state.
func Handle[Req, Resp any](s *Server, fn func(context.Context, Req) (Resp, error)) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		received := time.Now()
		req, err := Decode[Req](r.Data())
		if err != nil {
			s.respondErr(r, received, err)
			return
		}
		ctx, cancel := context.WithDeadline(requestContext(r), s.deadline(r, received))
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			cancel()
			s.log.WarnContext(ctx, "request expired while waiting for a worker; dropped", "subject", r.Subject(), "queued", time.Since(received))
			s.respondErr(r, received, errExpired)
			return
		}
		s.wg.Add(1)
		go func() {
			defer func() { cancel(); <-s.slots; s.wg.Done() }()
			started := time.Now()
			resp, err := fn(ctx, req)
			if d := time.Since(received); d > slowRequest {
				s.log.WarnContext(ctx, "slow request", "subject", r.Subject(), "queued", started.Sub(received), "ran", time.Since(started), "err", err)
			}
			if err != nil {
				s.respondErrAsync(ctx, r, received, err)
				return
			}
			s.observe(r, received, "ok")
			if err := r.RespondJSON(resp); err != nil {
				s.log.WarnContext(ctx, "reply failed", "subject", r.Subject(), "err", err)
			}
		}()
	})
}

// requestContext carries the request ID r came with, or a new one: a
// request from the nats CLI gets one too.
func requestContext(r micro.Request) context.Context {
	id := r.Headers().Get(protocol.HeaderRequestID)
	if id == "" || !protocol.ValidID(id) {
		id = requestid.New()
	}
	return requestid.With(context.Background(), id)
}

// errExpired answers a request whose time ran out before it could finish.
var errExpired = &protocol.Error{Code: protocol.CodeUnavailable, Message: "the service could not finish in time; try again"}

var errNATSTrouble = &protocol.Error{Code: protocol.CodeUnavailable, Message: "the service's storage is recovering; try again"}

// natsTrouble reports whether err is NATS or JetStream being briefly
// unable to serve (a node restarting, a stream electing a leader, the
// connection reconnecting): nothing is wrong with the request, and the
// same request may succeed in a moment.
func natsTrouble(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return true
	case errors.As(err, &apiErr):
		return apiErr.Code == 503
	}
	return false
}

// deadline is when a request received at received must be finished: the
// caller's budget less a twentieth for the way back, and never later than
// the Server's own timeout. A request without a budget (a person using the
// nats CLI) gets the Server's timeout.
func (s *Server) deadline(r micro.Request, received time.Time) time.Time {
	limit := received.Add(s.timeout)
	h := r.Headers().Get(protocol.HeaderBudget)
	if h == "" {
		return limit
	}
	ms, err := strconv.ParseInt(h, 10, 64)
	if err != nil {
		return limit
	}
	budget := time.Duration(ms) * time.Millisecond
	if d := received.Add(budget - budget/20); d.Before(limit) {
		return d
	}
	return limit
}

// respondErr answers with a micro service error from the handler's own
// goroutine, so micro counts it in the endpoint's stats.
func (s *Server) respondErr(r micro.Request, received time.Time, err error) {
	pe := s.logged(requestContext(r), r, err)
	s.observe(r, received, string(pe.Code))
	if rerr := r.Error(string(pe.Code), pe.Message, nil); rerr != nil {
		s.log.Warn("error reply failed", "subject", r.Subject(), "err", rerr)
	}
}

// respondErrAsync answers with the same headers from a pool goroutine.
// micro's Request.Error records the error for the stats without a lock,
// which races with the handler that already returned; Respond with the
// error headers sends the identical reply without that write.
func (s *Server) respondErrAsync(ctx context.Context, r micro.Request, received time.Time, err error) {
	pe := s.logged(ctx, r, err)
	s.observe(r, received, string(pe.Code))
	hdr := micro.WithHeaders(micro.Headers{
		micro.ErrorHeader:     []string{pe.Message},
		micro.ErrorCodeHeader: []string{string(pe.Code)},
	})
	if rerr := r.Respond(nil, hdr); rerr != nil {
		s.log.Warn("error reply failed", "subject", r.Subject(), "err", rerr)
	}
}

// observe counts a request received at received and answered with code.
func (s *Server) observe(r micro.Request, received time.Time, code string) {
	metrics.Since(s.metrics.Requests.WithLabelValues(r.Subject(), code), received)
}

func (s *Server) logged(ctx context.Context, r micro.Request, err error) *protocol.Error {
	var pe *protocol.Error
	if !errors.As(err, &pe) && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
		// Out of time (a busy state store, a slow peer): the caller may
		// retry, and nothing is wrong with the request itself.
		s.log.WarnContext(ctx, "request ran out of time", "subject", r.Subject(), "err", err)
		return errExpired
	}
	if !errors.As(err, &pe) && natsTrouble(err) {
		s.log.WarnContext(ctx, "request failed while NATS recovers", "subject", r.Subject(), "err", err)
		return errNATSTrouble
	}
	pe = protocol.AsError(err)
	if pe.Code == protocol.CodeInternal {
		s.log.ErrorContext(ctx, "request failed", "subject", r.Subject(), "err", err)
	}
	return pe
}

// Connect opens a NATS connection for a BuddyTok process named name. It
// keeps reconnecting for as long as the process lives.
func Connect(url, name string, log *slog.Logger, auth Auth) (*nats.Conn, error) {
	authOpts, err := auth.options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, append(authOpts,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		// A connection that went silent (a network partition, a NAT that
		// forgot it) is found within about 15 s, not the default 4 min:
		// until then the process can neither serve nor renew anything.
		nats.PingInterval(5*time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("NATS reconnected", "url", c.ConnectedUrlRedacted()) }),
	)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", config.RedactURLs(url), err)
	}
	return nc, nil
}

// awaitSubscribed waits until the NATS server has confirmed every
// subscription made so far on nc (a flush round trip). While NATS is
// unreachable it keeps trying: the subscriptions are sent again on
// reconnect. It reports false if ctx ended first.
func (s *Server) awaitSubscribed(ctx context.Context, nc *nats.Conn) bool {
	err := retry.Do(ctx, retry.Policy{Initial: 100 * time.Millisecond, Max: time.Second}, func(context.Context) error {
		err := nc.FlushTimeout(5 * time.Second)
		if err != nil {
			s.log.Warn("waiting for NATS to confirm the endpoints", "err", err)
		}
		return err
	})
	return err == nil
}

// Endpoint is one micro endpoint of a service.
type Endpoint struct {
	Name    string
	Subject string
	Handler micro.Handler
}

// Serve registers a micro service (default queue group, so replicas share
// the load) with its endpoints on nc and serves until ctx ends; then it
// stops taking requests and waits for the handlers in flight, whose own
// contexts are not cut short.
func (s *Server) Serve(ctx context.Context, nc *nats.Conn, cfg micro.Config, endpoints ...Endpoint) error {
	svc, err := micro.AddService(nc, cfg)
	if err != nil {
		return fmt.Errorf("%s: add service: %w", cfg.Name, err)
	}
	for _, e := range endpoints {
		if err := svc.AddEndpoint(e.Name, e.Handler, micro.WithEndpointSubject(e.Subject)); err != nil {
			_ = svc.Stop()
			return fmt.Errorf("%s: add endpoint %s: %w", cfg.Name, e.Name, err)
		}
	}
	if s.awaitSubscribed(ctx, nc) {
		close(s.ready)
		<-ctx.Done()
	}
	err = svc.Stop()
	s.awaitDrained(nc)
	s.wg.Wait() // every handler that started has replied
	return err
}

// drainTimeout bounds how long a stopping Server waits for the requests it
// had already received to be handed to their handlers.
const drainTimeout = 5 * time.Second

// awaitDrained waits until every request the NATS server routed to the
// stopped endpoints has reached Handle (and so is counted in s.wg): Stop
// unsubscribes and drains, but does not wait for the requests still queued
// in the client, which would be lost with the connection. A flush makes
// sure nothing more is on its way; a barrier runs once every subscription
// of nc has handled what it held at that moment.
func (s *Server) awaitDrained(nc *nats.Conn) {
	if err := nc.FlushTimeout(drainTimeout); err != nil {
		return // disconnected: nothing more arrives, and replies could not go
	}
	done := make(chan struct{})
	if err := nc.Barrier(func() { close(done) }); err != nil {
		return
	}
	select {
	case <-done:
	case <-time.After(drainTimeout):
		s.log.Warn("requests still queued after stopping; some may go unanswered", "waited", drainTimeout)
	}
}
