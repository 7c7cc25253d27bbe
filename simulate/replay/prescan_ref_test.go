package replay

// The pre-scan as it was before its table of TCP frames became chunks
// prefaulted by a helper goroutine (segTable): the reference
// TestPrescanSameResults compares scanMidstream and scanRepairs with.

import (
	"net/netip"
	"sort"

	"github.com/otgw/otgw/gateway/packet"
)

// refScanMidstream is scanMidstream with every TCP frame in one slice.
func refScanMidstream(paths []string, sp map[uint16]bool) (*midstream, []seg, error) {
	ms := &midstream{at: map[frameRef]*pickup{}, skip: map[frameRef]bool{}}
	var segs []seg
	tr := map[packedKey]*mtrack{}
	others := map[otherKey]struct{}{}
	var p packet.Packet
	err := readMerged(paths, func(f *srcFrame) error {
		// A frame stamped before the newest one read (ms.latest) is
		// checked below when it is a TCP segment; any other is taken as
		// one the engine may have forgotten the flow of (lazyClock).
		back := f.time.Before(ms.latest)
		if ms.earliest.IsZero() || f.time.Before(ms.earliest) {
			ms.earliest = f.time
		}
		if !back {
			ms.latest = f.time
		}
		decoded := p.Decode(f.data, f.link) == nil
		if back && (!decoded || p.Proto != packet.ProtoTCP || p.Fragment || !p.HasL4) {
			ms.backward = true
		}
		if !decoded {
			return nil
		}
		if p.Proto != packet.ProtoTCP {
			if k, ok := otherKeyOf(&p); ok {
				if _, seen := others[k]; !seen {
					others[k] = struct{}{}
				}
			}
			return nil
		}
		if p.Fragment {
			// The engine drops every IP fragment: the bytes they carry
			// never reach the stream, whatever the capture holds.
			ms.frags = append(ms.frags, fragMark{pos: len(segs), src: p.Src, dst: p.Dst})
			return nil
		}
		if !p.HasL4 {
			return nil
		}
		k, fromA := keyOf(&p)
		pk := packKey(k)
		ref := frameRef{int32(f.file), int32(f.index)}
		t := tr[pk]
		if back && t != nil && !t.last.Add(minTimeout).After(ms.latest) {
			// Stamped back into a connection idle for as long as the
			// shortest timeout by the newest stamp: the engine may
			// have forgotten it by then.
			ms.backward = true
		}
		if t != nil && t.over(&p, f.time) {
			// Another connection on the same addresses: it is picked up
			// (or not) on its own, as the engine starts a new flow.
			t.fallback(ms)
			t = nil
		}
		if t == nil {
			t = &mtrack{id: int32(len(ms.ends))}
			tr[pk] = t
			ms.ends = append(ms.ends, k)
			ms.load = append(ms.load, connLoad{flows: 1})
		}
		segs = append(segs, segOf(ref, &p, t.id, fromA))
		ld := &ms.load[t.id]
		if fromA {
			ld.pay[0] += int64(len(p.Payload))
		} else {
			ld.pay[1] += int64(len(p.Payload))
		}
		if t.seen && p.Flags&(packet.TCPSyn|packet.TCPAck) == packet.TCPSyn {
			ld.flows++
		}
		t.last = f.time
		switch {
		case p.Flags&packet.TCPRst != 0:
			t.rst = true
		case p.Flags&packet.TCPFin != 0 && fromA:
			t.fin[0] = true
		case p.Flags&packet.TCPFin != 0:
			t.fin[1] = true
		}
		if !t.seen {
			t.seen = true
			if p.Flags&(packet.TCPSyn|packet.TCPAck) == packet.TCPSyn {
				t.decided = true // seen from its SYN
				return nil
			}
			if p.Flags&packet.TCPRst != 0 {
				t.decided = true // a lone reset: nothing to pick up
				return nil
			}
			t.mid = true
		}
		if t.decided {
			return nil
		}
		src := p.SrcAddrPort()
		client, server, known := guessServer(sp, k.a, k.b)
		if !known && t.client.IsValid() {
			client, server = t.client, t.server
		} else if !known && len(p.Payload) > 0 {
			// Ports do not tell: the first sender of data is the client.
			client, server = src, p.DstAddrPort()
			t.client, t.server = client, server
		}
		if p.Flags&packet.TCPAck != 0 && p.Flags&(packet.TCPSyn|packet.TCPRst) == 0 {
			if src == client && len(p.Payload) > 0 {
				ms.at[ref] = &pickup{client: client, server: server, cseq: p.Seq, sseq: p.Ack}
				for _, r := range t.frames {
					ms.skip[r] = true
				}
				if t.fb != nil {
					ms.skip[t.fbRef] = true
				}
				t.decided, t.frames, t.fb = true, nil, nil
				return nil
			}
			if t.fb == nil {
				pk := &pickup{client: client, server: server}
				if src == client {
					pk.cseq, pk.sseq = p.Seq, p.Ack
				} else {
					pk.sseq, pk.cseq = p.Seq, p.Ack
				}
				t.fb, t.fbRef = pk, ref
			}
		}
		if len(t.frames) < 1<<16 && (t.fb == nil || ref != t.fbRef) {
			t.frames = append(t.frames, ref)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, t := range tr {
		t.fallback(ms)
	}
	ms.tcpKeys, ms.otherKeys = len(tr), len(others)
	return ms, segs, nil
}

// refAckedBy and refScanRepairs are ackedBy and scanRepairs over one slice.
// ackedBy returns the index of the segment, among the 8 after segs[i],
// after which the peer direction o has sent every byte segs[i]
// acknowledges; -1 when none does.
func refAckedBy(segs []seg, i int, o *dirState) int {
	s := &segs[i]
	valid, nxt := o.valid, o.nxt
	for j := i + 1; j < len(segs) && j <= i+8; j++ {
		x := &segs[j]
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
func refScanRepairs(ms *midstream, all0 []seg) *repairs {
	segs := all0[:0]                  // filtered in place
	orig := make([]int, 0, len(all0)) // position of segs[i] in ms.segs, to place the fragments
	for i, sg := range all0 {
		if !ms.skip[sg.ref] {
			segs = append(segs, sg)
			orig = append(orig, i)
		}
	}
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
	for i := range segs {
		dirs[segs[i].dir].n++
	}
	all := make([]int32, len(segs))
	at := 0
	for i := range dirs {
		dirs[i].segs = all[at : at : at+dirs[i].n]
		at += dirs[i].n
	}
	for i := range segs {
		d := &dirs[segs[i].dir]
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
			o := &segs[j]
			if o.n > 0 && !seqGT(o.seq, seq) && seqLT(seq, o.seq+o.n) {
				return true
			}
		}
		return false
	}
	const syn, ack, rst = packet.TCPSyn, packet.TCPAck, packet.TCPRst
	for i := range segs {
		for ; nextFrag < len(ms.frags) && ms.frags[nextFrag].pos <= orig[i]; nextFrag++ {
			fragmented[addrPair{ms.frags[nextFrag].src, ms.frags[nextFrag].dst}] = true
		}
		s := &segs[i]
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
			if j := refAckedBy(segs, i, o); j >= 0 {
				x := segs[j].ref
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
