package replay

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
)

// lazyVsEager replays in with the what-if evaluation, by the eager shadow
// with one engine (the reference) and by the lazy shadow with 1 and 2
// engines, compares every output byte for byte and returns the lazy
// shadows' statistics (summed) and the reference output.
func lazyVsEager(t *testing.T, in replayInput) (lazyStats, replayOutput) {
	t.Helper()
	shadowLazy = false
	want := outputOf(t, Options{Policy: in.pol, WhatIf: true, Workers: 1, MaxFlows: in.maxFlows}, in.paths...)
	shadowLazy = true
	var st lazyStats
	lazyObserve = func(s lazyStats) { st.add(s) }
	defer func() { lazyObserve = nil }()
	for _, w := range []int{1, 2} {
		got := outputOf(t, Options{Policy: in.pol, WhatIf: true, Workers: w, MaxFlows: in.maxFlows}, in.paths...)
		compareOutputs(t, in.name+", lazy shadow, workers "+strconv.Itoa(w), got, want)
	}
	return st, want
}

// TestLazyShadowSameOutput: the lazy what-if shadow (lazy.go) gives the
// eager shadow's events, report.json, summary and pcaps, byte for byte,
// with one engine and with two, on every scenario, on the shared captures
// merged, and on a generated capture whose flows diverge late, idle past
// their timeout and are quoted by ICMP errors before they diverge; and
// again with a history budget so small that flows are caught up early.
func TestLazyShadowSameOutput(t *testing.T) {
	inputs := scenarioInputs(t)
	shared, _ := filepath.Glob(filepath.Join(testenv.Pcaps(t), "*.pcap*"))
	sort.Strings(shared)
	// One of the shared captures is stamped back by microseconds, within
	// live connections (lazyClock allows it): merged and one by one.
	read := mustPolicy(t, readEverything)
	inputs = append(inputs, replayInput{name: "shared captures, merged", pol: read, paths: shared, maxFlows: 1 << 17})
	// One by one only without the race detector: under it they took a
	// minute, and the merged input above already runs every frame of them
	// through the same goroutines (make test runs both).
	for _, p := range shared {
		if raceEnabled {
			break
		}
		inputs = append(inputs, replayInput{name: filepath.Base(p), pol: read, paths: []string{p}})
	}
	scenarios := len(inputs)
	late := filepath.Join(t.TempDir(), "late.pcap")
	writeLateCapture(t, late)
	lateIn := replayInput{name: "late divergence", pol: mustPolicy(t, readEverything), paths: []string{late}}
	inputs = append(inputs, lateIn)
	var total lazyStats
	for _, in := range inputs {
		st, _ := lazyVsEager(t, in)
		total.add(st)
	}
	t.Logf("%d inputs: %d frames skipped, %d catch-ups feeding %d frames (%d early)", len(inputs), total.skipped, total.caught, total.fed, total.early)
	if total.skipped == 0 || total.caught == 0 || total.fed == 0 {
		t.Errorf("the inputs do not exercise the lazy shadow: %+v", total)
	}

	// The generated capture: its flows diverge after thousands of frames.
	st, want := lazyVsEager(t, lateIn)
	var rep Report
	if err := json.Unmarshal(want.report, &rep); err != nil {
		t.Fatal(err)
	}
	switch {
	case rep.WhatIf == nil || rep.WhatIf.AfterReset != 1 || rep.WhatIf.ConnectionsCut != 2:
		t.Errorf("late divergence: want refusals after the resets of two connections: %+v", rep.WhatIf)
	case rep.PickedUp != 1:
		t.Errorf("late divergence: %d connections picked up, want 1 (the one that idled)", rep.PickedUp)
	case bytes.Contains(want.events, []byte(`"proto":"icmp"`)):
		t.Errorf("late divergence: an ICMP error was refused:\n%s", want.events)
	}
	if st.caught != 2*lateDiverging || st.fed < 2*1500 || st.skipped < 2*5000 {
		t.Errorf("late divergence: %+v, want %d catch-ups of hundreds of frames each (two runs)", st, 2*lateDiverging)
	}

	// A budget a few frames long: flows are caught up early.
	defer func(b int) { lazyBudget = b }(lazyBudget)
	lazyBudget = 2000
	var small lazyStats
	for _, in := range append(inputs[:scenarios:scenarios], lateIn) {
		st, _ := lazyVsEager(t, in)
		small.add(st)
	}
	t.Logf("budget %d: %+v", lazyBudget, small)
	if small.early == 0 || small.skipped == 0 {
		t.Errorf("budget %d: no early catch-up: %+v", lazyBudget, small)
	}
}

