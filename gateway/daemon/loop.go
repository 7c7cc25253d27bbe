package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/hal"
	"golang.org/x/sys/unix"
)

// Handler judges one frame and sends what may cross through tx; the
// gateway.Engine is the Handler of a live gateway. Handle is called by
// two goroutines at once (one per ingress port), or by one that serves
// both (ForwarderConfig.Poll).
type Handler interface {
	Handle(in gateway.PortID, frame []byte, tx gateway.Tx)
}

// Forwarder defaults.
const (
	// DefaultBufSize is the size of each frame buffer: a 1500-byte MTU
	// frame with two VLAN tags and the reserved VLANHeadroom fits with room
	// to spare. Larger MTUs need ForwarderConfig.BufSize.
	DefaultBufSize = 2048
	// readWake bounds how long a worker blocks in ReadBatch, so that its
	// heartbeat advances on an idle link and a hung worker is noticed.
	readWake = 250 * time.Millisecond
	// StallAfter is how long a worker may go without a heartbeat before
	// Healthy reports false (and the watchdog is no longer petted).
	StallAfter = 2 * time.Second
	// errBackoff bounds the retry rate when a port keeps failing (a link
	// that is down returns ENETDOWN at once).
	errBackoff = 20 * time.Millisecond
)

// ForwarderConfig configures a Forwarder. North, South and Handler are
// required.
type ForwarderConfig struct {
	North, South hal.Port
	Handler      Handler
	// BufSize is the size of every frame buffer (default DefaultBufSize,
	// at least hal.MinBufSize). Frames larger than BufSize-hal.VLANHeadroom
	// are dropped and counted (RxTruncated).
	BufSize int
	// Batch is the number of frames moved per system call (default and
	// maximum hal.MaxBatch).
	Batch int
	// Poll serves both directions from one goroutine on its own OS thread
	// that looks at each port's ring in turn and never sleeps: no wakeup
	// per frame (the added round-trip time of a user-space gateway on a
	// machine whose wakeups are slow), for one core kept busy all the
	// time. Both ports must be hal.Pollers (ring or AF_XDP).
	Poll   bool
	Logger *slog.Logger
}

// ForwarderStats are the Forwarder's own counters, by ingress port for
// Rx* and by egress port for Tx*.
type ForwarderStats struct {
	RxBatches     [2]uint64 // reads (ReadBatch, or TryReadBatch with Poll) that returned frames
	RxTruncated   [2]uint64 // frames larger than the buffer: dropped
	RxCsumFixed   [2]uint64 // partial checksums completed (hal.FrameMeta.ChecksumNotReady)
	RxErrors      [2]uint64 // ReadBatch errors other than timeouts
	TxErrors      [2]uint64 // frames the port refused
	TxOversize    [2]uint64 // crafted frames larger than the buffer: dropped
	TxFlushesFull [2]uint64 // batches flushed early because the out batch was full
	Panics        [2]uint64 // panics recovered in the worker reading this port
}

// PanicError is what Forwarder.Run returns when a worker panicked (a bug
// in the Handler, the engine or a port: never a reaction to input the code
// foresaw). The worker stopped; the caller decides what the board's fail
// mode asks for and whether to start a new datapath.
type PanicError struct {
	Port  gateway.PortID // ingress port of the worker that panicked
	Value any            // the value passed to panic
	Stack []byte         // the worker's stack at the panic
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("daemon: datapath worker %s->%s panicked: %v", e.Port, e.Port.Other(), e.Value)
}

// Forwarder is the datapath loop in the shape of wireguard-go's device:
// one owner goroutine per direction reads a batch from its ingress port,
// hands each frame to the Handler, and writes what the Handler sent with
// one WriteBatch per egress port. All buffers are allocated once in
// NewForwarder (a bounded pool: Batch read buffers and 2*Batch transmit
// buffers per direction); the steady state allocates nothing per packet.
//
// Buffer ownership: a frame the Handler forwards unchanged (it aliases the
// read buffer) is queued by reference, because the read buffer is not
// reused before the batch is written; other frames (crafted RSTs and
// replies from the engine's pool) are copied, as gateway.Tx requires.
//
// Concurrency: each port's ReadBatch is called only by its own worker
// (with Poll, both workers run on the one polling goroutine, which then
// also waits for a full TX ring to drain: both directions wait with it).
// WriteBatch of a port is called by both workers (forwarded frames by one,
// crafted replies by the other) under that port's write mutex.
type Forwarder struct {
	cfg   ForwarderConfig
	log   *slog.Logger
	ports [2]*txPort
	w     [2]*worker
	poll  [2]hal.Poller // with Poll: the ports, as Pollers
	// handling is the ingress port of the batch the polling goroutine
	// handles (with Poll; that goroutine only): whose panic it is.
	handling gateway.PortID
}

