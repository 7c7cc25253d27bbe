package replay

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
)

// srcFrame is one frame of one input file, in merged time order.
type srcFrame struct {
	file  int
	index int // 1-based within its file
	time  time.Time
	link  packet.LinkType
	data  []byte // valid only during the callback
	off   int64  // where data is in the file (capture.Frame.Offset)
}

// readMerged calls fn for every frame of every file in timestamp order
// (ties keep file order, then frame order). One file is read directly;
// several are read by one goroutine each and merged. A damaged capture is
// read up to (pcapng: around) the damage, as tshark reads it; readMerged
// does not report the damage (see readCaptures).
func readMerged(paths []string, fn func(*srcFrame) error) error {
	return readCaptures(paths, nil, fn)
}

// readCaptures is readMerged that calls damaged, when not nil, with the
// summary of each damaged capture, on the caller's goroutine.
func readCaptures(paths []string, damaged func(path string, s capture.Summary), fn func(*srcFrame) error) error {
	if len(paths) == 1 {
		var sf srcFrame
		s, err := capture.Read(paths[0], func(f *capture.Frame) error {
			sf.index, sf.time, sf.link, sf.data, sf.off = f.Index, f.Time, f.Link, f.Data, f.Offset
			return fn(&sf)
		})
		if err == nil && s.Damaged > 0 && damaged != nil {
			damaged(paths[0], s)
		}
		return err
	}
	type item struct {
		sf  srcFrame
		err error
		eof bool
		sum capture.Summary
	}
	done := make(chan struct{})
	defer close(done)
	chans := make([]chan item, len(paths))
	for i, p := range paths {
		ch := make(chan item, 256)
		chans[i] = ch
		go func(i int, p string) {
			sum, err := capture.Read(p, func(f *capture.Frame) error {
				it := item{sf: srcFrame{file: i, index: f.Index, time: f.Time, link: f.Link, data: append([]byte(nil), f.Data...), off: f.Offset}}
				select {
				case ch <- it:
					return nil
				case <-done:
					return errStop
				}
			})
			if err == errStop {
				return
			}
			select {
			case ch <- item{err: err, eof: true, sum: sum}:
			case <-done:
			}
		}(i, p)
	}
	h := &frameHeap{}
	next := func(i int) error {
		it := <-chans[i]
		if it.eof {
			if it.err == nil && it.sum.Damaged > 0 && damaged != nil {
				damaged(paths[i], it.sum)
			}
			return it.err
		}
		heap.Push(h, it.sf)
		return nil
	}
	for i := range chans {
		if err := next(i); err != nil {
			return err
		}
	}
	for h.Len() > 0 {
		sf := heap.Pop(h).(srcFrame)
		if err := fn(&sf); err != nil {
			return err
		}
		if err := next(sf.file); err != nil {
			return err
		}
	}
	return nil
}

var errStop = fmt.Errorf("replay: stopped")

// addDamage records a damaged capture (readCaptures callback).
func (rep *Report) addDamage(path string, s capture.Summary) {
	rep.CaptureDamage = append(rep.CaptureDamage, filepath.Base(path)+": "+s.Warning())
}

type frameHeap []srcFrame

