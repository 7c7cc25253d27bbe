package daemon

import (
	"sync"
	"sync/atomic"
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

var _ hal.Port = (*memPort)(nil)

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
	n := 0
	take := func(f memFrame) {
		sizes[n] = copy(bufs[n], f.b)
		if meta != nil {
			meta[n] = f.meta
			if len(f.b) > len(bufs[n])-hal.VLANHeadroom {
				meta[n].Truncated = true
			}
		}
		n++
	}
	select {
	case <-p.closed:
		return 0, hal.ErrClosed
	case <-timer:
		return 0, hal.ErrTimeout
	case f := <-p.rx:
		take(f)
	}
	for n < len(bufs) {
		select {
		case f := <-p.rx:
			take(f)
		default:
			return n, nil
		}
	}
	return n, nil
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