// txPort serialises writes to one port.
type txPort struct {
	port hal.Port
	mu   sync.Mutex // guards calls of port.WriteBatch
}

// outBatch is one worker's pending frames for one egress port.
type outBatch struct {
	frames [][]byte // frames[:n] are queued
	store  [][]byte // copy buffers for frames that do not alias a read buffer
	n      int
	nstore int
}

// worker owns one direction: reads from ports[in], writes to both.
type worker struct {
	f     *Forwarder
	in    gateway.PortID
	bufs  [][]byte
	sizes []int
	meta  []hal.FrameMeta
	out   [2]outBatch
	cur   []byte // the read buffer being handled (alias detection)

	running   atomic.Bool
	heartbeat atomic.Int64 // unix nanoseconds of the last loop iteration

	rxBatches, rxTrunc, rxCsum, rxErr, panics atomic.Uint64
	txErr, txOversize, txFull                 [2]atomic.Uint64
}

// Errors of NewForwarder.
var (
	ErrNoPorts   = errors.New("daemon: forwarder needs a north and a south port")
	ErrNoHandler = errors.New("daemon: forwarder needs a handler")
	ErrNoPoller  = errors.New("daemon: polling needs ports that can be polled (--io ring or xdp)")
)

// NewForwarder allocates the buffers of both directions.
func NewForwarder(cfg ForwarderConfig) (*Forwarder, error) {
	if cfg.North == nil || cfg.South == nil {
		return nil, ErrNoPorts
	}
	if cfg.Handler == nil {
		return nil, ErrNoHandler
	}
	if cfg.BufSize <= 0 {
		cfg.BufSize = DefaultBufSize
	}
	cfg.BufSize = max(cfg.BufSize, hal.MinBufSize)
	if cfg.Batch <= 0 || cfg.Batch > hal.MaxBatch {
		cfg.Batch = hal.MaxBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Forwarder{cfg: cfg, log: cfg.Logger.With("component", "datapath")}
	f.ports[gateway.North] = &txPort{port: cfg.North}
	f.ports[gateway.South] = &txPort{port: cfg.South}
	if cfg.Poll {
		for i, p := range []hal.Port{cfg.North, cfg.South} {
			pl, ok := p.(hal.Poller)
			if !ok {
				return nil, fmt.Errorf("%w: port %s uses %s", ErrNoPoller, p.Name(), hal.PortIO(p))
			}
			f.poll[i] = pl
		}
	}
	for i := range f.w {
		w := &worker{f: f, in: gateway.PortID(i)}
		w.bufs = make([][]byte, cfg.Batch)
		for j := range w.bufs {
			w.bufs[j] = make([]byte, cfg.BufSize)
		}
		w.sizes = make([]int, cfg.Batch)
		w.meta = make([]hal.FrameMeta, cfg.Batch)
		for o := range w.out {
			ob := &w.out[o]
			// Up to Batch forwarded frames plus crafted ones (an RST each
			// way and a reply per frame at worst) before an early flush.
			ob.frames = make([][]byte, 2*cfg.Batch)
			ob.store = make([][]byte, cfg.Batch)
			for j := range ob.store {
				ob.store[j] = make([]byte, cfg.BufSize)
			}
		}
		f.w[i] = w
	}
	return f, nil
}

// panicGrace bounds how long Run waits for the other worker after one
// panicked: the panic may have left a lock of the Handler held, and a
// worker blocked on it never returns. Run then returns without it; the
// caller discards that Handler.
const panicGrace = StallAfter

// Run runs both workers until ctx is done or a port fails for good, then
// closes both ports (which wakes the other worker) and returns the first
// error (nil on a clean stop). A panic in a worker is recovered, counted
// (ForwarderStats.Panics) and returned as a *PanicError: the datapath
// stops (nothing forwards: fail-closed), the process does not die.
func (f *Forwarder) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	var panicked atomic.Pointer[PanicError] // the first panic
	// start runs body in a goroutine that serves the workers ws: one
	// direction, or both when polling.
	start := func(ws []*worker, body func() error) {
		for _, w := range ws {
			w.running.Store(true)
			w.heartbeat.Store(time.Now().UnixNano())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				for _, w := range ws {
					w.running.Store(false)
				}
			}()
			defer cancel() // one direction down means the gateway is down
			defer func() {
				if v := recover(); v != nil {
					w := ws[0]
					if len(ws) > 1 {
						w = f.w[f.handling]
					}
					w.panics.Add(1)
					pe := &PanicError{Port: w.in, Value: v, Stack: debug.Stack()}
					panicked.CompareAndSwap(nil, pe)
					errs[w.in] = pe
					f.log.Error("datapath worker panicked", "port", w.in.String(), "panic", fmt.Sprint(v))
				}
			}()
			errs[ws[0].in] = body()
		}()
	}
	if f.cfg.Poll {
		start(f.w[:], func() error { return f.runPoll(ctx) })
	} else {
		for _, w := range f.w {
			start([]*worker{w}, func() error { return w.run(ctx) })
		}
	}
	<-ctx.Done()
	// Closing wakes a worker blocked in ReadBatch or WriteBatch.
	_ = f.ports[gateway.North].port.Close()
	_ = f.ports[gateway.South].port.Close()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	if pe := panicked.Load(); pe != nil {
		select {
		case <-done:
			return pe
		case <-time.After(panicGrace):
			f.log.Error("datapath worker did not stop after the other panicked; leaving it", "grace", panicGrace)
			return pe
		}
	}
	<-done
	return errors.Join(errs...)
}