func (h frameHeap) Len() int { return len(h) }
func (h frameHeap) Less(i, j int) bool {
	if !h[i].time.Equal(h[j].time) {
		return h[i].time.Before(h[j].time)
	}
	if h[i].file != h[j].file {
		return h[i].file < h[j].file
	}
	return h[i].index < h[j].index
}
func (h frameHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *frameHeap) Push(x any)   { *h = append(*h, x.(srcFrame)) }
func (h *frameHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// toEthernet returns the frame as Ethernet in buf: Ethernet frames are
// copied, IP frames of other link types get a synthetic header whose MACs
// are derived from the IP addresses (stable, locally administered). It
// returns nil for frames that cannot be decoded or carry no IP on a
// non-Ethernet link.
func toEthernet(buf []byte, link packet.LinkType, data []byte, p *packet.Packet) []byte {
	if link == packet.LinkEthernet {
		return append(buf[:0], data...)
	}
	if err := p.Decode(data, link); err != nil || p.IPVersion == 0 {
		return nil
	}
	buf = buf[:0]
	d, s := macFor(p.Dst), macFor(p.Src)
	buf = append(buf, d[:]...)
	buf = append(buf, s[:]...)
	et := packet.EtherTypeIPv4
	if p.IPVersion == 6 {
		et = packet.EtherTypeIPv6
	}
	buf = binary.BigEndian.AppendUint16(buf, et)
	return append(buf, data[p.L3Off:]...)
}

// macFor derives a locally administered unicast MAC from an address.
func macFor(a netip.Addr) [6]byte {
	h := fnv.New32a()
	b := a.As16()
	h.Write(b[:])
	s := h.Sum32()
	return [6]byte{0x02, 0x00, byte(s >> 24), byte(s >> 16), byte(s >> 8), byte(s)}
}

// sides maps addresses to the bridge port their zone sits behind.
type sides struct {
	prefixes []sidePrefix // most specific first
	assets   map[netip.Addr]gateway.PortID
	macs     map[[6]byte]gateway.PortID // learned from IP frames, for non-IP frames
	// seen caches entries of macs (by the MAC's last bytes), so that a
	// frame whose source MAC is known as learned costs no map look-up.
	seen [256]macSeen
}

// macSeen is an entry of sides.macs: macs[mac] == in.
type macSeen struct {
	mac [6]byte
	in  gateway.PortID
	ok  bool
}

type sidePrefix struct {
	p    netip.Prefix
	port gateway.PortID
}

func portOf(name string) (gateway.PortID, bool) {
	switch strings.ToLower(name) {
	case "north":
		return gateway.North, true
	case "south":
		return gateway.South, true
	}
	return 0, false
}

func newSides(pol *rules.Policy) *sides {
	s := &sides{assets: map[netip.Addr]gateway.PortID{}, macs: map[[6]byte]gateway.PortID{}}
	zport := map[string]gateway.PortID{}
	for _, z := range pol.Zones {
		port, ok := portOf(z.Port)
		if !ok {
			continue
		}
		zport[z.Name] = port
		for _, n := range z.Networks {
			if pf, err := netip.ParsePrefix(n); err == nil {
				s.prefixes = append(s.prefixes, sidePrefix{pf.Masked(), port})
			} else if a, err := netip.ParseAddr(n); err == nil {
				s.prefixes = append(s.prefixes, sidePrefix{netip.PrefixFrom(a, a.BitLen()), port})
			}
		}
	}
	sort.SliceStable(s.prefixes, func(i, j int) bool { return s.prefixes[i].p.Bits() > s.prefixes[j].p.Bits() })
	for _, a := range pol.Assets {
		port, ok := zport[a.Zone]
		if !ok {
			continue
		}
		if ip, err := netip.ParseAddr(a.IP); err == nil {
			s.assets[ip.Unmap()] = port
		}
	}
	return s
}

func (s *sides) of(a netip.Addr) (gateway.PortID, bool) {
	a = a.Unmap()
	if p, ok := s.assets[a]; ok {
		return p, true
	}
	for _, sp := range s.prefixes {
		if sp.p.Contains(a) {
			return sp.port, true
		}
	}
	return 0, false
}

// ingress picks the port a decoded Ethernet frame enters by.
func (s *sides) ingress(p *packet.Packet) gateway.PortID {
	if p.IPVersion != 0 {
		in, ok := s.of(p.Src)
		if !ok {
			if out, ok2 := s.of(p.Dst); ok2 {
				in, ok = out.Other(), true
			}
		}
		if ok && p.HasMAC {
			c := &s.seen[p.SrcMAC[3]^p.SrcMAC[4]^p.SrcMAC[5]]
			if c.ok && c.mac == p.SrcMAC && c.in == in {
				return in // s.macs has it
			}
			old, seen := s.macs[p.SrcMAC]
			if !seen && len(s.macs) < 1<<16 || seen && old != in {
				s.macs[p.SrcMAC] = in
				seen, old = true, in
			}
			if seen && old == in {
				*c = macSeen{mac: p.SrcMAC, in: in, ok: true}
			}
		}
		return in
	}
	if p.HasMAC {
		if in, ok := s.macs[p.SrcMAC]; ok {
			return in
		}
		if out, ok := s.macs[p.DstMAC]; ok {
			return out.Other()
		}
	}
	return gateway.North
}

// ---- mid-stream pickup ----

// flowKey is a direction-independent TCP connection key.
type flowKey struct{ a, b netip.AddrPort }

func keyOf(p *packet.Packet) (flowKey, bool) {
	s, d := p.SrcAddrPort(), p.DstAddrPort()
	if c := s.Addr().Compare(d.Addr()); c < 0 || (c == 0 && s.Port() <= d.Port()) {
		return flowKey{s, d}, true
	}
	return flowKey{d, s}, false
}

type frameRef struct{ file, index int32 } // int32: the pre-pass keeps one per TCP frame (seg)

// pickup is where the harness starts a connection the capture joined
// mid-stream.
type pickup struct {
	client, server netip.AddrPort
	cseq, sseq     uint32 // next sequence number of each side at the pickup frame
}

// midstream is the result of the pre-pass.
type midstream struct {
	at   map[frameRef]*pickup // pickup frame -> handshake to inject before it
	skip map[frameRef]bool    // frames before the pickup of their connection
	segs *segTable            // every TCP frame, for scanRepairs
	// frags are the IP fragments of TCP packets, by position among segs:
	// the engine drops them, so a hole after one is no capture loss.
	frags []fragMark
	ends  []flowKey // connections by mtrack.id
	// Distinct TCP endpoint pairs, and UDP pairs and ICMP echo flows: the
	// most flows the engine's table holds at once (shardable).
	tcpKeys, otherKeys int
	// load is, per connection (by mtrack.id), what shardable's memory
	// bound reads of it.
	load []connLoad
	// backward: a frame is stamped before the newest one read before it
	// and is not a TCP segment of a connection whose previous segment is
	// less than minTimeout older than that newest one; earliest and
	// latest are the first and last stamps (the lazy shadow's clock,
	// lazyClock).
	backward         bool
	earliest, latest time.Time
}

// connLoad is what the engine may be asked to buffer for one connection:
// the TCP payload bytes each end sent (pay[0] from ends[id].a, pay[1]
// from .b; every frame, retransmissions included) and how many flows the
// engine may open for it (1, plus one per SYN after its first frame).
type connLoad struct {
	pay   [2]int64
	flows int64
}

type mtrack struct {
	id             int32 // index in midstream.ends
	seen           bool
	client, server netip.AddrPort // chosen from the first data sender when ports do not tell
	mid            bool
	decided        bool
	frames         []frameRef // frames seen before the pickup
	// first ACK-bearing frame, the fallback pickup when the client never sends data
	fb    *pickup
	fbRef frameRef
	// The connection's end, for over: time of its last frame, a RST seen,
	// a FIN seen from each end (by flowKey side).
	last time.Time
	rst  bool
	fin  [2]bool
}

// Idle times after which the engine has forgotten a connection
// (gateway.Config defaults): open, and closed by a RST or both FINs.
const (
	tcpIdle   = time.Hour
	tcpClosed = 10 * time.Second
)

// over reports whether TCP packet p at time at starts a new connection on
// the addresses of t, as the engine starts a new flow: t's connection is
// idle past the engine's timeout, at's clock runs back past clockBack
// (another capture), or p is a SYN after t's connection closed.
func (t *mtrack) over(p *packet.Packet, at time.Time) bool {
	idle := at.Sub(t.last)
	closed := t.rst || t.fin[0] && t.fin[1]
	switch {
	case idle < -clockBack:
		return true
	case closed && (idle > tcpClosed || p.Flags&(packet.TCPSyn|packet.TCPAck) == packet.TCPSyn):
		return true
	}
	return idle > tcpIdle
}

// serverPorts returns the ports a policy names for servers, to tell the
// two ends of a connection apart when no SYN was seen.
func serverPorts(pol *rules.Policy) map[uint16]bool {
	m := map[uint16]bool{502: true, 20000: true, 4840: true}
	add := func(list []string) {
		for _, s := range list {
			lo, hi, _ := strings.Cut(s, "-")
			a, err1 := strconv.Atoi(strings.TrimSpace(lo))
			b := a
			if hi != "" {
				b, _ = strconv.Atoi(strings.TrimSpace(hi))
			}
			if err1 != nil || b-a > 64 || a <= 0 || b > 65535 {
				continue
			}
			for v := a; v <= b; v++ {
				m[uint16(v)] = true
			}
		}
	}
	for _, c := range pol.Conduits {
		for _, r := range c.Rules {
			switch {
			case r.Modbus != nil:
				add(r.Modbus.Ports)
			case r.DNP3 != nil:
				add(r.DNP3.Ports)
			case r.OPCUA != nil:
				add(r.OPCUA.Ports)
			}
		}
	}
	return m
}

// guessServer tells client from server by port: a server port of the
// policy's inspected protocols, else a port below 1024; ok is false when
// the ports do not tell (the caller then takes the first sender of data).
func guessServer(sp map[uint16]bool, a, b netip.AddrPort) (client, server netip.AddrPort, ok bool) {
	ok = true
	switch {
	case sp[b.Port()] && !sp[a.Port()]:
		return a, b, true
	case sp[a.Port()] && !sp[b.Port()]:
		return b, a, true
	case b.Port() < 1024 && a.Port() >= 1024:
		return a, b, true
	case a.Port() < 1024 && b.Port() >= 1024:
		return b, a, true
	}
	return a, b, false
}

// segsHint sizes midstream.segs from the captures' sizes (a TCP frame
// takes at least minTCPRecord bytes of a file): the chunks of the table
// prefaulted ahead of the scan (segTable). The hint is capped at
// maxSegsHint; past it chunks are allocated as the scan needs them.
func segsHint(paths []string) int {
	const minTCPRecord, maxSegsHint = 16 + 14 + 20 + 20, 1 << 21
	var n int64
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size() / minTCPRecord
		}
	}
	return int(min(n, maxSegsHint))
}