// lateDiverging is the number of flows of writeLateCapture that diverge.
const lateDiverging = 3

// writeLateCapture writes Modbus polls (reads, which readEverything
// allows) over six connections, 1 ms apart:
//   - connection 0 writes after about 3,000 frames (denied, reset), goes
//     on reading and writes again: an after_reset refusal;
//   - connection 1 is quoted by ICMP errors (port unreachable, addressed
//     to its client) from the start, then writes after about 4,000 frames;
//   - connection 2 stops for two hours (past the engine's TCP timeout)
//     while the others poll every 10 s, then polls again: a new flow,
//     picked up mid-stream;
//   - connections 3 to 5 never diverge.
func writeLateCapture(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := capture.NewWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) {
		if err := w.WriteFrame(b); err != nil {
			t.Fatal(err)
		}
	}
	var flows []*capture.TCPFlow
	for i := range 6 {
		cl := capture.Endpoint{MAC: capture.MAC(byte(10 + i)), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}), uint16(40000+i))}
		sv := capture.Endpoint{MAC: capture.MAC(100), Addr: netip.MustParseAddrPort("198.51.100.100:502")}
		fl := capture.NewTCPFlow(cl, sv)
		for _, fr := range fl.Handshake() {
			put(fr)
		}
		flows = append(flows, fl)
	}
	tid := uint16(0)
	poll := func(c int) {
		tid++
		put(flows[c].Send(true, readReq(tid)))
		put(flows[c].Send(false, readResp(tid)))
	}
	write := func(c int) {
		tid++
		req := []byte{byte(tid >> 8), byte(tid), 0, 0, 0, 6, 1, 6, 0, 7, 0, 42}
		put(flows[c].Send(true, req))
		put(flows[c].Send(false, req))
	}
	for round := range 420 {
		for c := range 6 {
			switch {
			case c == 0 && (round == 250 || round == 300):
				write(0)
			case c == 1 && round == 330:
				write(1)
			case c == 1 && round%50 == 7:
				put(icmpUnreachable(flows[1], readReq(tid)))
			}
			poll(c)
		}
	}
	// Connection 2 idles two hours; the others poll every 10 s.
	w.Step = 10 * time.Second
	for range 360 {
		for _, c := range []int{0, 1, 3, 4, 5} {
			poll(c)
		}
	}
	w.Step = time.Millisecond
	for range 50 {
		for c := range 6 {
			poll(c)
		}
	}
}