// arm marks both workers as running from now, before Run starts them, so
// that a watchdog or health check that looks between the datapath's
// creation and Run's first iteration does not see a stopped gateway.
func (f *Forwarder) arm() {
	now := time.Now().UnixNano()
	for _, w := range f.w {
		w.heartbeat.Store(now)
		w.running.Store(true)
	}
}

// Healthy reports whether both workers are running and neither has been
// stuck for longer than StallAfter. Safe from any goroutine.
func (f *Forwarder) Healthy() bool {
	now := time.Now().UnixNano()
	for _, w := range f.w {
		if !w.running.Load() || now-w.heartbeat.Load() > int64(StallAfter) {
			return false
		}
	}
	return true
}

// Stats returns the Forwarder's counters. Safe from any goroutine.
func (f *Forwarder) Stats() ForwarderStats {
	var s ForwarderStats
	for i, w := range f.w {
		s.RxBatches[i] = w.rxBatches.Load()
		s.RxTruncated[i] = w.rxTrunc.Load()
		s.RxCsumFixed[i] = w.rxCsum.Load()
		s.RxErrors[i] = w.rxErr.Load()
		s.Panics[i] = w.panics.Load()
		for o := range 2 {
			s.TxErrors[o] += w.txErr[o].Load()
			s.TxOversize[o] += w.txOversize[o].Load()
			s.TxFlushesFull[o] += w.txFull[o].Load()
		}
	}
	return s
}

// run is the owner goroutine of one direction.
func (w *worker) run(ctx context.Context) error {
	in := w.f.ports[w.in].port
	log := w.f.log.With("port", in.Name(), "dir", w.in.String()+"->"+w.in.Other().String())
	log.Info("runDirection started")
	defer log.Info("runDirection stopped")
	var deadlineSet int64
	for {
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now().UnixNano()
		w.heartbeat.Store(now)
		// Moving the deadline costs a timer update; do it a few times per
		// wake period, not per batch.
		if now-deadlineSet > int64(readWake/4) {
			_ = in.SetReadDeadline(time.Unix(0, now).Add(readWake))
			deadlineSet = now
		}
		n, err := in.ReadBatch(w.bufs, w.sizes, w.meta)
		if err != nil {
			if errors.Is(err, hal.ErrTimeout) {
				continue
			}
			if stop, err := w.readError(ctx, err); stop {
				return err
			}
			continue
		}
		w.rxBatches.Add(1)
		w.handleBatch(n)
	}
}

// pollEvery is how many rounds of looks the polling goroutine makes
// between its checks of the context and the heartbeats (a round of two
// empty looks takes well under a microsecond).
const pollEvery = 256

// The polling thread offers its CPU (sched_yield, which returns at once
// when nothing else is runnable there) after pollYieldAfter empty rounds
// in a row, at most once per pollYieldEvery. Without a yield, a peer
// process or kernel thread woken on the polling thread's CPU waits for
// the end of its time slice: measured, a Modbus RTT p99 of +3.1 to +3.4 ms
// over the kernel bridge. Yielding after every 32 empty rounds (a few
// microseconds) starved the thread instead on a loaded machine: each
// yield while another thread is runnable moves its EEVDF deadline a slice
// later, and beside one busy loop it got 8-18 % of a core. At most once
// per 100 us it got 43-52 % beside two, and the p99 stayed within the
// goal (BENCHMARKS.md, "A polling datapath").
const (
	pollYieldAfter = 32
	pollYieldEvery = 100 * time.Microsecond
)

