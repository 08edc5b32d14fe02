//go:build !unix

package client

import "syscall"

// SmallReceiveBuffer leaves the system's receive buffer: a client that
// does not read then holds up the server's writes only once it is full.
func SmallReceiveBuffer(_, _ string, _ syscall.RawConn) error { return nil }
