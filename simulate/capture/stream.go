package capture

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/otgw/otgw/gateway/packet"
)

// Segment is a piece of one direction's in-order byte stream.
type Segment struct {
	Frame     int // 1-based frame that made these bytes available
	Time      time.Time
	Transport string // "tcp" or "udp"
	Src, Dst  netip.AddrPort
	// Payload holds the newly contiguous bytes of this direction (TCP) or
	// the datagram (UDP). It is valid only during the callback.
	Payload []byte
	// Gap reports that bytes of this direction were lost before Payload:
	// the capture started mid-stream, or it has a hole that never filled.
	Gap bool
	// Conn identifies the connection (TCP) or flow (UDP); both directions
	// share it. Ids count up from 1 in order of first appearance.
	Conn uint64
	// SYN reports that this direction's connection was seen from its SYN,
	// so the initiator is known (Src of the SYN without ACK).
	SYN bool
	// Initiator is the endpoint that sent the first SYN, when seen.
	Initiator netip.AddrPort
}

// Options tune ReadStreams. The zero value is ready to use.
type Options struct {
	// MaxBuffered caps the out-of-order bytes held per direction
	// (default 1 MiB); past it the oldest hole is declared a gap.
	MaxBuffered int
	// When a 4-tuple's connection or flow is over and the next packet on
	// it starts a new one (see Reassembler): TCPIdle (default 1 h) for an
	// open TCP connection, TCPClosed (default 10 s, TIME_WAIT-like) after
	// both FINs or a RST, UDPIdle (default 2 min) for a UDP flow. The
	// defaults are the gateway engine's flow timeouts (gateway.Config).
	TCPIdle, TCPClosed, UDPIdle time.Duration
	// Frames, when set, is called for every frame before its payload is
	// delivered (for tools that also count packets).
	Frames func(f *Frame, p *packet.Packet)
}

// Stats counts what ReadStreams saw.
type Stats struct {
	Frames      int
	Undecodable int // frames whose headers could not be read
	Fragments   int // IP fragments (not reassembled)
	TCPSegments int
	UDPDatagram int
	Retransmit  int // segments whose bytes had all been delivered already
	Gaps        int
	// Reused counts connections and flows that started on a 4-tuple whose
	// previous connection or flow was over (see Reassembler).
	Reused int
	// Capture is what the file reader found, including damage: a damaged
	// capture is read up to (pcapng: around) the damage, not refused.
	Capture Summary
}

type flowKey struct {
	a, b netip.AddrPort // a < b
	udp  bool
}

type half struct {
	started bool
	next    uint32 // next expected sequence number
	fin     bool
	hasISN  bool   // this side's SYN was seen
	isn     uint32 // its sequence number
	// win is the largest receive window this side advertised (scaled
	// when both SYNs carried a window scale option, RFC 7323 section 2.2),
	// wscale the scale it announced and hasWS whether it did.
	win     uint32
	wscale  uint8
	hasWS   bool
	pending segHeap // out-of-order segments, lowest sequence number first
	pendLen int
	gap     bool // deliver the next bytes with Gap set
}

type pendingSeg struct {
	seq   uint32
	order uint64 // arrival order: of two segments at one seq, the first wins
	data  []byte
	frame int
	time  time.Time
}

// segHeap is a binary min-heap of held segments by sequence number (then
// arrival), so that holding n out-of-order segments costs O(n log n) where
// re-sorting on every insert cost O(n² log n). Sequence numbers compare
// with seqAfter: every held segment starts within 2^31 after the
// direction's next expected byte, where that order is consistent.
type segHeap []pendingSeg

func (h segHeap) less(i, j int) bool {
	if h[i].seq != h[j].seq {
		return seqAfter(h[j].seq, h[i].seq)
	}
	return h[i].order < h[j].order
}

func (h *segHeap) push(s pendingSeg) {
	*h = append(*h, s)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if !a.less(i, p) {
			break
		}
		a[i], a[p] = a[p], a[i]
		i = p
	}
}

// pop removes the first segment (h[0]).
func (h *segHeap) pop() pendingSeg {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a[n] = pendingSeg{} // drop the reference to the data
	a = a[:n]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < n && a.less(l, m) {
			m = l
		}
		if r := l + 1; r < n && a.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
	return top
}

type conn struct {
	id        uint64
	halves    [2]half // indexed by side: 0 = a→b, 1 = b→a
	syn       bool
	initiator netip.AddrPort
	rst       bool      // a RST was seen (either side)
	last      time.Time // time of the last packet
}