// runPoll is the one goroutine of a polling Forwarder: on its own OS
// thread it looks at the north and the south ring in turn and handles
// what it finds, as each direction's worker would, and never sleeps.
// Order within a direction is kept (one reader per port, as always);
// the two directions no longer run in parallel, which a machine that
// gives the datapath one core does not lose.
func (f *Forwarder) runPoll(ctx context.Context) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, p := range f.poll {
		_ = p.SetReadDeadline(time.Time{}) // a look never waits; a deadline would only fail it
	}
	idle := 0
	var lastYield int64
	for round := 0; ; round++ {
		if idle++; idle == pollYieldAfter {
			idle = 0
			if now := time.Now().UnixNano(); now-lastYield >= int64(pollYieldEvery) {
				lastYield = now
				_, _, _ = unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
			}
		}
		if round%pollEvery == 0 {
			if ctx.Err() != nil {
				return nil
			}
			f.beat()
		}
		for _, w := range f.w {
			f.handling = w.in // a panic in the look or the handling is this direction's
			n, err := f.poll[w.in].TryReadBatch(w.bufs, w.sizes, w.meta)
			if err != nil {
				if stop, err := w.readError(ctx, err); stop {
					return err
				}
				// The back-off took a while (the other port waited too):
				// still alive.
				f.beat()
				continue
			}
			if n > 0 {
				idle = 0
				w.rxBatches.Add(1)
				w.handleBatch(n)
			}
		}
	}
}

// beat moves both workers' heartbeats to now (the polling goroutine).
func (f *Forwarder) beat() {
	now := time.Now().UnixNano()
	f.w[gateway.North].heartbeat.Store(now)
	f.w[gateway.South].heartbeat.Store(now)
}

// readError handles a failed read of w's port. A closed port ends the
// datapath (nil on a clean stop, when ctx is done); any other error is
// transient (a link that is down answers ENETDOWN at once): counted, and
// followed by a little back-off so that a dead link does not spin a core.
// It reports whether the caller must return, and with what.
func (w *worker) readError(ctx context.Context, err error) (bool, error) {
	if errors.Is(err, hal.ErrClosed) {
		if ctx.Err() != nil {
			return true, nil
		}
		return true, err
	}
	w.rxErr.Add(1)
	select {
	case <-ctx.Done():
		return true, nil
	case <-time.After(errBackoff):
	}
	return false, nil
}

// handleBatch hands the n frames just read to the Handler and writes what
// it sent.
func (w *worker) handleBatch(n int) {
	h := w.f.cfg.Handler
	for i := 0; i < n; i++ {
		if w.meta[i].Truncated {
			w.rxTrunc.Add(1)
			continue
		}
		frame := w.bufs[i][:w.sizes[i]]
		if w.meta[i].ChecksumNotReady && CompleteChecksum(frame) {
			w.rxCsum.Add(1)
		}
		w.cur = w.bufs[i]
		h.Handle(w.in, frame, w)
	}
	w.cur = nil
	w.flush(gateway.South)
	w.flush(gateway.North)
}

// Send implements gateway.Tx: it queues frame for port out, by reference
// when it aliases the read buffer being handled, else as a copy.
func (w *worker) Send(out gateway.PortID, frame []byte) {
	if out > gateway.South || len(frame) == 0 {
		return
	}
	ob := &w.out[out]
	if ob.n == len(ob.frames) || ob.nstore == len(ob.store) {
		w.txFull[out].Add(1)
		w.flush(out)
	}
	if len(w.cur) > 0 && &frame[0] == &w.cur[0] {
		ob.frames[ob.n] = frame
		ob.n++
		return
	}
	buf := ob.store[ob.nstore]
	if len(frame) > len(buf) {
		w.txOversize[out].Add(1)
		return
	}
	ob.nstore++
	ob.frames[ob.n] = buf[:copy(buf, frame)]
	ob.n++
}

// flush writes the frames queued for port out.
func (w *worker) flush(out gateway.PortID) {
	ob := &w.out[out]
	if ob.n == 0 {
		return
	}
	frames := ob.frames[:ob.n]
	tp := w.f.ports[out]
	tp.mu.Lock()
	for tries := 0; len(frames) > 0 && tries < 4*hal.MaxBatch; tries++ {
		n, err := tp.port.WriteBatch(frames)
		if err == nil {
			frames = frames[min(n, len(frames)):] // a short write without error: send the rest
			continue
		}
		if errors.Is(err, hal.ErrClosed) {
			w.txErr[out].Add(uint64(len(frames) - n))
			break
		}
		if n >= len(frames) {
			// AF_XDP: all were queued and the device's error came after;
			// the port counted what it dropped (PortStats.TxDropped).
			break
		}
		// frames[n] failed; the ones after it were not sent yet.
		w.txErr[out].Add(1)
		frames = frames[n+1:]
	}
	tp.mu.Unlock()
	ob.n, ob.nstore = 0, 0
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(in gateway.PortID, frame []byte, tx gateway.Tx)

// Handle calls f.
func (f HandlerFunc) Handle(in gateway.PortID, frame []byte, tx gateway.Tx) { f(in, frame, tx) }
