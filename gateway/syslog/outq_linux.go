package syslog

import (
	"net"

	"golang.org/x/sys/unix"
)

// unackedBytes returns how many bytes written to c the peer's TCP has not
// acknowledged yet (SIOCOUTQ, tcp(7)), or -1 when unknown.
func unackedBytes(c *net.TCPConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	_ = rc.Control(func(fd uintptr) {
		v, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		if err == nil {
			n = v
		}
	})
	return n
}
