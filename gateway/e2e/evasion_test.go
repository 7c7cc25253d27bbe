package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/daemon"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/rules"
)

// The differential evasion harness (issue 13, `make evasion`): a client
// namespace crafts TCP segment and IP fragment sequences with AF_PACKET
// (its own TCP, from an address its kernel does not own, so that no
// kernel stack interferes), the gateway (hal AF_PACKET ports,
// daemon.Forwarder, gateway.Engine: the datapath of `otgw run`, in
// process so that every verdict is visible) bridges them to a server
// namespace whose application (recServer: a Linux socket, recv()) logs
// every Modbus request it would execute. Each sequence hides forbidden
// requests (writes, reads out of range) among allowed reads and applies a
// seeded mix of techniques. The invariant, checked for every sequence:
// each request the server executed was judged by the engine with exactly
// those bytes (its transaction id, unit, function, address and quantity
// re-encode to the executed ADU) and allowed. OTGW_EVASION_N sets the
// number of sequences (default 2000), OTGW_EVASION_SEED the seed.

const (
	evClient = "192.0.2.3" // the crafted client: no namespace owns it
	evPolicy = `version: 1
name: evasion
mode: enforce
action: %s
zones:
  clients: { port: north, networks: [192.0.2.1/32, 192.0.2.3/32] }
  servers: { port: south, networks: [192.0.2.2/32] }
assets:
  hmi: { ip: 192.0.2.3, zone: clients }
  plc: { ip: 192.0.2.2, zone: servers }
l2: { allow: [arp] }
conduits:
  - name: hmi-plc
    from: hmi
    to: plc
    rules:
      - modbus:
          units: [1]
          allow:
            - read: holding 0-1999
`
)

// Techniques, one bit each in a sequence's mask.
const (
	tSplit        = 1 << iota // cut the stream at random byte offsets (up to one byte per segment)
	tReorder                  // swap neighbouring segments
	tDuplicate                // send segments again later
	tOverlap                  // a copy of a segment with different bytes, before or after it
	tUrgent                   // one extra urgent byte in the stream (URG, pointer past it)
	tFragment                 // a segment as IP fragments, sometimes overlapping with other bytes
	tBadSum                   // a copy with other bytes and a bad TCP checksum, before the real one
	tRST                      // a RST inside the window, not at the receiver's next sequence number
	tFIN                      // FIN on a segment before the end, data after it
	tSYNData                  // a SYN carrying the stream (data on SYN) before the real SYN
	tPipeline                 // several PDUs in one segment (no split)
	numTechniques = iota
)

var techniqueNames = [numTechniques]string{"split", "reorder", "duplicate", "overlap", "urgent",
	"fragment", "bad_checksum", "rst_in_window", "fin_early", "syn_data", "pipelining"}

// evStats are the harness's figures.
type evStats struct {
	sequences, handshakeFail   atomic.Int64
	benignSent, benignExec     atomic.Int64
	benignLost                 atomic.Int64 // legitimate sequences with a request not executed
	executed, executedForbid   atomic.Int64
	bypass, unjudged           atomic.Int64
	forbiddenSent, allowedSent atomic.Int64
	perTechnique               [numTechniques]atomic.Int64
}

// allowedLog records, per client port, the request ADUs the engine judged
// and allowed, re-encoded from the judged fields.
type allowedLog struct {
	mu sync.Mutex // guards m
	m  map[uint16][][]byte
}

func (a *allowedLog) onVerdict(d *gateway.Decision) {
	ms, _ := d.Session.(*modbus.Session)
	if d.PDU == nil || ms == nil || d.PDU.Dir != protocols.Request || d.Verdict.Action != rules.Allow {
		return
	}
	m := ms.ADU()
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b[0:], m.TransactionID)
	binary.BigEndian.PutUint16(b[2:], m.ProtocolID)
	binary.BigEndian.PutUint16(b[4:], m.Length)
	b[6], b[7] = m.Unit, m.Function
	binary.BigEndian.PutUint16(b[8:], m.Address)
	binary.BigEndian.PutUint16(b[10:], m.Quantity)
	a.mu.Lock()
	a.m[d.Src.Port()] = append(a.m[d.Src.Port()], b)
	a.mu.Unlock()
}