// icmpUnreachable is a port unreachable from the server's address to the
// client of fl, quoting a segment the client sent with payload.
func icmpUnreachable(fl *capture.TCPFlow, payload []byte) []byte {
	seg := fl.Segment(true, fl.NextSeq(true), fl.NextSeq(false), capture.TCPFlags{ACK: true, PSH: true}, payload)
	quoted := seg[14:] // the IP packet
	if len(quoted) > 28 {
		quoted = quoted[:28] // IP header and 8 bytes of TCP, as routers quote
	}
	icmp := append([]byte{3, 3, 0, 0, 0, 0, 0, 0}, quoted...)
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp))
	ip := make([]byte, 20, 20+len(icmp))
	ip[0], ip[8], ip[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
	copy(ip[12:16], seg[14+16:14+20]) // from the server
	copy(ip[16:20], seg[14+12:14+16]) // to the client
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	eth := append(append(append([]byte{}, seg[6:12]...), seg[0:6]...), 0x08, 0x00)
	return append(append(eth, ip...), icmp...)
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// TestLazyClock: the pre-scan allows a lazy shadow on captures in time
// order, on captures stamped back only within TCP connections active
// within the shortest timeout, and on captures shorter than that timeout;
// not on a frame stamped back into a connection idle for longer, nor on
// any other frame stamped back.
func TestLazyClock(t *testing.T) {
	cl := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.1:40000")}
	cl2 := capture.Endpoint{MAC: capture.MAC(3), Addr: netip.MustParseAddrPort("192.0.2.3:40000")}
	sv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("198.51.100.1:502")}
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	type frame struct {
		at time.Duration
		b  []byte
	}
	dir := t.TempDir()
	for n, c := range []struct {
		name   string
		frames func(a, b *capture.TCPFlow) []frame
		want   bool
	}{
		{"in time order", func(a, b *capture.TCPFlow) []frame {
			hs := a.Handshake()
			return []frame{{0, hs[0]}, {time.Millisecond, hs[1]}, {time.Millisecond, hs[2]}, {time.Hour / 2, a.Send(true, readReq(1))}}
		}, true},
		{"back within a live connection", func(a, b *capture.TCPFlow) []frame {
			ha, hb := a.Handshake(), b.Handshake()
			return []frame{{0, ha[0]}, {0, ha[1]}, {0, ha[2]}, {0, hb[0]}, {0, hb[1]}, {0, hb[2]},
				{time.Minute, a.Send(true, readReq(1))}, {time.Minute + time.Second, b.Send(true, readReq(1))},
				{time.Minute + time.Millisecond, a.Send(false, readResp(1))}}
		}, true},
		{"back into a connection idle past the shortest timeout", func(a, b *capture.TCPFlow) []frame {
			ha, hb := a.Handshake(), b.Handshake()
			return []frame{{0, ha[0]}, {0, ha[1]}, {0, ha[2]}, {0, hb[0]}, {0, hb[1]}, {0, hb[2]},
				{time.Minute, b.Send(true, readReq(1))}, {time.Minute - time.Millisecond, a.Send(true, readReq(1))}}
		}, false},
		{"back, not TCP", func(a, b *capture.TCPFlow) []frame {
			hs := a.Handshake()
			return []frame{{0, hs[0]}, {time.Minute, hs[1]}, {time.Minute - time.Millisecond, capture.UDPDatagram(cl, sv, []byte{1})}}
		}, false},
		{"back, shorter than the shortest timeout", func(a, b *capture.TCPFlow) []frame {
			hs := a.Handshake()
			return []frame{{0, hs[0]}, {time.Second, hs[1]}, {time.Millisecond, capture.UDPDatagram(cl, sv, []byte{1})}}
		}, true},
	} {
		a, b := capture.NewTCPFlow(cl, sv), capture.NewTCPFlow(cl2, sv)
		path := filepath.Join(dir, strconv.Itoa(n)+".pcap")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		w, err := capture.NewWriter(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, fr := range c.frames(a, b) {
			w.Time = t0.Add(fr.at)
			if err := w.WriteFrame(fr.b); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		ms, err := scanMidstream([]string{path}, serverPorts(mustPolicy(t, readEverything)))
		if err != nil {
			t.Fatal(err)
		}
		if got := lazyClock(ms); got != c.want {
			t.Errorf("%s: lazyClock %v, want %v", c.name, got, c.want)
		}
	}
}

// BenchmarkLazySkip is what the lazy shadow costs a frame it skips: the
// frames of 300 Modbus connections polled round robin, kept in history.
func BenchmarkLazySkip(b *testing.B) {
	const conns = 300
	var frames [][]byte
	var keys []lazyKey
	var flows []*capture.TCPFlow
	for i := range conns {
		cl := capture.Endpoint{MAC: capture.MAC(byte(i)), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), uint16(40000+i))}
		sv := capture.Endpoint{MAC: capture.MAC(200), Addr: netip.MustParseAddrPort("198.51.100.1:502")}
		flows = append(flows, capture.NewTCPFlow(cl, sv))
	}
	var p packet.Packet
	off := int64(24)
	for n := range 20000 {
		fl := flows[n%conns]
		for _, f := range [][]byte{fl.Send(true, readReq(uint16(n))), fl.Send(false, readResp(uint16(n)))} {
			if err := p.Decode(f, packet.LinkEthernet); err != nil {
				b.Fatal(err)
			}
			k := lazyKeyOf(&p)
			k.src = frameSrc{ok: true, link: packet.LinkEthernet, n: int32(len(f)), off: off}
			off += 16 + int64(len(f))
			frames, keys = append(frames, f), append(keys, k)
		}
	}
	now := time.Now()
	stamps := make([]time.Time, len(frames))
	size := 0
	for k := range frames {
		stamps[k] = now.Add(time.Duration(k) * 100 * time.Microsecond)
		size += len(frames[k])
	}
	b.ResetTimer()
	var z *lazyShadow
	for i := 0; i < b.N; {
		z = newLazyShadow(nil, nil, 1<<30, nil)
		for k, f := range frames {
			if i == b.N {
				break
			}
			if !z.skip(keys[k], gateway.PortID(k&1), f, stamps[k]) {
				b.Fatal("not skipped")
			}
			i++
		}
	}
	if b.N >= len(frames) {
		b.ReportMetric(float64(z.used)/float64(len(frames)), "history-B/frame")
		b.ReportMetric(float64(size)/float64(len(frames)), "frame-B")
	}
}

