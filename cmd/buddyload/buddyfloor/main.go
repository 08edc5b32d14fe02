// Command buddyfloor serves the floor of BuddyTok's load runs (package
// floor): the part of the protocol cmd/buddyload uses, on the edge's
// HTTP and WebSocket stack, and nothing else. Load it as a BuddyTok to
// measure what the sockets, the fan-out and the generator cost on a
// machine by themselves. It is not a BuddyTok; see docs/benchmarks.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/buddytok/buddytok/cmd/buddyload/floor"
	"github.com/buddytok/buddytok/pkg/metrics"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18090", "where the WebSocket endpoint /ws is served")
	ops := flag.String("metrics", "127.0.0.1:18099", "where /metrics is served (the process's memory and CPU, for buddyload -metrics)")
	flag.Parse()
	if err := run(*listen, *ops); err != nil {
		fmt.Fprintln(os.Stderr, "buddyfloor:", err)
		os.Exit(1)
	}
}

func run(listen, ops string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	opsLn, err := net.Listen("tcp", ops)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.New().Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(opsLn) }()
	defer srv.Close()
	fmt.Printf("buddyfloor: ws://%s/ws, metrics http://%s/metrics\n", ln.Addr(), opsLn.Addr())
	return floor.New().Serve(ctx, ln)
}
