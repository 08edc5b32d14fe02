//go:build unix

package client

import "syscall"

// SmallReceiveBuffer is a net.Dialer Control that sets a socket's kernel
// receive buffer to 4 KiB before it connects: a client that reads slowly,
// or not at all, then holds up the server's writes at once instead of
// after megabytes of kernel buffers.
func SmallReceiveBuffer(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	}); err != nil {
		return err
	}
	return serr
}
