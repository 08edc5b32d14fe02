// Command buddyload plays many BuddyTok users against a running deployment
// over the real WebSocket protocol and measures what they see (package
// load). It prints one summary line and, with -json, writes every figure.
//
//	go run ./cmd/buddyload -url http://127.0.0.1:8080 -users 1000 -pairs 10 -rate 20 -duration 30s
//
// With rooms: 15,000 users in 150 rooms, one pair and one change a second
// in each, the rooms spread over two edges:
//
//	go run ./cmd/buddyload -url http://127.0.0.1:8080,http://127.0.0.1:8081 -users 15000 -rooms 150 -pairs 1 -rate 1
//
// Each user is one WebSocket: against one host, mind the open-files limit of
// both this process and the server.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"time"

	"github.com/buddytok/buddytok/cmd/buddyload/load"
)

func main() {
	var cfg load.Config
	flag.StringVar(&cfg.URL, "url", "http://127.0.0.1:8080", "the edge or load balancer; with -rooms, edges separated by commas, which the rooms take in turn")
	flag.StringVar(&cfg.Metrics, "metrics", "", "the server's operator endpoints (OPS_ADDR, http://host:port), for its memory and CPU; with several edges, one for all or one per -url edge")
	flag.IntVar(&cfg.Users, "users", 1000, "users joined, in the lobby or spread over -rooms")
	flag.IntVar(&cfg.Rooms, "rooms", 0, "spread the users over this many rooms (0: all in the lobby); -pairs and -rate are then each room's")
	flag.Float64Var(&cfg.Skew, "skew", 0, "room sizes: 0 equal; s > 0 in proportion to 1/k^s (most rooms small, a few large)")
	flag.StringVar(&cfg.RoomPrefix, "room-prefix", "", "names this run's rooms load-<prefix>-<k> (default: random)")
	flag.Float64Var(&cfg.JoinRate, "join-rate", 200, "joins a second (0: as fast as they are answered)")
	flag.IntVar(&cfg.Pairs, "pairs", 10, "pairs of users that alternate invite and cancel (with -rooms: in each room)")
	flag.Float64Var(&cfg.Rate, "rate", 20, "list changes a second, over all pairs (with -rooms: in each room)")
	flag.DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long the changes go on")
	flag.IntVar(&cfg.Abusers, "abusers", 0, "sockets that misbehave beside the users while the changes go on: flood, huge frames, garbage, never join, never read")
	flag.IntVar(&cfg.NameLength, "name-length", 0, "pad each user's name to this many characters, for lists that weigh what long names make them")
	flag.StringVar(&cfg.NamePad, "name-pad", "x", "the character -name-length pads with (\"<\" weighs the most in a list: 6 bytes in JSON)")
	flag.IntVar(&cfg.Stallers, "stallers", 0, "sockets that resume a user and never read, each held -staller-hold and reopened, while the changes go on; reports the server's memory growth")
	flag.DurationVar(&cfg.StallHold, "staller-hold", load.DefaultStallHold, "how long a staller holds a socket before it opens another")
	flag.IntVar(&cfg.StallAddrs, "staller-addrs", 5, "loopback client addresses the stallers come from (127.0.1.1, ...), each resuming its own user")
	flag.DurationVar(&cfg.Settle, "settle", time.Minute, "bound on each wait for the lists to complete or catch up")
	jsonPath := flag.String("json", "", "write the full result as JSON to this file")
	cpuProfile := flag.String("cpuprofile", "", "write the load generator's own CPU profile to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "buddyload:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, *jsonPath); err != nil {
		fmt.Fprintln(os.Stderr, "buddyload:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg load.Config, jsonPath string) error {
	res, err := load.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Println(res.Summary())
	if jsonPath == "" {
		return nil
	}
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(jsonPath, append(data, '\n'), 0o644)
}