// TestLazyHistoryBudget: what a lazy shadow holds (the capacity of every
// flow's history chunks and of the spare chunks kept for reuse) never
// exceeds its budget, and its count (used, the statistics'
// peak) is that holding, while flows fill their histories with frames
// that do not compress, diverge (their chunks become spares) and new
// flows fill theirs.
func TestLazyHistoryBudget(t *testing.T) {
	const budget = 200 << 10
	rs, err := rules.Compile(mustPolicy(t, readEverything))
	if err != nil {
		t.Fatal(err)
	}
	var now time.Time
	z := newLazyShadow(func() *gateway.Engine {
		e, err := gateway.NewEngine(gateway.Config{Rules: func() *rules.Ruleset { return rs }, MaxFlows: 64, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}, func(at time.Time) { now = at }, budget, nil)
	held := func() int {
		n := 0
		for _, f := range z.flows {
			for _, c := range f.hist {
				n += cap(c)
			}
		}
		for _, c := range z.spare {
			n += cap(c)
		}
		return n
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	payload := make([]byte, 1000)
	start := time.Unix(1_700_000_000, 0)
	frames, maxHeld := 0, 0
	feed := func(fl *capture.TCPFlow, diverge bool) {
		t.Helper()
		for i := range payload {
			payload[i] = byte(rnd.Uint32())
		}
		f := fl.Send(frames%2 == 0, payload)
		var p packet.Packet
		if err := p.Decode(f, packet.LinkEthernet); err != nil {
			t.Fatal(err)
		}
		k := lazyKeyOf(&p)
		k.diverge = diverge
		z.skip(k, gateway.PortID(frames%2), f, start.Add(time.Duration(frames)*time.Millisecond))
		frames++
		h := held()
		maxHeld = max(maxHeld, h)
		if h > budget || z.used != h || z.stats.peak > budget {
			t.Fatalf("frame %d: %d bytes held, used %d, peak %d; budget %d", frames, h, z.used, z.stats.peak, budget)
		}
	}
	flows := func(first, n int) []*capture.TCPFlow {
		var fs []*capture.TCPFlow
		for i := first; i < first+n; i++ {
			cl := capture.Endpoint{MAC: capture.MAC(byte(i)), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), uint16(40000+i))}
			sv := capture.Endpoint{MAC: capture.MAC(200), Addr: netip.MustParseAddrPort("198.51.100.1:502")}
			fs = append(fs, capture.NewTCPFlow(cl, sv))
		}
		return fs
	}
	for round := range 3 {
		// Flows fill their histories (up to chunks of lazyChunkMax and
		// past the budget: early catch-ups), then all diverge.
		fs := flows(8*round, 8)
		for i := range 8 * 120 {
			feed(fs[i%len(fs)], false)
		}
		for _, fl := range fs {
			feed(fl, true)
		}
	}
	t.Logf("%d frames: %+v; at most %d bytes held, %d spare chunks at the end", frames, z.stats, maxHeld, len(z.spare))
	if z.stats.caught == 0 || z.stats.early == 0 || maxHeld < budget/2 {
		t.Errorf("the frames do not exercise the budget: %+v, at most %d bytes held", z.stats, maxHeld)
	}
}

// TestLazyRereadFails: a catch-up that cannot read a frame of its history
// again (the capture shrank since it was read) feeds what it can and the
// lazy shadow's close reports the capture and offset.
func TestLazyRereadFails(t *testing.T) {
	rs, err := rules.Compile(mustPolicy(t, readEverything))
	if err != nil {
		t.Fatal(err)
	}
	fl := capture.NewTCPFlow(capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.1:40000")},
		capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("198.51.100.1:502")})
	frame := fl.Send(true, readReq(1))
	path := filepath.Join(t.TempDir(), "short.pcap")
	if err := os.WriteFile(path, frame[:20], 0o644); err != nil {
		t.Fatal(err)
	}
	var now time.Time
	z := newLazyShadow(func() *gateway.Engine {
		e, err := gateway.NewEngine(gateway.Config{Rules: func() *rules.Ruleset { return rs }, MaxFlows: 16, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}, func(at time.Time) { now = at }, 1<<20, []string{path})
	var p packet.Packet
	if err := p.Decode(frame, packet.LinkEthernet); err != nil {
		t.Fatal(err)
	}
	k := lazyKeyOf(&p)
	k.src = frameSrc{ok: true, link: packet.LinkEthernet, n: int32(len(frame)), off: 0}
	if !z.skip(k, gateway.North, frame, time.Unix(1, 0)) {
		t.Fatal("the first frame was not skipped")
	}
	k.diverge = true
	if z.skip(k, gateway.North, frame, time.Unix(2, 0)) {
		t.Fatal("a diverging frame was skipped")
	}
	err = z.close()
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "offset 0") {
		t.Fatalf("close: %v, want the capture and offset that could not be read again", err)
	}
	if z.stats.caught != 1 || z.stats.fed != 0 {
		t.Errorf("%+v, want one catch-up that fed nothing", z.stats)
	}
}
