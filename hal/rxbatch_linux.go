package hal

import (
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// rxBatch is the read side both mmap'd-ring ports (ringPort, xdpPort)
// share: the caller's buffers of the ReadBatch in progress and how many
// frames the RawConn callback harvested into them. Touched only by the
// ReadBatch owner.
type rxBatch struct {
	rbufs  [][]byte
	rsizes []int
	rmeta  []FrameMeta
	rvlen  int
	rn     int
	readFn func(fd uintptr) bool // the port's doRead, bound once at open
	tryFn  func(fd uintptr) bool // the port's doTry (one look, never parks), bound once at open
}

// readBatch is ReadBatch for a ring port: it lends bufs to readFn for
// one rc.Read, which fills r.rn of them, and counts the call.
func (r *rxBatch) readBatch(rc syscall.RawConn, c *portCounters, closed *atomic.Bool,
	bufs [][]byte, sizes []int, meta []FrameMeta) (int, error) {
	return r.read(rc, r.readFn, c, closed, bufs, sizes, meta)
}

// tryReadBatch is TryReadBatch for a ring port: one look at the ring
// (tryFn) inside rc.Read, which holds the descriptor, so Close waits for
// the look before it unmaps the ring; never parks.
func (r *rxBatch) tryReadBatch(rc syscall.RawConn, c *portCounters, closed *atomic.Bool,
	bufs [][]byte, sizes []int, meta []FrameMeta) (int, error) {
	return r.read(rc, r.tryFn, c, closed, bufs, sizes, meta)
}

// read lends bufs to fn for one rc.Read, which fills r.rn of them. Only a
// call that returned frames counts as a read call.
func (r *rxBatch) read(rc syscall.RawConn, fn func(uintptr) bool, c *portCounters, closed *atomic.Bool,
	bufs [][]byte, sizes []int, meta []FrameMeta) (int, error) {
	n, err := batchLen(bufs, sizes, meta)
	if n == 0 || err != nil {
		return 0, err
	}
	r.rbufs, r.rsizes, r.rmeta, r.rvlen, r.rn = bufs, sizes, meta, n, 0
	err = rc.Read(fn)
	r.rbufs, r.rsizes, r.rmeta = nil, nil, nil // do not retain the caller's buffers
	if err != nil {
		return 0, readErr(err, closed)
	}
	if r.rn > 0 {
		c.rcalls.Add(1)
		c.rxFrames.Add(uint64(r.rn))
	}
	return r.rn, nil
}

// readErr maps the error of a RawConn.Read to the Port's: ErrClosed once
// the port is closed, ErrTimeout at the read deadline.
func readErr(err error, closed *atomic.Bool) error {
	if closed.Load() {
		return ErrClosed
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ErrTimeout
	}
	return err
}

// spinHarvest returns what harvest finds, looking again for up to spinNs
// while it finds nothing (0: look once). Reading the clock costs more
// than a look at a ring, so it is read only every `every` looks; poll,
// when not nil, runs before each look after the first (a busy-poll
// round).
func spinHarvest(spinNs int64, every int, harvest func() int, poll func()) int {
	if n := harvest(); n > 0 || spinNs <= 0 {
		return n
	}
	end := time.Now().UnixNano() + spinNs
	for i := 1; ; i++ {
		if poll != nil {
			poll()
		}
		if n := harvest(); n > 0 {
			return n
		}
		if i%every == 0 && time.Now().UnixNano() > end {
			return 0
		}
	}
}
