package dissect

import (
	"errors"
	"io"
	"runtime"
	"sync"

	"github.com/otgw/otgw/simulate/capture"
)

// Format appends the output line (or lines) of one PDU to dst.
type Format func(dst []byte, p *PDU) ([]byte, error)

// Batching of RunParallel: the reader hands the workers this many
// reassembled segments at a time (fewer at the end of the capture), and
// this many batches are in flight between the reader, the workers and the
// writer.
const (
	batchSegs       = 1024
	batchesInFlight = 4
)

// batch is a run of consecutive segments of the capture, their payloads
// copied into one arena, and the output the workers made of them.
type batch struct {
	segs  []capture.Segment // Payload aliases arena
	arena []byte
	// owner[i] is the worker that dissects segs[i]; end[i] is where the
	// output of segs[i] ends in out[owner[i]] (it starts where that
	// worker's previous segment's output ended).
	owner []uint16
	end   []int
	out   [][]byte
	// errAt[w] is the index of the segment at which worker w failed with
	// err[w] (len(segs) when it did not).
	errAt []int
	err   []error
	done  sync.WaitGroup // one count per worker until it has made its output
}

// RunParallel dissects the capture at path as Run does, with the
// connections spread over workers goroutines (each connection, both
// directions, always on the same worker, so each worker sees its
// connections' segments in capture order), and writes format's output to w
// in exactly the order Run would call fn: the bytes do not depend on
// workers. workers < 1 means GOMAXPROCS. Reading and reassembly stay on the
// calling goroutine; one more goroutine writes to w. The first error in
// capture order (of format or of w) ends the run after the output before it
// has been written.
func RunParallel(path string, opts Options, workers int, format Format, w io.Writer) (capture.Stats, error) {
	if workers < 1 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, 1<<16)
	p := &pipeline{
		free:  make(chan *batch, batchesInFlight),
		merge: make(chan *batch, batchesInFlight),
		work:  make([]chan *batch, workers),
		stop:  make(chan struct{}),
	}
	for range batchesInFlight {
		p.free <- &batch{out: make([][]byte, workers), errAt: make([]int, workers), err: make([]error, workers)}
	}
	var wg sync.WaitGroup
	for i := range workers {
		p.work[i] = make(chan *batch, batchesInFlight)
		wg.Add(1)
		go func() {
			defer wg.Done()
			runWorker(i, opts, format, p.work[i])
		}()
	}
	writeDone := make(chan error, 1)
	go func() { writeDone <- p.runWriter(w) }()

	cur := <-p.free
	cur.reset()
	st, err := capture.ReadStreams(path, capture.Options{}, func(s *capture.Segment) error {
		cur.add(s, workers)
		if len(cur.segs) < batchSegs {
			return nil
		}
		if !p.send(cur) {
			return errStopped
		}
		select {
		case cur = <-p.free:
		case <-p.stop:
			return errStopped
		}
		cur.reset()
		return nil
	})
	if !errors.Is(err, errStopped) && len(cur.segs) > 0 {
		// Also after a read error: Run delivers what came before it.
		p.send(cur)
	}
	for _, c := range p.work {
		close(c)
	}
	close(p.merge)
	werr := <-writeDone
	wg.Wait()
	if werr != nil {
		return st, werr
	}
	return st, err
}

// errStopped ends the read when the writer has failed (its error is the
// one returned).
var errStopped = errors.New("dissect: stopped")

// pipeline connects the reader (RunParallel's goroutine), the workers and
// the writer. Every batch goes to every worker and, in capture order, to
// the writer, which returns it to free once written.
type pipeline struct {
	free  chan *batch
	merge chan *batch
	work  []chan *batch
	stop  chan struct{} // closed by the writer when it fails
}

// send hands b to the workers and the writer; false when the writer has
// stopped.
func (p *pipeline) send(b *batch) bool {
	b.done.Add(len(p.work))
	for _, c := range p.work {
		c <- b
	}
	select {
	case p.merge <- b:
		return true
	case <-p.stop:
		return false
	}
}

func (b *batch) reset() {
	b.segs = b.segs[:0]
	b.arena = b.arena[:0]
	b.owner = b.owner[:0]
	b.end = b.end[:0]
}

// add copies s into the batch and picks its worker from the connection id
// (both directions share it).
func (b *batch) add(s *capture.Segment, workers int) {
	c := *s
	c.Payload = nil
	if len(s.Payload) > 0 {
		start := len(b.arena)
		b.arena = append(b.arena, s.Payload...)
		// A full slice expression: an append that moves the arena leaves
		// this payload where it was, intact.
		c.Payload = b.arena[start:len(b.arena):len(b.arena)]
	}
	b.segs = append(b.segs, c)
	b.owner = append(b.owner, uint16(mix(s.Conn)%uint64(workers)))
	b.end = append(b.end, 0)
}

// mix spreads consecutive connection ids over the workers (splitmix64's
// finaliser), so that no pattern of ids loads one worker.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// runWorker dissects the segments of each batch that belong to worker id,
// with its own Dissector (its own connections).
func runWorker(id int, opts Options, format Format, in <-chan *batch) {
	var out []byte
	d := New(opts, func(p *PDU) error {
		n := len(out)
		var err error
		if out, err = format(out, p); err != nil {
			out = out[:n] // as Run's fn, a failing PDU writes nothing
		}
		return err
	})
	failed := false
	for b := range in {
		out = b.out[id][:0]
		b.errAt[id], b.err[id] = len(b.segs), nil
		for i := range b.segs {
			if failed || int(b.owner[i]) != id {
				continue
			}
			if err := d.Segment(&b.segs[i]); err != nil {
				b.errAt[id], b.err[id] = i, err
				failed = true
			}
			b.end[i] = len(out)
		}
		b.out[id] = out
		b.done.Done()
	}
}

// runWriter writes the batches' output in capture order, up to the first
// failing segment.
func (p *pipeline) runWriter(w io.Writer) error {
	var werr error
	cur := make([]int, len(p.work))
	for b := range p.merge {
		b.done.Wait()
		if werr != nil {
			p.free <- b // drain
			continue
		}
		stopAt, stopErr := len(b.segs), error(nil)
		for id, at := range b.errAt {
			if at < stopAt {
				stopAt, stopErr = at, b.err[id]
			}
		}
		clear(cur)
		for i, id := range b.owner {
			if i > stopAt {
				break
			}
			// At i == stopAt: the failing segment's PDUs before the error.
			if line := b.out[id][cur[id]:b.end[i]]; len(line) > 0 {
				if _, err := w.Write(line); err != nil {
					stopErr = err
					break
				}
			}
			cur[id] = b.end[i]
		}
		p.free <- b
		if stopErr != nil {
			werr = stopErr
			close(p.stop)
		}
	}
	return werr
}