// match removes one judged request equal to req on port and reports
// whether there was one.
func (a *allowedLog) match(port uint16, req []byte) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.m[port]
	for k, j := range l {
		if string(j) == string(req) {
			a.m[port] = append(l[:k], l[k+1:]...)
			return true
		}
	}
	return false
}

// startInprocGateway runs the engine between the line's ports in the
// gateway namespace, as `otgw run` does, with hook as OnVerdict.
func startInprocGateway(t *testing.T, l *netns.Line, policy string, hook func(*gateway.Decision)) *gateway.Engine {
	t.Helper()
	pol, err := rules.Parse("evasion.yaml", []byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Compile(pol)
	if err != nil {
		t.Fatal(err)
	}
	var cur atomic.Pointer[rules.Ruleset]
	cur.Store(rs)
	// Sequences end in every state, many of them desynchronised on
	// purpose (a copy the receiver dropped, a dropped FIN, a reset the
	// gateway refused), so flows linger: a larger table whose idle flows
	// give way sooner keeps new sequences from being refused (table_full)
	// in a long run. Verdicts do not depend on these limits.
	eng, err := gateway.NewEngine(gateway.Config{Rules: cur.Load, OnVerdict: hook,
		MaxFlows: 65536, TCPIdle: 30 * time.Second, TCPHandshake: 5 * time.Second, EvictMinIdle: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var ports [2]hal.Port
	mtu := 1500
	err = l.Gateway.Do(func() error {
		n, err := hal.OpenLink(l.North)
		if err != nil {
			return err
		}
		s, err := hal.OpenLink(l.South)
		if err != nil {
			return err
		}
		if err := hal.PreparePair(n, s, hal.LinkOptions{}); err != nil {
			return err
		}
		if info, err := n.Info(); err == nil {
			mtu = info.MTU
		}
		if ports[0], err = hal.OpenPort(l.North, hal.PortOptions{}); err != nil {
			return err
		}
		if ports[1], err = hal.OpenPort(l.South, hal.PortOptions{}); err != nil {
			ports[0].Close()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := daemon.NewForwarder(daemon.ForwarderConfig{North: ports[0], South: ports[1], Handler: eng,
		BufSize: max(daemon.DefaultBufSize, mtu+14+8+hal.VLANHeadroom)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fwd.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("forwarder: %v", err)
		}
		ports[0].Close()
		ports[1].Close()
	})
	return eng
}

// rawClient is the crafting client: one AF_PACKET socket on the client
// namespace's eth0, a reader that hands the server's segments to the
// sequence owning their port.
type rawClient struct {
	fd       int
	ifindex  int
	srcMAC   [6]byte
	dstMAC   [6]byte
	src, dst [4]byte
	stop     atomic.Bool
	mu       sync.Mutex // guards conns
	conns    map[uint16]*rconn
	done     chan struct{}
}

// rconn is what the reader learnt of one connection from the server.
type rconn struct {
	synack chan uint32 // the server's ISN
	ack    atomic.Uint64
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func newRawClient(t *testing.T, l *netns.Line) *rawClient {
	t.Helper()
	c := &rawClient{conns: map[uint16]*rconn{}, done: make(chan struct{}),
		srcMAC: macOf(t, l.Client, "eth0"), dstMAC: macOf(t, l.Server, "eth0")}
	copy(c.src[:], mustIP4(evClient))
	copy(c.dst[:], mustIP4(l.ServerAddr))
	err := l.Client.Do(func() error {
		ifi, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		idx, err := ifindex(ifi, "eth0")
		unix.Close(ifi)
		if err != nil {
			return err
		}
		c.ifindex = idx
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		c.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx}); err != nil {
			return err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 8<<20)
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	})
	if err != nil {
		t.Fatalf("raw client socket: %v", err)
	}
	go c.read()
	t.Cleanup(func() {
		c.stop.Store(true)
		<-c.done
		unix.Close(c.fd)
	})
	return c
}

func mustIP4(s string) []byte {
	var b [4]byte
	for i, p := range strings.Split(s, ".") {
		v, _ := strconv.Atoi(p)
		b[i] = byte(v)
	}
	return b[:]
}

func ifindex(fd int, name string) (int, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, err
	}
	return int(ifr.Uint32()), nil
}

func (c *rawClient) read() {
	defer close(c.done)
	buf := make([]byte, 65536)
	var p packet.Packet
	for !c.stop.Load() {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil || n <= 0 {
			continue
		}
		if p.Decode(buf[:n], packet.LinkEthernet) != nil || p.Proto != packet.ProtoTCP || !p.HasL4 || p.Src.As4() != c.dst {
			continue
		}
		c.mu.Lock()
		rc := c.conns[p.DstPort]
		c.mu.Unlock()
		if rc == nil {
			continue
		}
		if p.Flags&(packet.TCPSyn|packet.TCPAck) == packet.TCPSyn|packet.TCPAck {
			select {
			case rc.synack <- p.Seq:
			default:
			}
			continue
		}
		if p.Flags&packet.TCPAck != 0 {
			for {
				old := rc.ack.Load()
				if old != 0 && int32(p.Ack-uint32(old)) <= 0 {
					break
				}
				if rc.ack.CompareAndSwap(old, uint64(p.Ack)|1<<32) {
					break
				}
			}
		}
	}
}

func (c *rawClient) send(frame []byte) {
	_ = unix.Sendto(c.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: c.ifindex, Halen: 6,
		Addr: [8]byte{c.dstMAC[0], c.dstMAC[1], c.dstMAC[2], c.dstMAC[3], c.dstMAC[4], c.dstMAC[5]}})
}

// seg builds an Ethernet/IPv4/TCP frame from the client to the server's
// port 502. urg > 0 sets URG with that pointer; badSum breaks the TCP
// checksum.
func (c *rawClient) seg(sport uint16, seq, ack uint32, flags uint8, urg uint16, payload []byte, badSum bool, ipid uint16) []byte {
	b := make([]byte, 14+20+20+len(payload))
	copy(b[0:], c.dstMAC[:])
	copy(b[6:], c.srcMAC[:])
	b[12], b[13] = 0x08, 0x00
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(40+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], ipid)
	ip[8], ip[9] = 64, 6
	copy(ip[12:], c.src[:])
	copy(ip[16:], c.dst[:])
	binary.BigEndian.PutUint16(ip[10:], ^sum16(0, ip))
	tcp := b[34:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], 502)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	if urg > 0 {
		tcp[13] |= packet.TCPUrg
		binary.BigEndian.PutUint16(tcp[18:], urg)
	}
	copy(tcp[20:], payload)
	ph := make([]byte, 12)
	copy(ph, c.src[:])
	copy(ph[4:], c.dst[:])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(len(tcp)))
	cs := ^sum16(sum32(0, ph), tcp)
	if badSum {
		cs ^= 0x5a5a
	}
	binary.BigEndian.PutUint16(tcp[16:], cs)
	return b
}

