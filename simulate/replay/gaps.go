package replay

import (
	"net/netip"
	"sort"

	"github.com/otgw/otgw/gateway/packet"
)

// ---- capture holes ----
//
// A capture is not the wire: a tap or a busy capture host loses frames, and
// merged captures from two interfaces may put a client's ACK before the
// SYN-ACK it acknowledges. The gateway in place would have seen the lost
// bytes, in order; fed the capture as it is, its normaliser refuses what
// follows a hole (out_of_order, out_of_window) and the ACK before its
// SYN-ACK (bad_tcp). Unless Options.StrictMidstream is set, a pre-pass finds
//   - holes: bytes of one direction that no frame of the capture carries,
//     although later segments or the peer's acknowledgements go past them.
//     At the first frame that goes past such a hole the harness tells the
//     engine (Engine.CaptureGap), which continues after it as after a
//     mid-stream pickup. A hole that a later frame fills is no capture
//     loss (out-of-order delivery, or an evasion): it is left to the engine.
//     A hole in a direction after an IP fragment of TCP from the same
//     source to the same destination is not repaired either: the engine
//     drops every fragment (they could hide a PDU from the framer), so the
//     bytes they carried are missing on the wire too, and whatever the
//     receiver sends past them (the echo of a write hidden in fragments)
//     must meet the engine as it is. Report.EngineDropHoles counts them.
//   - a pure ACK captured before the segment it acknowledges (a client's
//     handshake ACK before the SYN-ACK, an ACK before the data): the
//     harness feeds it right after that segment when it follows within a
//     few frames.

// seg is one TCP frame of the pre-pass.
type seg struct {
	ref      frameRef
	dir      int32 // 2*connection id (midstream.ends) + 0 from ends[id].a, 1 from .b; dir^1 is the peer
	flags    uint8
	seq, ack uint32
	n        uint32 // sequence space used: payload, +1 for SYN and FIN
}

// fragMark is an IP fragment of a TCP packet from src to dst, captured
// before segment pos of the pre-pass.
type fragMark struct {
	pos      int
	src, dst netip.Addr
}

// holeAt is a hole the engine learns of before feeding a frame.
type holeAt struct {
	src, dst netip.AddrPort
	to       uint32
}

// repairs is the result of the pre-pass.
type repairs struct {
	holes map[frameRef][]holeAt
	// engineHoles counts holes left alone because frames the engine drops
	// (IP fragments) explain them.
	engineHoles int
	deferred    map[frameRef]bool // frames fed later, after the frame that lists them in after
	after       map[frameRef][]frameRef
}

type dirState struct {
	valid bool
	nxt   uint32
	segs  []int32 // indexes into the pass's segments sent in this direction
	n     int     // len(segs) once filled (sizes segs)
}

func seqLT(a, b uint32) bool { return int32(a-b) < 0 }
func seqGT(a, b uint32) bool { return int32(a-b) > 0 }

func segOf(ref frameRef, p *packet.Packet, conn int32, fromA bool) seg {
	n := uint32(len(p.Payload))
	if p.Flags&packet.TCPSyn != 0 {
		n++
	}
	if p.Flags&packet.TCPFin != 0 {
		n++
	}
	d := 2 * conn
	if !fromA {
		d++
	}
	return seg{ref: ref, dir: d, flags: p.Flags, seq: p.Seq, ack: p.Ack, n: n}
}

// ackedBy returns the index of the segment, among the 8 after segs[i],
// after which the peer direction o has sent every byte segs[i]
// acknowledges; -1 when none does.
func ackedBy(segs *segTable, i int, o *dirState) int {
	s := segs.at(i)
	valid, nxt := o.valid, o.nxt
	for j := i + 1; j < segs.n && j <= i+8; j++ {
		x := segs.at(j)
		if x.dir != s.dir^1 {
			continue
		}
		switch {
		case x.flags&packet.TCPSyn != 0:
			valid, nxt = true, x.seq+1
		case valid && x.n > 0 && !seqGT(x.seq, nxt) && seqGT(x.seq+x.n, nxt):
			nxt = x.seq + x.n
		}
		if valid && !seqLT(nxt, s.ack) {
			return j
		}
	}
	return -1
}