// closed reports that the connection is over for both ends: a RST, or a
// FIN from each side.
func (c *conn) closed() bool {
	return c.rst || c.halves[0].fin && c.halves[1].fin
}

// ReadStreams reads the capture at path and calls fn for every piece of
// in-order TCP payload and every UDP datagram. It returns the statistics
// and the first error from reading or from fn. Damage in the file is not
// an error: it is in Stats.Capture, and Stats.String mentions it.
func ReadStreams(path string, opts Options, fn func(*Segment) error) (Stats, error) {
	r := newReassembler(opts, fn)
	sum, err := Read(path, r.frame)
	if err == nil {
		err = r.flush()
	}
	r.stats.Capture = sum
	return r.stats, err
}

// Reassembler is the engine behind ReadStreams, for callers that already
// have frames (e.g. several files merged in time order).
//
// A 4-tuple may carry several connections in one input (a client that
// reconnects from the same port, captures of different days merged into
// one file). As a receiving TCP stack does, the Reassembler starts a new
// connection on a 4-tuple (new Segment.Conn, streams from scratch, held
// bytes of the old one delivered as gaps first) when:
//   - a SYN arrives after the old connection closed (a RST, or a FIN from
//     each side: TIME_WAIT accepts a new SYN, RFC 9293 section 3.6.1 and
//     Linux's tcp_timewait_state_process), or on an open connection
//     with an initial sequence number outside the old connection's
//     receive window (one in the window is what RFC 5961 section 4 answers
//     with a challenge ACK, not a new connection; the same ISN again is a
//     retransmitted SYN);
//   - the old connection has been idle for longer than Options.TCPIdle
//     (open) or Options.TCPClosed (closed), or a UDP flow for longer than
//     Options.UDPIdle: the gateway's flow table has forgotten it by then;
//   - the packet's time is more than clockSlack before the connection's
//     last packet: one capture point's clock does not run backwards, so
//     this is another capture (files concatenated out of time order).
type Reassembler struct {
	opts  Options
	fn    func(*Segment) error
	conns map[flowKey]*conn
	ids   uint64
	pkt   packet.Packet
	seg   Segment
	stats Stats
	// arrivals numbers held segments in arrival order (segHeap ties).
	arrivals uint64
}

// NewReassembler returns a Reassembler that calls fn for each segment.
func NewReassembler(opts Options, fn func(*Segment) error) *Reassembler {
	return newReassembler(opts, fn)
}

func newReassembler(opts Options, fn func(*Segment) error) *Reassembler {
	if opts.MaxBuffered <= 0 {
		opts.MaxBuffered = 1 << 20
	}
	if opts.TCPIdle <= 0 {
		opts.TCPIdle = time.Hour
	}
	if opts.TCPClosed <= 0 {
		opts.TCPClosed = 10 * time.Second
	}
	if opts.UDPIdle <= 0 {
		opts.UDPIdle = 2 * time.Minute
	}
	return &Reassembler{opts: opts, fn: fn, conns: make(map[flowKey]*conn)}
}

// Stats returns the counts so far.
func (r *Reassembler) Stats() Stats { return r.stats }

// Frame feeds one frame.
func (r *Reassembler) Frame(f *Frame) error { return r.frame(f) }

// Flush delivers what is still held at the end of the input, as gaps.
func (r *Reassembler) Flush() error { return r.flush() }

func less(a, b netip.AddrPort) bool {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c < 0
	}
	return a.Port() < b.Port()
}