func sum32(s uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func sum16(s uint32, b []byte) uint16 {
	s = sum32(s, b)
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// fragment splits the IP payload of an Ethernet/IPv4 frame at the 8-byte
// aligned offsets cuts. With overlap, one more fragment repeats the first
// cut's range with other bytes.
func fragment(frame []byte, cuts []int, overlap bool) [][]byte {
	payload := frame[34:]
	mk := func(part []byte, off int, more bool) []byte {
		out := append(append([]byte(nil), frame[:34]...), part...)
		ip := out[14:34]
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(part)))
		v := uint16(off / 8)
		if more {
			v |= 0x2000
		}
		binary.BigEndian.PutUint16(ip[6:], v)
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], ^sum16(0, ip))
		return out
	}
	var out [][]byte
	prev := 0
	for _, c := range append(cuts, len(payload)) {
		out = append(out, mk(payload[prev:c], prev, c < len(payload)))
		prev = c
	}
	if overlap && len(cuts) > 0 && cuts[0] > 8 {
		alt := append([]byte(nil), payload[8:cuts[0]]...)
		for i := range alt {
			alt[i] ^= 0x06
		}
		out = append(out, mk(alt, 8, true))
	}
	return out
}

// evPDU is one request of a sequence.
type evPDU struct {
	b       []byte
	allowed bool // by the harness policy: FC 3, unit 1, holding 0-1999
}