// scanRepairs runs the pre-pass over the TCP frames scanMidstream
// collected, leaving out those the harness skips (before a mid-stream
// pickup); ms.at gives the pickups.
func scanRepairs(ms *midstream) *repairs {
	// Filtered in place; orig[i] is the position of segs.at(i) before,
	// to place the fragments (needed only when there are fragments).
	segs := ms.segs
	defer segs.release() // the last use of the table and its dirArray
	var orig []int
	if len(ms.frags) > 0 {
		orig = make([]int, 0, segs.n)
	}
	kept := 0
	for i := 0; i < segs.n; i++ {
		sg := segs.at(i)
		if len(ms.skip) > 0 && ms.skip[sg.ref] {
			continue
		}
		if kept != i {
			*segs.at(kept) = *sg
		}
		if orig != nil {
			orig = append(orig, i)
		}
		kept++
	}
	segs.n = kept
	ms.segs = nil
	type addrPair struct{ src, dst netip.Addr }
	fragmented := map[addrPair]bool{} // a fragment from src to dst came before the current segment
	nextFrag := 0
	dropped := func(dir int32) bool {
		src, dst := ms.ends[dir/2].a, ms.ends[dir/2].b
		if dir%2 == 1 {
			src, dst = dst, src
		}
		return fragmented[addrPair{src.Addr(), dst.Addr()}]
	}
	rp := &repairs{holes: map[frameRef][]holeAt{}, deferred: map[frameRef]bool{}, after: map[frameRef][]frameRef{}}
	// Each direction's segment list is a window of one array sized once
	// (appending to 2×connections growing slices was 10% of a replay).
	dirs := make([]dirState, 2*len(ms.ends))
	for i := 0; i < segs.n; i++ {
		dirs[segs.at(i).dir].n++
	}
	all := segs.dirArray(segs.n)
	at := 0
	for i := range dirs {
		dirs[i].segs = all[at : at : at+dirs[i].n]
		at += dirs[i].n
	}
	for i := 0; i < segs.n; i++ {
		d := &dirs[segs.at(i).dir]
		d.segs = append(d.segs, int32(i))
	}
	ends := func(dir int32) (src, dst netip.AddrPort) {
		k := ms.ends[dir/2]
		if dir%2 == 0 {
			return k.a, k.b
		}
		return k.b, k.a
	}
	// filledLater reports whether a segment of d after frame i covers seq.
	filledLater := func(d *dirState, i int, seq uint32) bool {
		after := sort.Search(len(d.segs), func(k int) bool { return int(d.segs[k]) > i })
		for _, j := range d.segs[after:] {
			o := segs.at(int(j))
			if o.n > 0 && !seqGT(o.seq, seq) && seqLT(seq, o.seq+o.n) {
				return true
			}
		}
		return false
	}
	const syn, ack, rst = packet.TCPSyn, packet.TCPAck, packet.TCPRst
	for i := 0; i < segs.n; i++ {
		for ; nextFrag < len(ms.frags) && ms.frags[nextFrag].pos <= orig[i]; nextFrag++ {
			fragmented[addrPair{ms.frags[nextFrag].src, ms.frags[nextFrag].dst}] = true
		}
		s := segs.at(i)
		d, o := &dirs[s.dir], &dirs[s.dir^1]
		if pk := ms.at[s.ref]; pk != nil {
			// The harness synthesises the handshake just before.
			c, sv := d, o
			if src, _ := ends(s.dir); src != pk.client {
				c, sv = o, d
			}
			c.valid, c.nxt = true, pk.cseq
			sv.valid, sv.nxt = true, pk.sseq
		}
		if s.flags&rst != 0 {
			continue
		}
		if s.flags&syn != 0 {
			d.valid, d.nxt = true, s.seq+1
			continue
		}
		// A pure ACK captured before the segment it acknowledges (the
		// SYN-ACK of the handshake, or data): feed it after that segment
		// when it follows within a few frames.
		if s.flags&ack != 0 && s.n == 0 && d.valid && (!o.valid || seqGT(s.ack, o.nxt)) {
			if j := ackedBy(segs, i, o); j >= 0 {
				x := segs.at(j).ref
				rp.deferred[s.ref] = true
				rp.after[x] = append(rp.after[x], s.ref)
				continue
			}
		}
		if !d.valid {
			d.valid, d.nxt = true, s.seq // first frame of a direction the capture joins
		}
		var hs []holeAt
		if s.n > 0 && seqGT(s.seq, d.nxt) && !filledLater(d, i, d.nxt) {
			if dropped(s.dir) {
				rp.engineHoles++
			} else {
				src, dst := ends(s.dir)
				hs = append(hs, holeAt{src, dst, s.seq})
			}
			d.nxt = s.seq
		}
		if s.n > 0 && seqGT(s.seq+s.n, d.nxt) && !seqGT(s.seq, d.nxt) {
			d.nxt = s.seq + s.n
		}
		if s.flags&ack != 0 && o.valid && seqGT(s.ack, o.nxt) && !filledLater(o, i, o.nxt) {
			if dropped(s.dir ^ 1) {
				rp.engineHoles++
			} else {
				src, dst := ends(s.dir ^ 1)
				hs = append(hs, holeAt{src, dst, s.ack})
			}
			o.nxt = s.ack
		}
		if hs != nil {
			rp.holes[s.ref] = hs
		}
	}
	return rp
}

// frameMarks flags, per file and frame index, the frames the pre-passes
// name (pickups, skipped, deferred, holes before, deferred frames after),
// so that the frames they do not name, nearly all, cost no map lookup.
type frameMarks [][]uint8

// Frame marks.
const (
	markSkip     = 1 << iota // midstream.skip
	markPickup               // midstream.at
	markDeferred             // repairs.deferred
	markHoles                // repairs.holes
	markAfter                // repairs.after
)

func newFrameMarks(ms *midstream, rp *repairs) frameMarks {
	var fm frameMarks
	set := func(ref frameRef, m uint8) {
		f, i := int(ref.file), int(ref.index)
		if f < 0 || i < 0 {
			return
		}
		for len(fm) <= f {
			fm = append(fm, nil)
		}
		if n := len(fm[f]); n <= i {
			fm[f] = append(fm[f], make([]uint8, i+1-n)...)
		}
		fm[f][i] |= m
	}
	for ref, ok := range ms.skip {
		if ok {
			set(ref, markSkip)
		}
	}
	for ref := range ms.at {
		set(ref, markPickup)
	}
	for ref, ok := range rp.deferred {
		if ok {
			set(ref, markDeferred)
		}
	}
	for ref := range rp.holes {
		set(ref, markHoles)
	}
	for ref := range rp.after {
		set(ref, markAfter)
	}
	return fm
}

// of returns the marks of frame ref.
func (fm frameMarks) of(ref frameRef) uint8 {
	if f, i := int(ref.file), int(ref.index); f >= 0 && f < len(fm) && i >= 0 && i < len(fm[f]) {
		return fm[f][i]
	}
	return 0
}