func (r *Reassembler) frame(f *Frame) error {
	r.stats.Frames++
	p := &r.pkt
	if err := p.Decode(f.Data, f.Link); err != nil {
		r.stats.Undecodable++
		if r.opts.Frames != nil {
			r.opts.Frames(f, p)
		}
		return nil
	}
	if r.opts.Frames != nil {
		r.opts.Frames(f, p)
	}
	if p.Fragment {
		r.stats.Fragments++
		return nil
	}
	if !p.HasL4 || (p.Proto != packet.ProtoTCP && p.Proto != packet.ProtoUDP) {
		return nil
	}
	src, dst := p.SrcAddrPort(), p.DstAddrPort()
	udp := p.Proto == packet.ProtoUDP
	k := flowKey{a: src, b: dst, udp: udp}
	side := 0
	if less(dst, src) {
		k.a, k.b, side = dst, src, 1
	}
	c := r.conns[k]
	if c != nil && r.over(c, p, side, f.Time) {
		if err := r.retire(k, c); err != nil {
			return err
		}
		r.stats.Reused++
		c = nil
	}
	if c == nil {
		r.ids++
		c = &conn{id: r.ids}
		r.conns[k] = c
	}
	c.last = f.Time
	r.seg = Segment{Frame: f.Index, Time: f.Time, Src: src, Dst: dst, Conn: c.id}
	if udp {
		r.stats.UDPDatagram++
		r.seg.Transport = "udp"
		r.seg.Payload = p.Payload
		if len(p.Payload) == 0 {
			return nil
		}
		return r.fn(&r.seg)
	}
	r.stats.TCPSegments++
	r.seg.Transport = "tcp"
	h := &c.halves[side]
	h.window(p, &c.halves[1-side])
	if p.Flags&packet.TCPSyn != 0 {
		if p.Flags&packet.TCPAck == 0 {
			c.syn = true
			c.initiator = src
		}
		if h.started && (h.hasISN && p.Seq == h.isn || p.Flags&packet.TCPAck == 0) {
			// A retransmitted SYN, or a SYN in the window of the open
			// connection (over said it is not a new one): a receiver
			// answers it with an ACK and keeps its stream.
			return nil
		}
		h.hasISN, h.isn = true, p.Seq
		h.wscale, h.hasWS = p.TCPWindowScale(f.Data)
		h.started = true
		h.next = p.Seq + 1
		h.pending, h.pendLen, h.gap = nil, 0, false
		if len(p.Payload) == 0 {
			return nil
		}
	}
	r.seg.SYN = c.syn
	r.seg.Initiator = c.initiator
	// The peer's ACK proves it received bytes of the other direction that
	// the capture may have missed: a hole below the ack will never fill.
	// Those bytes come first: they reached this packet's sender before it
	// sent this packet (and its data).
	if p.Flags&packet.TCPAck != 0 {
		o := &c.halves[1-side]
		if o.started && len(o.pending) > 0 && seqAfter(p.Ack, o.next) && !seqAfter(o.pending[0].seq, p.Ack) {
			// The bytes are the other direction's: they go from dst to src.
			r.seg.Src, r.seg.Dst = dst, src
			err := r.skipHole(o)
			r.seg.Src, r.seg.Dst = src, dst
			if err != nil {
				return err
			}
		}
	}
	if !h.started {
		if len(p.Payload) == 0 {
			return nil // pure ACK before we know the stream
		}
		// Mid-stream pickup: take the first data we see as the start.
		h.started = true
		h.next = p.Seq
		h.gap = true
	}
	seq := p.Seq
	if p.Flags&packet.TCPSyn != 0 {
		seq++
	}
	if err := r.deliver(h, seq, p.Payload, f.Index, f.Time); err != nil {
		return err
	}
	if p.Flags&(packet.TCPFin|packet.TCPRst) != 0 {
		h.fin = true
	}
	if p.Flags&packet.TCPRst != 0 {
		c.rst = true
	}
	return nil
}

// clockSlack is how far back in time a packet may be stamped, against the
// last packet of its connection, and still belong to it: frames of two
// interfaces of one capture may be written slightly out of order.
const clockSlack = 2 * time.Second

// over reports whether packet p, from side, at time t, starts a new
// connection or flow on the 4-tuple of c (see Reassembler).
func (r *Reassembler) over(c *conn, p *packet.Packet, side int, t time.Time) bool {
	idle := t.Sub(c.last)
	if idle < -clockSlack {
		return true
	}
	if p.Proto == packet.ProtoUDP {
		return idle > r.opts.UDPIdle
	}
	closed := c.closed()
	if closed && idle > r.opts.TCPClosed || !closed && idle > r.opts.TCPIdle {
		return true
	}
	h := &c.halves[side]
	if p.Flags&(packet.TCPSyn|packet.TCPAck) != packet.TCPSyn || !h.started {
		return false
	}
	if closed {
		return true
	}
	if h.hasISN && p.Seq == h.isn {
		return false // the same SYN again
	}
	// RCV.NXT ± RCV.WND of the old connection; a receiver that never
	// announced a window (mid-stream, no segment from it yet) is given
	// the largest unscaled one.
	win := max(c.halves[1-side].win, 1<<16-1)
	d := p.Seq - h.next
	return d > win && -d > win
}

// window records the receive window that side h advertises in p (o is the
// other side, whose SYN tells whether scaling is in use).
func (h *half) window(p *packet.Packet, o *half) {
	w := uint32(p.Window)
	if p.Flags&packet.TCPSyn == 0 && h.hasWS && o.hasWS {
		w <<= min(h.wscale, 14)
	}
	h.win = max(h.win, w)
}