func genPDUs(r *rand.Rand, tid *uint16) []evPDU {
	k := 1 + r.IntN(4)
	out := make([]evPDU, 0, k)
	for range k {
		*tid++
		h := []byte{byte(*tid >> 8), byte(*tid), 0, 0, 0, 6, 1}
		var p []byte
		allowed := false
		switch r.IntN(5) {
		case 0, 1:
			addr := uint16(r.IntN(90))
			p = []byte{3, byte(addr >> 8), byte(addr), 0, byte(1 + r.IntN(10))}
			allowed = true
		case 2:
			p = []byte{6, 0, byte(r.IntN(100)), byte(r.IntN(256)), byte(r.IntN(256))}
		case 3:
			h[5] = 11
			p = []byte{16, 0, byte(r.IntN(100)), 0, 2, 4, 1, 2, 3, 4}
		default:
			addr := uint16(2000 + r.IntN(900))
			p = []byte{3, byte(addr >> 8), byte(addr), 0, 1}
		}
		out = append(out, evPDU{b: append(h, p...), allowed: allowed})
	}
	return out
}

// allowedByPolicy: the harness policy's verdict on an executed request.
func allowedByPolicy(b []byte) bool {
	if len(b) != 12 || b[2] != 0 || b[3] != 0 || b[4] != 0 || b[5] != 6 || b[6] != 1 || b[7] != 3 {
		return false
	}
	addr, qty := int(binary.BigEndian.Uint16(b[8:])), int(binary.BigEndian.Uint16(b[10:]))
	return qty >= 1 && qty <= 125 && addr+qty <= 2000
}

// disguisedWrite is issue 13's second urgent-data attack, generated: a
// write FC 6 (address a*256, value v*256) whose urgent byte 0x03 sits
// after the unit id, then 11 bytes that complete, in the view of a parser
// keeping the urgent byte inline, an allowed read. Inline: FC 3 read of
// 1536+a (quantity v), then a read; the receiver drops the urgent byte and
// executes the write. It returns the wire bytes, the urgent byte's offset
// and the write as the receiver reads it.
func disguisedWrite(r *rand.Rand, tid uint16) (wire []byte, urgAt int, write []byte) {
	a, v := byte(r.IntN(100)), byte(1+r.IntN(10))
	write = []byte{byte(tid >> 8), byte(tid), 0, 0, 0, 6, 1, 6, a, 0, v, 0}
	wire = append(append(append([]byte(nil), write[:7]...), 3), write[7:]...)
	filler := []byte{byte(r.IntN(256)), 0, 0, 0, 6, 1, 3, 0, 0, 0, byte(1 + r.IntN(10))}
	return append(wire, filler...), 7, write
}

