package natsrpc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/buddytok/buddytok/pkg/embeddednats"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/protocol"
)

type request struct {
	Name string `json:"name"`
}

type reply struct {
	Deadline time.Time `json:"deadline"`
}

// startNATS starts an embedded NATS server for the test and returns a
// function that opens connections to it (closed when the test ends).
func startNATS(t *testing.T) func() *nats.Conn {
	t.Helper()
	srv := natstest.Start(t, embeddednats.Options{})
	return func() *nats.Conn { return natstest.Connect(t, srv) }
}

// serve starts a micro service with one endpoint, "test.<name>", whose
// handler is fn, on a pool of workers; it returns a client connection.
func serve(t *testing.T, workers int, timeout time.Duration, fn func(context.Context, request) (reply, error)) *nats.Conn {
	t.Helper()
	return serveCounted(t, metrics.New(), workers, timeout, fn)
}

// serveCounted is serve with the server's metrics m.
func serveCounted(t *testing.T, m *metrics.Metrics, workers int, timeout time.Duration, fn func(context.Context, request) (reply, error)) *nats.Conn {
	t.Helper()
	connect := startNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	s := natsrpc.NewServer(slog.New(slog.DiscardHandler), m, workers, timeout)
	done := make(chan error, 1)
	served := connect()
	go func() {
		done <- s.Serve(ctx, served, micro.Config{Name: "test", Version: "0.0.1"},
			natsrpc.Endpoint{Name: "do", Subject: "test.do", Handler: natsrpc.Handle(s, fn)})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case <-s.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("the server never became ready")
	}
	// Ready means subscribed: the very first request finds a responder.
	nc := connect()
	if err := natsrpc.Call(context.Background(), nc, "test.do", request{Name: "ping"}, nil); err != nil {
		t.Fatalf("first request after Ready: %v", err)
	}
	return nc
}

// A request that waited for a worker longer than its caller would wait is
// dropped, not run: its caller has been told "unavailable" and may retry,
// so running it later would make the change twice or behind their back.
func TestExpiredRequestIsNotRun(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var ran atomic.Int64
	ranNames := make(chan string, 10)
	m := metrics.New()
	nc := serveCounted(t, m, 1, 10*time.Second, func(ctx context.Context, r request) (reply, error) {
		if r.Name == "ping" {
			return reply{}, nil
		}
		ran.Add(1)
		ranNames <- r.Name
		if r.Name == "blocker" {
			<-release
		}
		return reply{}, nil
	})

	blocked := make(chan error, 1)
	go func() { blocked <- natsrpc.Call(context.Background(), nc, "test.do", request{Name: "blocker"}, nil) }()
	if got := <-ranNames; got != "blocker" {
		t.Fatalf("first to run: %s", got)
	}
	// The only worker is busy: this one waits, and its caller gives up.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err := natsrpc.Call(ctx, nc, "test.do", request{Name: "late"}, nil)
	cancel()
	if protocol.CodeOf(err) != protocol.CodeUnavailable {
		t.Fatalf("late request: got %v, want unavailable", err)
	}
	// The server's deadline counts from when it received the request, so
	// it may end a little after the caller's: wait until the server has
	// dropped it (answered unavailable) before a worker is free.
	ms := httptest.NewServer(m.Handler())
	defer ms.Close()
	for deadline := time.Now().Add(30 * time.Second); ; {
		samples, err := metrics.Scrape(context.Background(), ms.URL)
		if err != nil {
			t.Fatal(err)
		}
		if samples[`buddytok_requests_seconds_count{code="unavailable",subject="test.do"}`] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never dropped the late request")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	// Requests of one endpoint are taken in order: once this one has run,
	// the late one has been dropped or run.
	if err := natsrpc.Call(context.Background(), nc, "test.do", request{Name: "after"}, nil); err != nil {
		t.Fatal(err)
	}
	close(ranNames)
	var names []string
	for n := range ranNames {
		names = append(names, n)
	}
	if fmt.Sprint(names) != "[after]" {
		t.Fatalf("ran after the blocker: %v; the late request must not run", names)
	}
}

// The handler's context ends when the caller stops waiting, not later.
func TestHandlerDeadlineFollowsTheCaller(t *testing.T) {
	t.Parallel()
	nc := serve(t, 4, time.Minute, func(ctx context.Context, r request) (reply, error) {
		d, ok := ctx.Deadline()
		if !ok {
			return reply{}, errors.New("no deadline")
		}
		return reply{Deadline: d}, nil
	})
	tests := []struct {
		name   string
		budget time.Duration
	}{
		{"short budget", 300 * time.Millisecond},
		{"long budget", 5 * time.Second},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), tt.budget)
		callerDeadline, _ := ctx.Deadline()
		var r reply
		err := natsrpc.Call(ctx, nc, "test.do", request{Name: tt.name}, &r)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if r.Deadline.After(callerDeadline) {
			t.Errorf("%s: handler deadline %s is after the caller's %s", tt.name, r.Deadline, callerDeadline)
		}
	}
}

