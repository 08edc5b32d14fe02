package freeport_test

import (
	"net"
	"strconv"
	"testing"

	"github.com/buddytok/buddytok/pkg/freeport"
)

// Every port is listenable, below the ephemeral range, and never given twice.
func TestPort(t *testing.T) {
	t.Parallel()
	seen := map[int]bool{}
	for range 200 {
		p, err := freeport.Port()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] || p < 20000 || p >= 32768 {
			t.Fatalf("port %d (seen before: %t)", p, seen[p])
		}
		seen[p] = true
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d: %v", p, err)
		}
		_ = ln.Close()
	}
}
