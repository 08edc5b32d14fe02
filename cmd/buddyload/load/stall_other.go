//go:build !unix

package load

import "syscall"

// smallReceiveBuffer leaves the system's receive buffer: the stallers then
// hold up the server's writes only once it is full.
func smallReceiveBuffer(_, _ string, _ syscall.RawConn) error { return nil }
