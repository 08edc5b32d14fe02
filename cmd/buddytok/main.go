// Command buddytok runs the whole of BuddyTok in one process: an embedded
// NATS server (or NATS_URL), one replica of every service and the edge.
// It prints the URL to open. Settings come from the environment; see README.md.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/buddytok/buddytok/cmd/buddytok/allinone"
	"github.com/buddytok/buddytok/pkg/config"
	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/profiling"
	"github.com/buddytok/buddytok/services/edge/edge"
	"github.com/buddytok/buddytok/services/invites/invites"
	"github.com/buddytok/buddytok/services/presence/presence"
	"github.com/buddytok/buddytok/services/tokens/tokens"
)

func main() {
	if err := run(); err != nil {
		slog.Error("buddytok stopped", "err", err)
		os.Exit(1)
	}
}

func run() error {
	env := config.FromOS()
	log := env.Logger()
	storeDir := env.String("NATS_STORE_DIR", "")
	if storeDir == "" && env.String("NATS_URL", "") == "" {
		dir, err := allinone.DefaultStoreDir(os.Getenv)
		if err != nil {
			env.Fail("%v", err)
		}
		storeDir = dir
	}
	opts := allinone.Options{
		NATSURL:  env.String("NATS_URL", ""),
		NATSAuth: natsrpc.AuthFromEnv(env),
		NATSPort: env.Int("NATS_PORT", 0, 0, 65535),
		StoreDir: storeDir,
		Listen:   net.JoinHostPort(env.String("HOST", "127.0.0.1"), strconv.Itoa(env.Int("PORT", 8080, 0, 65535))),
		Presence: presence.ConfigFromEnv(env),
		Invites:  invites.ConfigFromEnv(env),
		Tokens:   tokens.ConfigFromEnv(env),
		Edge:     edge.ConfigFromEnv(env),
		Log:      log,
	}
	if err := env.Err(); err != nil {
		return err
	}
	log.Info("effective configuration", env.Effective())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if addr := env.String("PPROF_ADDR", ""); addr != "" {
		if _, err := profiling.Start(ctx, addr, log); err != nil {
			return err
		}
	}
	sys, err := allinone.Start(ctx, opts)
	if err != nil {
		return err
	}
	nats := config.RedactURLs(sys.URL)
	if opts.NATSURL == "" {
		nats += " (embedded, data in " + opts.StoreDir + "; one NATS user per role, passwords in " + allinone.UsersDir(opts.StoreDir) + ")"
	}
	fmt.Printf("BuddyTok is running: open %s in two browser tabs\nNATS: %s\nPress Ctrl-C to stop.\n", sys.EdgeURLs[0], nats)
	<-ctx.Done()
	log.Info("shutting down")
	return sys.Close()
}