// runSequence crafts sequence i on client port sport and returns its
// technique mask (-1 when the handshake failed) and its number of requests.
func runSequence(c *rawClient, seed uint64, i int, sport uint16, st *evStats) (int, int) {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	tid := uint16(i * 8)
	pdus := genPDUs(r, &tid)
	if benign(i) {
		// Legitimate traffic: allowed reads, with only what a normal
		// stack does (segmentation, loss and reordering repaired by
		// retransmission, duplicates, pipelining).
		for k := range pdus {
			addr := byte(r.IntN(90))
			pdus[k] = evPDU{b: []byte{pdus[k].b[0], pdus[k].b[1], 0, 0, 0, 6, 1, 3, 0, addr, 0, byte(1 + r.IntN(10))}, allowed: true}
		}
	}
	var stream []byte
	for _, p := range pdus {
		stream = append(stream, p.b...)
		if p.allowed {
			st.allowedSent.Add(1)
		} else {
			st.forbiddenSent.Add(1)
		}
	}
	mask := 0
	for b := range numTechniques {
		if r.IntN(4) == 0 {
			mask |= 1 << b
		}
	}
	if benign(i) {
		mask &= tSplit | tReorder | tDuplicate
	}
	if mask&tSplit == 0 && len(pdus) > 1 {
		mask |= tPipeline
	} else {
		mask &^= tPipeline
	}
	rc := &rconn{synack: make(chan uint32, 1)}
	c.mu.Lock()
	c.conns[sport] = rc
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.conns, sport)
		c.mu.Unlock()
	}()
	isn := r.Uint32()
	ipid := uint16(r.Uint32())
	id := func() uint16 { ipid++; return ipid }

	// The wire stream: the stream, with one urgent byte inserted at
	// random, or as the disguised write of issue 13 before it.
	wire, urgAt := stream, -1
	if mask&tUrgent != 0 {
		if r.IntN(2) == 0 {
			urgAt = r.IntN(len(stream) + 1)
			wire = append(append(append([]byte(nil), stream[:urgAt]...), byte(r.IntN(256))), stream[urgAt:]...)
		} else {
			tid++
			var w []byte
			wire, urgAt, w = disguisedWrite(r, tid)
			_ = w
			wire = append(wire, stream...)
			st.forbiddenSent.Add(1)
		}
	}
	if mask&tSYNData != 0 {
		c.send(c.seg(sport, isn, 0, packet.TCPSyn, 0, wire, false, id()))
	}
	var srvISN uint32
	got := false
	for try := 0; try < 3 && !got; try++ {
		c.send(c.seg(sport, isn, 0, packet.TCPSyn, 0, nil, false, id()))
		select {
		case srvISN = <-rc.synack:
			got = true
		case <-time.After(time.Second):
		}
	}
	if !got {
		st.handshakeFail.Add(1)
		return -1, len(pdus)
	}
	ack := srvISN + 1
	base := isn + 1
	c.send(c.seg(sport, base, ack, packet.TCPAck, 0, nil, false, id()))

	// Cut the wire stream into segments.
	type span struct{ off, n int }
	var spans []span
	if mask&tSplit != 0 {
		q := []float64{0.05, 0.3, 1}[r.IntN(3)]
		start := 0
		for j := 1; j <= len(wire); j++ {
			if j == len(wire) || r.Float64() < q {
				spans = append(spans, span{start, j - start})
				start = j
			}
		}
	} else {
		spans = []span{{0, len(wire)}}
	}
	mkSeg := func(sp span, data []byte, badSum bool, fin bool) []byte {
		fl := packet.TCPAck | packet.TCPPsh
		if fin {
			fl |= packet.TCPFin
		}
		urg := uint16(0)
		if urgAt >= sp.off && urgAt < sp.off+sp.n {
			urg = uint16(urgAt - sp.off + 1)
		}
		return c.seg(sport, base+uint32(sp.off), ack, fl, urg, data, badSum, id())
	}
	finAt := -1
	if mask&tFIN != 0 && len(spans) > 1 {
		finAt = r.IntN(len(spans) - 1)
	}
	var frames [][]byte
	for j, sp := range spans {
		data := wire[sp.off : sp.off+sp.n]
		if mask&tBadSum != 0 && r.IntN(3) == 0 {
			alt := append([]byte(nil), data...)
			alt[r.IntN(len(alt))] ^= 0x05
			frames = append(frames, mkSeg(sp, alt, true, false))
		}
		fr := mkSeg(sp, data, false, j == finAt)
		if mask&tFragment != 0 && r.IntN(3) == 0 && len(fr)-34 > 16 {
			var cuts []int
			for cut := 8 * (1 + r.IntN(3)); cut < len(fr)-34; cut += 8 * (1 + r.IntN(4)) {
				cuts = append(cuts, cut)
			}
			if len(cuts) > 0 {
				frames = append(frames, fragment(fr, cuts, r.IntN(2) == 0)...)
				continue
			}
		}
		frames = append(frames, fr)
		if mask&tOverlap != 0 && r.IntN(3) == 0 {
			alt := append([]byte(nil), data...)
			k := r.IntN(len(alt))
			alt[k] ^= byte(1 + r.IntN(255))
			ov := mkSeg(sp, alt, false, false)
			if r.IntN(2) == 0 {
				frames = append(frames[:len(frames)-1], ov, fr)
			} else {
				frames = append(frames, ov)
			}
		}
	}
	if mask&tReorder != 0 {
		for range 1 + r.IntN(3) {
			if len(frames) > 1 {
				j := r.IntN(len(frames) - 1)
				frames[j], frames[j+1] = frames[j+1], frames[j]
			}
		}
	}
	if mask&tDuplicate != 0 {
		for range 1 + r.IntN(3) {
			j := r.IntN(len(frames))
			k := j + r.IntN(len(frames)-j+1)
			frames = append(frames[:k], append([][]byte{frames[j]}, frames[k:]...)...)
		}
	}
	if mask&tRST != 0 {
		off := r.IntN(len(wire))
		rst := c.seg(sport, base+uint32(off)+1, ack, packet.TCPRst|packet.TCPAck, 0, nil, false, id())
		j := r.IntN(len(frames) + 1)
		frames = append(frames[:j], append([][]byte{rst}, frames[j:]...)...)
	}
	for _, fr := range frames {
		c.send(fr)
	}
	// A sender's stack retransmits what is not acknowledged, in order (a
	// URG segment keeps its flag while the urgent byte is unacknowledged).
	end := base + uint32(len(wire))
	deadline := time.Now().Add(250 * time.Millisecond)
	retx := time.Now().Add(40 * time.Millisecond)
	for time.Now().Before(deadline) {
		a := rc.ack.Load()
		if a != 0 && int32(uint32(a)-end) >= 0 {
			break
		}
		if time.Now().After(retx) {
			retx = deadline
			from := 0
			if a != 0 && int32(uint32(a)-base) > 0 {
				from = int(uint32(a) - base)
			}
			for off := from; off < len(wire); off += 1400 {
				sp := span{off, min(1400, len(wire)-off)}
				c.send(mkSeg(sp, wire[sp.off:sp.off+sp.n], false, false))
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond) // let the server application read
	// Tear down at the server's next expected sequence number.
	rst := base
	if a := rc.ack.Load(); a != 0 {
		rst = uint32(a)
	}
	c.send(c.seg(sport, rst, ack, packet.TCPRst|packet.TCPAck, 0, nil, false, id()))
	return mask, len(pdus)
}

// benign reports whether sequence i is legitimate traffic (one in ten),
// whose every request must be executed.
func benign(i int) bool { return i%10 == 0 }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestEvasionHarness runs the differential harness (see the top of this
// file) and fails on any bypass: a request the server executed that the
// engine did not judge with those bytes and allow.
func TestEvasionHarness(t *testing.T) {
	testenv.NeedRoot(t)
	n := envInt("OTGW_EVASION_N", 2000)
	seed := uint64(envInt("OTGW_EVASION_SEED", 1))
	workers := envInt("OTGW_EVASION_WORKERS", 32)
	l := netns.NewLine(t)
	srv := startRecServer(t, l.Server, "0.0.0.0:502")
	srv.mu.Lock()
	srv.idle = 3 * time.Second
	srv.mu.Unlock()
	cmac := macOf(t, l.Client, "eth0")
	l.Server.IP("neigh", "replace", evClient, "lladdr", fmt.Sprintf("%x:%x:%x:%x:%x:%x", cmac[0], cmac[1], cmac[2], cmac[3], cmac[4], cmac[5]), "nud", "permanent", "dev", "eth0")
	log := &allowedLog{m: map[uint16][][]byte{}}
	eng := startInprocGateway(t, l, fmt.Sprintf(evPolicy, "drop"), log.onVerdict)
	c := newRawClient(t, l)

	var st evStats
	var fails sync.Mutex // guards failures and lastSeq
	var failures []string
	lastSeq := map[uint16]string{} // what ran last on each port, for messages
	// check judges what the server executed on port so far. Requests
	// executed late (after the sequence's check) are checked with the
	// port's next sequence or in the final sweep, against the judged
	// requests still unmatched on that port.
	check := func(sport uint16) int {
		srv.mu.Lock()
		exec := srv.byPort[sport]
		delete(srv.byPort, sport)
		srv.mu.Unlock()
		for _, req := range exec {
			st.executed.Add(1)
			ok := allowedByPolicy(req)
			if !ok {
				st.executedForbid.Add(1)
			}
			judged := log.match(sport, req)
			if !judged {
				st.unjudged.Add(1)
			}
			if !ok || !judged {
				st.bypass.Add(1)
				fails.Lock()
				if len(failures) < 20 {
					failures = append(failures, fmt.Sprintf("%s: server executed %x (allowed by policy %v, judged and allowed with these bytes %v)",
						lastSeq[sport], req, ok, judged))
				}
				fails.Unlock()
			}
		}
		return len(exec)
	}
	start := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	span := 40000 / workers // client ports per worker: reused every span sequences of that worker
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := 0
			for i := range jobs {
				sport := uint16(20000 + w*span + k%span)
				k++
				check(sport) // anything late from the port's previous sequence
				mask, npdu := runSequence(c, seed, i, sport, &st)
				fails.Lock()
				lastSeq[sport] = fmt.Sprintf("seed %d sequence %d (techniques %s)", seed, i, maskString(mask))
				fails.Unlock()
				if mask < 0 {
					continue
				}
				st.sequences.Add(1)
				for b := range numTechniques {
					if mask&(1<<b) != 0 {
						st.perTechnique[b].Add(1)
					}
				}
				got := check(sport)
				if benign(i) {
					// The server application may read a little later
					// than its kernel acknowledged.
					for wait := time.Now().Add(500 * time.Millisecond); got < npdu && time.Now().Before(wait); {
						time.Sleep(10 * time.Millisecond)
						got += check(sport)
					}
					// Legitimate traffic is unharmed: every request runs
					// (the port's earlier ones were checked before).
					st.benignSent.Add(int64(npdu))
					st.benignExec.Add(int64(got))
					if got != npdu {
						fails.Lock()
						if len(failures) < 20 {
							failures = append(failures, fmt.Sprintf("%s: legitimate sequence, server executed %d of %d requests", lastSeq[sport], got, npdu))
						}
						fails.Unlock()
						st.benignLost.Add(1)
					}
				}
			}
		}()
	}
	for i := range n {
		if i > 0 && i%10000 == 0 {
			t.Logf("%d sequences, %d bypasses, %d handshakes failed, %v", i, st.bypass.Load(), st.handshakeFail.Load(), time.Since(start).Round(time.Second))
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	time.Sleep(time.Second) // the final sweep: requests executed late
	srv.mu.Lock()
	var rest []uint16
	for p := range srv.byPort {
		rest = append(rest, p)
	}
	srv.mu.Unlock()
	for _, p := range rest {
		check(p)
	}
	el := time.Since(start)
	var per []string
	for b := range numTechniques {
		per = append(per, fmt.Sprintf("%s %d", techniqueNames[b], st.perTechnique[b].Load()))
	}
	sort.Strings(per)
	ctr := eng.Counters()
	t.Logf("evasion harness: seed %d, %d sequences (%d handshakes failed) in %v; requests sent: %d allowed, %d forbidden; executed by the server: %d (%d forbidden); bypasses %d (unjudged %d)",
		seed, st.sequences.Load(), st.handshakeFail.Load(), el.Round(time.Millisecond), st.allowedSent.Load(), st.forbiddenSent.Load(),
		st.executed.Load(), st.executedForbid.Load(), st.bypass.Load(), st.unjudged.Load())
	t.Logf("techniques: %s", strings.Join(per, ", "))
	t.Logf("legitimate sequences (one in ten): %d requests sent, %d executed", st.benignSent.Load(), st.benignExec.Load())
	t.Logf("engine: pdus allowed %d denied %d, drops %v, held segments %d released %d", ctr.PDUsAllowed, ctr.PDUsDenied, ctr.DropsByName(), ctr.HeldSegments, ctr.HeldReleased)
	for _, f := range failures {
		t.Error(f)
	}
	if st.bypass.Load() != 0 || st.benignLost.Load() != 0 {
		t.Fatalf("%d bypasses, %d legitimate sequences harmed", st.bypass.Load(), st.benignLost.Load())
	}
	if st.executed.Load() == 0 || st.sequences.Load() < int64(n)*9/10 {
		t.Fatalf("the harness did not exercise the path: %d executed, %d of %d sequences ran", st.executed.Load(), st.sequences.Load(), n)
	}
}

func maskString(m int) string {
	var s []string
	for b := range numTechniques {
		if m&(1<<b) != 0 {
			s = append(s, techniqueNames[b])
		}
	}
	return strings.Join(s, "+")
}