// Errors reach the caller with the code a client can act on: running out
// of time is "unavailable" (try again), never "internal".
func TestErrorCodes(t *testing.T) {
	t.Parallel()
	errs := map[string]error{
		"deadline":     fmt.Errorf("state: commit: %w", context.DeadlineExceeded),
		"nats timeout": fmt.Errorf("state: get: %w", nats.ErrTimeout),
		"protocol":     protocol.Errorf(protocol.CodeNotFound, "gone"),
		"wrapped":      fmt.Errorf("invites: %w", protocol.Errorf(protocol.CodeBusy, "busy")),
		"unexpected":   errors.New("disk on fire"),
		"said why":     fmt.Errorf("%w: %w", protocol.Errorf(protocol.CodeVideoFailed, "OpenTok could not be reached"), context.DeadlineExceeded),
	}
	nc := serve(t, 4, time.Minute, func(ctx context.Context, r request) (reply, error) {
		return reply{}, errs[r.Name]
	})
	tests := []struct {
		name string
		want protocol.Code
	}{
		{"deadline", protocol.CodeUnavailable},
		{"nats timeout", protocol.CodeUnavailable},
		{"protocol", protocol.CodeNotFound},
		{"wrapped", protocol.CodeBusy},
		{"unexpected", protocol.CodeInternal},
		{"said why", protocol.CodeVideoFailed},
	}
	for _, tt := range tests {
		err := natsrpc.Call(context.Background(), nc, "test.do", request{Name: tt.name}, nil)
		if got := protocol.CodeOf(err); got != tt.want {
			t.Errorf("%s: got %v (%s), want %s", tt.name, err, got, tt.want)
		}
		if tt.want == protocol.CodeInternal && err != nil && protocol.AsError(err).Message != "internal server error" {
			t.Errorf("%s: internals reached the caller: %v", tt.name, err)
		}
	}
}

// Requests already queued at a replica when it stops are answered before
// its Serve returns (after which the process closes its connection or
// exits): stopping a replica loses no request.
func TestStopAnswersEveryQueuedRequest(t *testing.T) {
	t.Parallel()
	connect := startNATS(t)
	served, caller := connect(), connect()

	release, started := make(chan struct{}), make(chan struct{}, 1)
	s := natsrpc.NewServer(slog.New(slog.DiscardHandler), metrics.New(), 1, 10*time.Second)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Serve(ctx, served, micro.Config{Name: "test", Version: "0.0.1"},
			natsrpc.Endpoint{Name: "do", Subject: "test.do", Handler: natsrpc.Handle(s, func(_ context.Context, r request) (reply, error) {
				if r.Name == "blocker" {
					started <- struct{}{}
					<-release
				}
				return reply{}, nil
			})})
	}()
	<-s.Ready()
	go func() { _ = natsrpc.Call(context.Background(), caller, "test.do", request{Name: "blocker"}, nil) }()
	<-started

	// Queue requests behind the busy worker; the flush makes sure the
	// server has routed them to the replica.
	const queued = 5
	replies, err := caller.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	for i := range queued {
		msg := nats.NewMsg("test.do")
		msg.Reply = replies.Subject
		msg.Data = []byte(fmt.Sprintf(`{"name":"queued %d"}`, i))
		msg.Header.Set(protocol.HeaderBudget, "10000")
		if err := caller.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := caller.Flush(); err != nil {
		t.Fatal(err)
	}

	// Stop the replica, and wait until NATS no longer routes to it.
	stop()
	for {
		probe, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := natsrpc.Call(probe, caller, "test.do", request{Name: "probe"}, nil)
		cancel()
		if pe := protocol.AsError(err); pe.Code == protocol.CodeUnavailable && strings.Contains(pe.Message, "not reachable") {
			break
		}
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	served.Close() // as a process does once its service has stopped
	for i := range queued {
		if _, err := replies.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("%d of %d queued requests answered; then: %v", i, queued, err)
		}
	}
}

// A lane's endpoint is served while every worker of its Server is busy,
// and stopping the Server waits for the lane's handlers too.
func TestLaneDoesNotWaitBehindTheServersPool(t *testing.T) {
	t.Parallel()
	connect := startNATS(t)
	s := natsrpc.NewServer(slog.New(slog.DiscardHandler), metrics.New(), 1, 10*time.Second)
	lane := s.Lane(1)
	release := make(chan struct{})
	busy := make(chan struct{}, 1)
	block := func(ctx context.Context, r request) (reply, error) {
		busy <- struct{}{}
		<-release
		return reply{}, nil
	}
	laneDone, laneBusy := make(chan struct{}), make(chan struct{})
	inLane := func(ctx context.Context, r request) (reply, error) {
		if r.Name == "slow" {
			defer close(laneDone)
			close(laneBusy)
			<-release
		}
		return reply{}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- s.Serve(ctx, connect(), micro.Config{Name: "test", Version: "0.0.1"},
			natsrpc.Endpoint{Name: "do", Subject: "test.do", Handler: natsrpc.Handle(s, block)},
			natsrpc.Endpoint{Name: "lane", Subject: "test.lane", Handler: natsrpc.Handle(lane, inLane)})
	}()
	<-s.Ready()
	nc := connect()
	blocked := make(chan error, 1)
	go func() { blocked <- natsrpc.Call(context.Background(), nc, "test.do", request{Name: "blocker"}, nil) }()
	<-busy // the Server's only worker is taken until release
	callCtx, callCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer callCancel()
	if err := natsrpc.Call(callCtx, nc, "test.lane", request{Name: "quick"}, nil); err != nil {
		t.Fatalf("the lane's request waited behind the busy pool: %v", err)
	}

	slow := make(chan error, 1)
	go func() { slow <- natsrpc.Call(context.Background(), nc, "test.lane", request{Name: "slow"}, nil) }()
	<-laneBusy
	cancel()
	select {
	case err := <-served:
		t.Fatalf("Serve returned (%v) with handlers running", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-laneDone
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
}
