package netns

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RxSink accepts one TCP connection on a listener and counts what it
// reads, recording the kernel's receive time of the last segment of each
// read (SO_TIMESTAMPNS, socket(7)): a stall is dated by the kernel, not
// by when a busy test process got round to reading.
type RxSink struct {
	N      atomic.Int64 // bytes read
	LastRx atomic.Int64 // CLOCK_REALTIME nanoseconds of the last segment read
}

// NewRxSink starts reading the first connection ln accepts; it stops at
// the connection's end or error.
func NewRxSink(t testing.TB, ln net.Listener) *RxSink {
	s := &RxSink{}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Error(err)
			return
		}
		var serr error
		_ = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		})
		if serr != nil {
			t.Error(serr)
			return
		}
		buf, oob := make([]byte, 256<<10), make([]byte, 128)
		for {
			var n, oobn int
			var rerr error
			err := rc.Read(func(fd uintptr) bool {
				n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
				return rerr != unix.EAGAIN
			})
			if err != nil || rerr != nil || n == 0 {
				return
			}
			s.N.Add(int64(n))
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
					ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
					s.LastRx.Store(ts.Nano())
				}
			}
		}
	}()
	return s
}

// Crossing reports whether the sink read data within d from now.
func (s *RxSink) Crossing(d time.Duration) bool {
	n0 := s.N.Load()
	time.Sleep(d)
	return s.N.Load() > n0
}