// segTable is the pre-pass's table of TCP frames, in chunks of
// 1<<segShift segs that never move. Writing fresh memory first costs a
// page fault per 4 KiB page, and on the VMs replay was measured on (a
// first write costs ~4 ms per MiB) that was half of the pre-scan, on the
// one goroutine everything waits for while the other core idles: so a
// helper goroutine (prefault) allocates and writes the chunks ahead of the
// scan, and the array scanRepairs sorts the segments by direction in.
// Both are carved, where the platform allows, from memory mapped with
// huge pages (mapHuge: 16 MiB of segments for the 600k-frame benchmark
// capture fault 8 times instead of 4,000); release unmaps it once
// scanRepairs is done, or the collector once the table is unreachable.
type segTable struct {
	chunks [][]seg
	n      int
	fresh  chan []seg   // chunks prefaulted ahead
	final  chan int     // the scan's last n, once it ends (stop)
	dirs   chan []int32 // an array of final entries for scanRepairs
	mem    *hugeMem
	carved atomic.Int64 // segs of mem.segs handed out (carve)
}

// hugeMem is the mapped memory of a segTable (nil slices: none).
type hugeMem struct {
	segs, dirs []byte
	nsegs      int // segs that fit segs
	freed      atomic.Bool
}

func (m *hugeMem) free() {
	if m.freed.CompareAndSwap(false, true) {
		unmapHuge(m.segs)
		unmapHuge(m.dirs)
	}
}

