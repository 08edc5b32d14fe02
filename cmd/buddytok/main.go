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
	"github.com/buddytok/buddytok/pkg/servicemain"
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

// The all-in-one's own settings; it reads every service's too.
var (
	storeDirSetting = config.String("NATS_STORE_DIR", "", "all-in-one",
		"JetStream storage of the embedded server. It outlives the process: after a restart (an upgrade) pages resume within "+
			"`GRACE_PERIOD` and keep their chats. Delete the directory to start from nothing",
		config.DefaultShown("`$XDG_STATE_HOME/buddytok/nats`, else `~/.local/state/buddytok/nats`"))
	natsPortSetting = config.Int("NATS_PORT", 0, 0, 65535, "all-in-one", "port of the embedded NATS server",
		config.DefaultShown("a free one"))
	pprofSetting = config.String("PPROF_ADDR", "", "all-in-one",
		"serve Go's runtime profiles (`/debug/pprof/`) here; keep it on loopback", config.DefaultShown("— (off)"))
)

func run() error {
	env := config.FromOS()
	log := env.Logger()
	natsURL := natsrpc.URLSetting.ReadOr(env, "") // none: the embedded server
	storeDir := storeDirSetting.Read(env)
	if storeDir == "" && natsURL == "" {
		dir, err := allinone.DefaultStoreDir(os.Getenv)
		if err != nil {
			env.Fail("%v", err)
		}
		storeDir = dir
	}
	opts := allinone.Options{
		NATSURL:   natsURL,
		NATSAuth:  natsrpc.AuthFromEnv(env),
		NATSPort:  natsPortSetting.Read(env),
		StoreDir:  storeDir,
		Listen:    net.JoinHostPort(edge.HostSetting.ReadOr(env, "127.0.0.1"), strconv.Itoa(edge.PortSetting.Read(env))),
		OpsListen: servicemain.OpsAddrSetting.ReadOr(env, "127.0.0.1:0"),
		Presence:  presence.ConfigFromEnv(env),
		Invites:   invites.ConfigFromEnv(env),
		Tokens:    tokens.ConfigFromEnv(env),
		Edge:      edge.ConfigFromEnv(env),
		Log:       log,
	}
	if err := env.Err(); err != nil {
		return err
	}
	log.Info("effective configuration", env.Effective())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if addr := pprofSetting.Read(env); addr != "" {
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
	fmt.Printf("BuddyTok is running: open %s in two browser tabs\nNATS: %s\nOperator endpoints (/healthz, /readyz, /metrics): %s\nPress Ctrl-C to stop.\n",
		sys.EdgeURLs[0], nats, sys.OpsURL)
	<-ctx.Done()
	log.Info("shutting down")
	return sys.Close()
}
