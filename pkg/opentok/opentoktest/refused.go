package opentoktest

import (
	"fmt"
	"syscall"
	"testing"
)

// RefusedURL returns an http:// URL on loopback where every connection is
// refused, for as long as the test runs. Listening on a port and closing it
// is not enough when tests run in parallel: another test's server may be
// given the same port in between. Here the port stays bound by a socket
// that never listens, so connections are refused and no one else can take it.
func RefusedURL(tb testing.TB) string {
	tb.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		tb.Fatalf("opentoktest: socket: %v", err)
	}
	tb.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatalf("opentoktest: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		tb.Fatalf("opentoktest: getsockname: %v", err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