// release unmaps the table's memory: nothing of it (chunks, the
// dirArray) may be used after.
func (t *segTable) release() {
	t.chunks = nil
	t.mem.free()
}

// segShift is log2 of a segTable chunk's length (a variable: tests make
// chunks tiny).
var segShift = 13

// newSegTable returns a table whose chunks, up to hint segs, a helper
// goroutine prefaults until stop is called.
func newSegTable(hint int) *segTable {
	t := &segTable{fresh: make(chan []seg, 2), final: make(chan int, 1), dirs: make(chan []int32, 1), mem: &hugeMem{}}
	size := 1 << segShift
	chunks := (hint + size - 1) / size
	t.mem.segs = mapHuge(chunks * size * int(unsafe.Sizeof(seg{})))
	t.mem.nsegs = len(t.mem.segs) / int(unsafe.Sizeof(seg{}))
	t.mem.dirs = mapHuge(hint * 4)
	runtime.AddCleanup(t, (*hugeMem).free, t.mem)
	go t.prefault(hint)
	return t
}

// prefault allocates and writes the chunks of up to hint segs, handing
// each over as soon as it is ready, until the scan ends; then an int32
// array of as many entries as the scan found segs.
func (t *segTable) prefault(hint int) {
	const page = 4096
	per := page / int(unsafe.Sizeof(seg{}))
	size := 1 << segShift
	n := -1
	for made := 0; made < hint && n < 0; made += size {
		c := t.carve()
		for i := 0; i < len(c); i += per {
			c[i].n = 1 // any write: the page is the helper's to fault
		}
		select {
		case t.fresh <- c:
		case n = <-t.final:
		}
	}
	if n < 0 {
		n = <-t.final
	}
	var d []int32
	if m := t.mem.dirs; len(m) >= 4*n {
		d = unsafe.Slice((*int32)(unsafe.Pointer(unsafe.SliceData(m))), n)
	} else {
		d = make([]int32, n)
	}
	for i := 0; i < len(d); i += page / 4 {
		d[i] = 1
	}
	t.dirs <- d
}