// retire ends connection c of key k: bytes it still holds out of order
// are delivered as gaps, as at the end of the input.
func (r *Reassembler) retire(k flowKey, c *conn) error {
	delete(r.conns, k)
	return r.flushConn(k, c)
}

// seqAfter reports a > b in sequence space (RFC 9293 §3.4).
func seqAfter(a, b uint32) bool { return int32(a-b) > 0 }

func (r *Reassembler) deliver(h *half, seq uint32, data []byte, frame int, t time.Time) error {
	if len(data) == 0 {
		return nil
	}
	end := seq + uint32(len(data))
	if !seqAfter(end, h.next) {
		r.stats.Retransmit++
		return nil // all old
	}
	if seqAfter(seq, h.next) {
		// Out of order: hold a copy until the hole fills.
		cp := append([]byte(nil), data...)
		r.arrivals++
		h.pending.push(pendingSeg{seq: seq, order: r.arrivals, data: cp, frame: frame, time: t})
		h.pendLen += len(cp)
		for h.pendLen > r.opts.MaxBuffered && len(h.pending) > 0 {
			if err := r.skipHole(h); err != nil {
				return err
			}
		}
		return nil
	}
	// Overlaps what we have: trim the old part.
	data = data[h.next-seq:]
	if err := r.emit(h, data, frame, t); err != nil {
		return err
	}
	return r.drain(h, frame, t)
}

func (r *Reassembler) emit(h *half, data []byte, frame int, t time.Time) error {
	h.next += uint32(len(data))
	r.seg.Frame, r.seg.Time = frame, t
	r.seg.Payload = data
	r.seg.Gap = h.gap
	if h.gap {
		r.stats.Gaps++
	}
	h.gap = false
	return r.fn(&r.seg)
}

// drain delivers held segments that have become contiguous. They complete
// in the frame that filled the hole.
func (r *Reassembler) drain(h *half, frame int, t time.Time) error {
	for len(h.pending) > 0 {
		ps := h.pending[0]
		if seqAfter(ps.seq, h.next) {
			return nil
		}
		h.pending.pop()
		h.pendLen -= len(ps.data)
		end := ps.seq + uint32(len(ps.data))
		if !seqAfter(end, h.next) {
			continue
		}
		if err := r.emit(h, ps.data[h.next-ps.seq:], frame, t); err != nil {
			return err
		}
	}
	return nil
}

// skipHole declares the bytes before the first held segment lost and
// delivers from there; the delivered bytes keep the frame of the segment
// that carried them.
func (r *Reassembler) skipHole(h *half) error {
	ps := h.pending[0]
	h.next = ps.seq
	h.gap = true
	return r.drain(h, ps.frame, ps.time)
}

func (r *Reassembler) flush() error {
	keys := make([]flowKey, 0, len(r.conns))
	for k, c := range r.conns {
		if len(c.halves[0].pending)+len(c.halves[1].pending) > 0 {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return r.conns[keys[i]].id < r.conns[keys[j]].id })
	for _, k := range keys {
		if err := r.flushConn(k, r.conns[k]); err != nil {
			return err
		}
	}
	return nil
}

// flushConn delivers the held bytes of c, as gaps.
func (r *Reassembler) flushConn(k flowKey, c *conn) error {
	for side := range 2 {
		h := &c.halves[side]
		src, dst := k.a, k.b
		if side == 1 {
			src, dst = dst, src
		}
		for len(h.pending) > 0 {
			r.seg = Segment{Transport: "tcp", Src: src, Dst: dst, Conn: c.id, SYN: c.syn, Initiator: c.initiator}
			if err := r.skipHole(h); err != nil {
				return err
			}
		}
	}
	return nil
}

// String summarises the statistics.
func (s Stats) String() string {
	if w := s.Capture.Warning(); w != "" {
		return s.counts() + "; " + w
	}
	return s.counts()
}

func (s Stats) counts() string {
	c := fmt.Sprintf("%d frames, %d tcp segments, %d udp datagrams, %d undecodable, %d fragments, %d retransmissions, %d gaps",
		s.Frames, s.TCPSegments, s.UDPDatagram, s.Undecodable, s.Fragments, s.Retransmit, s.Gaps)
	if s.Reused > 0 {
		c += fmt.Sprintf(", %d reused 4-tuples", s.Reused)
	}
	return c
}
