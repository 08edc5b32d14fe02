// Package freeport picks loopback ports for the processes a test starts
// and restarts on fixed ports (NATS nodes, edges, a published compose
// port).
//
// A port from the kernel's ephemeral range, which listening on port 0
// gives, is a poor choice: once it is free again, any outgoing connection
// on the machine may take it as its source port, and the process started
// on it a moment later fails with "address already in use". Ports below
// that range are only taken by someone who asks for them by number, so
// Port picks among those, and never hands out one twice in a process.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// lowest is where Port starts looking.
const lowest = 20000

// Port returns a loopback TCP port nobody listens on, below the ephemeral
// range.
func Port() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	high := ephemeralLow()
	for range 1000 {
		port := lowest + rand.IntN(high-lowest)
		if given[port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // someone listens there
		}
		_ = ln.Close()
		given[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("freeport: no free port between %d and %d", lowest, high)
}

// ephemeralLow is where the kernel's ephemeral range starts (Linux's
// default if it cannot be read).
func ephemeralLow() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > lowest+1000 {
				return n
			}
		}
	}
	return 32768
}