// stop tells the helper the scan is over.
func (t *segTable) stop() { t.final <- t.n }

// carve returns a new chunk: the next of the mapped memory, or one of
// the heap past it. The helper and the scan both carve.
func (t *segTable) carve() []seg {
	size := 1 << segShift
	if m := t.mem.segs; m != nil {
		if at := int(t.carved.Add(int64(size))) - size; at+size <= t.mem.nsegs {
			arena := unsafe.Slice((*seg)(unsafe.Pointer(unsafe.SliceData(m))), t.mem.nsegs)
			return arena[at : at+size : at+size]
		}
	}
	return make([]seg, size)
}

func (t *segTable) add(s seg) {
	i := t.n & (1<<segShift - 1)
	if i == 0 {
		var c []seg
		select {
		case c = <-t.fresh:
		default:
			c = t.carve() // the helper is behind
		}
		t.chunks = append(t.chunks, c)
	}
	t.chunks[t.n>>segShift][i] = s
	t.n++
}

func (t *segTable) at(i int) *seg { return &t.chunks[i>>segShift][i&(1<<segShift-1)] }

// dirArray returns an int32 array of n entries (n at most the table's
// length), the helper's once it is ready: after stop, the helper makes
// nothing else, so waiting for it costs no more than making it here.
func (t *segTable) dirArray(n int) []int32 {
	d := <-t.dirs
	clear(d[:n])
	return d[:n]
}

