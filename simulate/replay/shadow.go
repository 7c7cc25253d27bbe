package replay

import (
	"net/netip"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/packet"
)

// The what-if engine (Options.WhatIf) judges every frame a second time.
// It shares nothing with the enforcing engine, so it runs on its own
// goroutine (runShadow), up to shadowLag frames behind the reading one:
// the two engines use both cores. Each frame travels as a shadowJob: the
// frame as captured and what the enforcing engine made of it go to the
// shadow; the shadow's refusals come back; runner.settle then reports the
// frame's events, in frame order, as when both engines ran in turn: the
// events, the report and the what-if counts do not depend on the
// goroutines (TestShadowPipelineSameOutput).

// The shadow takes frames in batches of shadowBatch (a channel handover
// per frame cost more than the shadow saved), at most shadowLag batches
// ahead of the settling.
const (
	shadowBatch = 128
	shadowLag   = 4
)

// shadowPipelined lets the shadow run behind the enforcing engine; tests
// turn it off to compare with frame-by-frame settling.
var shadowPipelined = true

// shadowOp is an engine call the shadow makes before its next frame, in
// the order the enforcing engine made it: MarkPickedUp(a, b) when
// pickedUp, else CaptureGap(a, b, to).
type shadowOp struct {
	pickedUp bool
	a, b     netip.AddrPort
	to       uint32
}

// shadowJob is one frame on its way through the shadow and back.
type shadowJob struct {
	// To the shadow.
	in    gateway.PortID
	frame []byte // the frame as captured (the enforcing engine may rewrite its copy)
	now   time.Time
	ops   []shadowOp
	lk    lazyKey  // the lazy shadow's key (lazy.go)
	fc    frameCtx // fc.pkt points at pkt
	// From the shadow (its goroutine writes them before handing j back).
	refusals []pendingEvent
	allowedS int
	// What the enforcing engine did with the frame.
	frameEvs []pendingEvent
	allowedE int
	sent     bool
	sentLen  int
	injected int
	orig     int
	// The frame decoded, for the shadow's events (last: the fields above
	// are those read and written for every frame).
	pkt packet.Packet
}

// shadowPipe connects the reading goroutine (Run's) with runShadow.
// Run's goroutine owns free, fill, inflight and ops; runShadow owns cur
// and now while it judges a batch. The channels hand each batch over
// whole, in order.
type shadowPipe struct {
	work     chan []*shadowJob
	done     chan []*shadowJob
	free     []*shadowJob
	fill     []*shadowJob   // the batch being filled
	inflight int            // batches sent, not yet settled
	spare    [][]*shadowJob // settled batches' slices, for reuse
	ops      []shadowOp     // calls to pass with the next frame
	batch    int
	stopped  bool

	cur *shadowJob // runShadow: the job being judged
	now time.Time  // runShadow: the shadow engine's clock
}

// newShadowPipe returns a pipe; pipelined false settles each frame before
// the next is read (the order of OnDecision and OnEvent calls is then
// that of the engines' decisions, frame by frame).
func newShadowPipe(pipelined bool) *shadowPipe {
	batch := 1
	if pipelined {
		batch = shadowBatch
	}
	return &shadowPipe{work: make(chan []*shadowJob, shadowLag), done: make(chan []*shadowJob, shadowLag), batch: batch}
}

// job returns a job for frame (copied) with the pending ops.
func (sp *shadowPipe) job(in gateway.PortID, frame []byte, fc *frameCtx, now time.Time) *shadowJob {
	var j *shadowJob
	if n := len(sp.free); n > 0 {
		j, sp.free = sp.free[n-1], sp.free[:n-1]
	} else {
		j = new(shadowJob)
	}
	j.in, j.now = in, now
	j.frame = append(j.frame[:0], frame...)
	j.fc = frameCtx{cur: fc.cur, picked: fc.picked, pickApp: fc.pickApp}
	j.ops = append(j.ops[:0], sp.ops...)
	sp.ops = sp.ops[:0]
	j.allowedS = 0
	return j
}

// send queues j for the shadow; a full batch goes.
func (sp *shadowPipe) send(j *shadowJob) {
	sp.fill = append(sp.fill, j)
	if len(sp.fill) >= sp.batch {
		sp.flush()
	}
}

// flush hands the batch being filled to the shadow.
func (sp *shadowPipe) flush() {
	if len(sp.fill) == 0 {
		return
	}
	sp.work <- sp.fill
	sp.inflight++
	sp.fill = nil
	if n := len(sp.spare); n > 0 {
		sp.fill, sp.spare = sp.spare[n-1][:0], sp.spare[:n-1]
	}
}

// stop ends runShadow (idempotent); batches still in flight are dropped.
func (sp *shadowPipe) stop() {
	if sp.stopped {
		return
	}
	sp.stopped = true
	close(sp.work)
	for range sp.done {
	}
}

// runShadow judges the batches with the shadow engine, in order, until
// the pipe is stopped.
func (r *runner) runShadow() {
	sp := r.sp
	z := r.lazy
	defer close(sp.done)
	for b := range sp.work {
		for _, j := range b {
			for _, op := range j.ops {
				if z != nil {
					z.op(op)
					continue
				}
				if op.pickedUp {
					r.shadow.MarkPickedUp(op.a, op.b)
				} else {
					r.shadow.CaptureGap(op.a, op.b, op.to)
				}
			}
			if z != nil && z.skip(j.lk, j.in, j.frame, j.now) {
				// As the shadow would have judged it: no refusal, the
				// same allows.
				j.allowedS = j.allowedE
				continue
			}
			// The same bytes as the enforcing engine's frame: the same
			// packet context for the events (also of a frame that does
			// not decode).
			_ = j.pkt.Decode(j.frame, packet.LinkEthernet)
			j.fc.pkt = &j.pkt
			sp.cur, sp.now = j, j.now
			r.shadow.Handle(j.in, j.frame, discardTx{})
		}
		sp.cur = nil
		sp.done <- b
	}
}

// settleReady settles the frames the shadow has judged, in frame order:
// the batches it has finished, all of them with wait (the batch being
// filled too), and at least the oldest when shadowLag batches are out.
func (r *runner) settleReady(wait bool) {
	sp := r.sp
	if wait {
		sp.flush()
	}
	for sp.inflight > 0 {
		var b []*shadowJob
		if wait || sp.inflight >= shadowLag {
			b = <-sp.done
		} else {
			select {
			case b = <-sp.done:
			default:
				return
			}
		}
		sp.inflight--
		for _, j := range b {
			r.settle(j)
			sp.free = append(sp.free, j)
		}
		clear(b)
		sp.spare = append(sp.spare, b)
	}
}
