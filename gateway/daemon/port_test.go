package daemon

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otgw/otgw/hal"
)

// memFrame is a frame queued for a memPort reader.
type memFrame struct {
	b    []byte
	meta hal.FrameMeta
}

// memPort is an in-memory hal.Port: frames pushed with inject are read by
// ReadBatch; frames written are recorded (copied) for the test to check.
type memPort struct {
	name     string
	rx       chan memFrame
	closed   chan struct{}
	once     sync.Once
	deadline atomic.Int64

	mu   sync.Mutex // guards sent
	sent [][]byte
	// keep, when false, makes WriteBatch record nothing (alloc tests).
	keep bool
	txN  atomic.Uint64
}

var _ hal.Poller = (*memPort)(nil)

func newMemPort(name string) *memPort {
	return &memPort{name: name, rx: make(chan memFrame, 4096), closed: make(chan struct{}), keep: true}
}

func (p *memPort) inject(b []byte, meta hal.FrameMeta) {
	p.rx <- memFrame{append([]byte(nil), b...), meta}
}

func (p *memPort) Name() string { return p.name }

func (p *memPort) ReadBatch(bufs [][]byte, sizes []int, meta []hal.FrameMeta) (int, error) {
	var timer <-chan time.Time
	if d := p.deadline.Load(); d != 0 {
		t := time.NewTimer(time.Until(time.Unix(0, d)))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-p.closed:
		return 0, hal.ErrClosed
	case <-timer:
		return 0, hal.ErrTimeout
	case f := <-p.rx:
		take(0, f, bufs, sizes, meta)
	}
	return p.more(1, bufs, sizes, meta), nil
}

// TryReadBatch implements hal.Poller: what is queued, without waiting.
func (p *memPort) TryReadBatch(bufs [][]byte, sizes []int, meta []hal.FrameMeta) (int, error) {
	if p.isClosed() {
		return 0, hal.ErrClosed
	}
	return p.more(0, bufs, sizes, meta), nil
}

// more takes queued frames into bufs[n:] without waiting and returns the
// number of frames in bufs.
func (p *memPort) more(n int, bufs [][]byte, sizes []int, meta []hal.FrameMeta) int {
	for n < len(bufs) {
		select {
		case f := <-p.rx:
			take(n, f, bufs, sizes, meta)
			n++
		default:
			return n
		}
	}
	return n
}

// take copies f into bufs[n], as a port reads a frame.
func take(n int, f memFrame, bufs [][]byte, sizes []int, meta []hal.FrameMeta) {
	sizes[n] = copy(bufs[n], f.b)
	if meta != nil {
		meta[n] = f.meta
		if len(f.b) > len(bufs[n])-hal.VLANHeadroom {
			meta[n].Truncated = true
		}
	}
}

func (p *memPort) WriteBatch(frames [][]byte) (int, error) {
	select {
	case <-p.closed:
		return 0, hal.ErrClosed
	default:
	}
	p.txN.Add(uint64(len(frames)))
	if p.keep {
		p.mu.Lock()
		for _, f := range frames {
			p.sent = append(p.sent, append([]byte(nil), f...))
		}
		p.mu.Unlock()
	}
	return len(frames), nil
}

func (p *memPort) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		p.deadline.Store(0)
	} else {
		p.deadline.Store(t.UnixNano())
	}
	return nil
}

func (p *memPort) Stats() hal.PortStats { return hal.PortStats{TxFrames: p.txN.Load()} }

func (p *memPort) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func (p *memPort) isClosed() bool {
	select {
	case <-p.closed:
		return true
	default:
		return false
	}
}

// waitSent waits (bounded) until n frames were written and returns them.
func (p *memPort) waitSent(n int, d time.Duration) [][]byte {
	deadline := time.Now().Add(d)
	for {
		p.mu.Lock()
		got := len(p.sent)
		out := append([][]byte(nil), p.sent...)
		p.mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			return out
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// plainPort hides a memPort's TryReadBatch: a port that cannot be polled
// (as the recvmmsg port).
type plainPort struct{ hal.Port }

// forEachMode runs f for the blocking Forwarder (a goroutine per
// direction) and the polling one (ForwarderConfig.Poll).
func forEachMode(t *testing.T, f func(t *testing.T, poll bool)) {
	t.Run("blocking", func(t *testing.T) { f(t, false) })
	t.Run("poll", func(t *testing.T) { f(t, true) })
}