// scanMidstream finds the TCP connections the captures join mid-stream
// and where to pick each up.
func scanMidstream(paths []string, sp map[uint16]bool) (*midstream, error) {
	ms := &midstream{at: map[frameRef]*pickup{}, skip: map[frameRef]bool{}, segs: newSegTable(segsHint(paths))}
	tr := map[packedKey]*mtrack{}
	var lastKey packedKey // the key of the last TCP frame and its tr entry
	var lastT *mtrack
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
			ms.frags = append(ms.frags, fragMark{pos: ms.segs.n, src: p.Src, dst: p.Dst})
			return nil
		}
		if !p.HasL4 {
			return nil
		}
		pk, fromA := packedKeyOf(&p)
		ref := frameRef{int32(f.file), int32(f.index)}
		var t *mtrack
		if lastT != nil && lastKey == pk {
			t = lastT // a request's answer comes next: tr[pk]
		} else {
			t = tr[pk]
		}
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
			k, _ := keyOf(&p)
			ms.ends = append(ms.ends, k)
			ms.load = append(ms.load, connLoad{flows: 1})
		}
		lastKey, lastT = pk, t
		ms.segs.add(segOf(ref, &p, t.id, fromA))
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
		k, _ := keyOf(&p)
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
	ms.segs.stop()
	if err != nil {
		return nil, err
	}
	for _, t := range tr {
		t.fallback(ms)
	}
	ms.tcpKeys, ms.otherKeys = len(tr), len(others)
	return ms, nil
}

// otherKey is a UDP flow or an ICMP echo flow (identifier in the ports).
type otherKey struct {
	k     flowKey
	proto uint8
}

// otherKeyOf is the flow key of a UDP datagram or ICMP echo (either
// request), as the engine's table keeps them.
func otherKeyOf(p *packet.Packet) (otherKey, bool) {
	if p.IPVersion == 0 || p.Fragment {
		return otherKey{}, false
	}
	switch p.Proto {
	case packet.ProtoUDP:
		if p.HasL4 {
			k, _ := keyOf(p)
			return otherKey{k, p.Proto}, true
		}
	case packet.ProtoICMP, packet.ProtoICMPv6:
		// Requests make the flows (requester to target), replies ride them.
		if id, _, req, _ := echoOf(p); req {
			return otherKey{flowKey{netip.AddrPortFrom(p.Src, id), netip.AddrPortFrom(p.Dst, id)}, p.Proto}, true
		}
	}
	return otherKey{}, false
}

// fallback picks up t's connection, joined mid-stream and whose client
// never sent data, at its first segment that carried an acknowledgement.
// Frames before it (without ACK) stay as they are; t.frames holds only
// later ones.
func (t *mtrack) fallback(ms *midstream) {
	if t.mid && !t.decided && t.fb != nil {
		ms.at[t.fbRef] = t.fb
	}
}

// handshake crafts SYN, SYN-ACK, ACK for a picked-up connection, with the
// link header of the pickup frame (MACs swapped for the server's frames)
// and window scaling offered on both sides so that the windows of the
// recorded segments are read as at least as large as they were.
func handshake(pk *pickup, eth []byte, fromClient bool) [][]byte {
	l2 := append([]byte(nil), eth...)
	rev := append([]byte(nil), eth...)
	copy(rev[0:6], eth[6:12])
	copy(rev[6:12], eth[0:6])
	cl2, sl2 := l2, rev
	if !fromClient {
		cl2, sl2 = rev, l2
	}
	syn := craftTCP(cl2, pk.client, pk.server, pk.cseq-1, 0, true, false)
	synack := craftTCP(sl2, pk.server, pk.client, pk.sseq-1, pk.cseq, true, true)
	ack := craftTCP(cl2, pk.client, pk.server, pk.cseq, pk.sseq, false, true)
	return [][]byte{syn, synack, ack}
}

func craftTCP(l2 []byte, src, dst netip.AddrPort, seq, ack uint32, syn, isAck bool) []byte {
	var opts []byte
	if syn {
		opts = []byte{2, 4, 0x05, 0xb4, 1, 3, 3, 14} // MSS 1460, NOP, window scale 14
	}
	if src.Addr().Is4() || src.Addr().Is4In6() {
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	}
	ip := capture.TCPPacket(src, dst, seq, ack, capture.TCPFlags{SYN: syn, ACK: isAck}, 65535, opts, nil)
	if ip == nil {
		return nil
	}
	return append(append([]byte(nil), l2...), ip...)
}
