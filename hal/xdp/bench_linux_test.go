package xdp

import (
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
)

const benchPhase = 2 * time.Second

// xdpSink attaches to dev in ns (native mode) a program that counts
// every frame in a per-CPU array and drops it: the cheapest receiver
// there is, so the small-packet figure measures the path, not a user-space
// reader. Native XDP on the veth also gives it the NAPI context a native
// redirect to it needs.
func xdpSink(t *testing.T, ns *netns.NS, dev string) (count func() uint64, detach func()) {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	insns := asm.Instructions{
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("drop"), // XDP_DROP
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: insns, License: "otgw, see NOTICE"})
	if err != nil {
		t.Fatal(err)
	}
	var lk link.Link
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err == nil {
			lk, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index, Flags: link.XDPDriverMode})
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	count = func() uint64 {
		var per []uint64
		if err := m.Lookup(uint32(0), &per); err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		return n
	}
	return count, func() { _ = lk.Close(); _ = prog.Close(); _ = m.Close() }
}

// benchSmall blasts 60-byte UDP frames (192.0.2.1:40000 > 192.0.2.2:9)
// from the client's port (AF_PACKET) for benchPhase and counts those that
// reach the server's port (xdpSink). It returns frames/s offered and
// delivered.
func benchSmall(t *testing.T, l *netns.Line) (offered, delivered float64) {
	t.Helper()
	var tx hal.Port
	if err := l.Client.Do(func() (err error) { tx, err = hal.OpenPort("eth0", hal.PortOptions{NoPromisc: true}); return err }); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	count, detach := xdpSink(t, l.Server, "eth0")
	defer detach()
	fr := frame(t, frameSpec{key: udpKey("192.0.2.1:40000", "192.0.2.2:9"), payload: 18})
	batch := make([][]byte, 64)
	for i := range batch {
		batch[i] = fr
	}
	var sent int64
	n0 := count()
	start := time.Now()
	for time.Since(start) < benchPhase {
		n, _ := tx.WriteBatch(batch)
		sent += int64(n)
	}
	el := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	return float64(sent) / el.Seconds(), float64(count()-n0) / el.Seconds()
}

// benchTCP sends bulk TCP from the client (fixed source port) to the
// server for benchPhase and returns the bits/s the server read. bypass,
// when not nil, is called after the handshake (which crossed by whatever
// forwards at that moment).
func benchTCP(t *testing.T, l *netns.Line, srcPort int, bypass func(Key)) float64 {
	t.Helper()
	ln := listen(t, l.Server, "tcp4", "0.0.0.0:5001")
	s := newSink(ln)
	c := dialFrom(t, l.Client, "tcp4", fmt.Sprintf("192.0.2.1:%d", srcPort), "192.0.2.2:5001")
	if bypass != nil {
		bypass(tcpKey(fmt.Sprintf("192.0.2.1:%d", srcPort), "192.0.2.2:5001"))
	}
	buf := make([]byte, 64<<10)
	_ = c.SetWriteDeadline(time.Now().Add(benchPhase + 2*time.Second))
	n0, start := s.n.Load(), time.Now()
	for time.Since(start) < benchPhase {
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("tcp bench write: %v", err)
		}
	}
	bits := float64(s.n.Load()-n0) * 8 / time.Since(start).Seconds()
	_ = c.Close()
	_ = ln.Close()
	// close() leaves the unsent buffer to the kernel: wait until it and
	// the FIN crossed, or they would load the next variant's phase.
	select {
	case <-s.eof:
	case <-time.After(5 * time.Second):
		t.Log("tcp bench: the server saw no EOF within 5 s")
	}
	return bits
}

type benchRow struct {
	name           string
	offered, small float64
	tcp            float64
}

func benchBridge(t *testing.T, l *netns.Line, srcPort int) benchRow {
	// The gateway ports' offloads off, as the gateway has them.
	l.Gateway.IP("link", "add", "br0", "type", "bridge")
	for _, p := range []string{l.North, l.South} {
		err := l.Gateway.Do(func() error {
			return hal.SetFeatures(p, map[string]bool{"tx-tcp-segmentation": false, "tx-generic-segmentation": false, "rx-gro": false})
		})
		if err != nil {
			t.Fatal(err)
		}
		l.Gateway.IP("link", "set", p, "master", "br0")
	}
	l.Gateway.IP("link", "set", "br0", "up")
	time.Sleep(300 * time.Millisecond)
	r := benchRow{name: "kernel bridge"}
	r.offered, r.small = benchSmall(t, l)
	r.tcp = benchTCP(t, l, srcPort, nil)
	for _, p := range []string{l.North, l.South} {
		l.Gateway.IP("link", "set", p, "nomaster")
	}
	l.Gateway.IP("link", "del", "br0")
	return r
}

// benchFastPath measures one bypass mode. With noTap (a diagnostic of
// ModeTC) no packet socket is open during the measured phases: the
// forwarder is opened for the TCP handshake only and closed at the Add.
func benchFastPath(t *testing.T, l *netns.Line, mode Mode, srcPort int, noTap bool) benchRow {
	var b *FastPath
	if err := l.Gateway.Do(func() (err error) {
		b, err = New(Config{North: l.North, South: l.South, Mode: mode})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The stand-in engine forwards what XDP passes (the TCP handshake
	// crosses through it; ARP is static here). In ModeTC its ports are
	// the gateway's ring ports with the socket filter: AF_PACKET taps run
	// before tc ingress, so their cost (the filter on every frame) is in
	// the figures, as it would be in the gateway.
	fwOpts := hal.PortOptions{IO: hal.IOMmsg}
	name := "XDP bypass, " + mode.String() + " mode"
	if mode == ModeTC {
		fwOpts = hal.PortOptions{IO: hal.IORing, SocketFilter: b.SocketFilter()}
		name = "tc bypass (tcx), ring ports with the socket filter open"
	}
	if noTap {
		name = "tc bypass (tcx), no packet socket open (diagnostic)"
	}
	var fw *forwarder
	if !noTap {
		fw = startForwarderOpts(t, l, 5001, fwOpts)
	}
	r := benchRow{name: name}
	if err := b.Add(udpKey("192.0.2.1:40000", "192.0.2.2:9"), South); err != nil {
		t.Fatal(err)
	}
	r.offered, r.small = benchSmall(t, l)
	if noTap {
		fw = startForwarderOpts(t, l, 5001, fwOpts)
	}
	r.tcp = benchTCP(t, l, srcPort, func(k Key) {
		if err := b.Add(k, South); err != nil {
			t.Fatal(err)
		}
		if noTap {
			fw.stop()
		}
	})
	st, _ := b.Stats()
	t.Logf("%s: program stats %+v; frames the user-space forwarder saw on port 5001: %d", r.name, st, len(fw.take()))
	fw.stop()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return r
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// TestFastPathBench is `make bench-xdp`: the kernel bridge, the XDP
// bypass (native and generic mode) and the tc bypass (ModeTC) on the same
// veth line, interleaved
// over OTGW_BENCH_ROUNDS rounds (default 3): small-packet rate of one
// bypassed UDP flow and TCP throughput of one bypassed stream; medians
// with the range. Enabled by OTGW_BENCH_XDP=1; the table goes to the log
// and to $OTGW_BENCH_OUT when set. OTGW_BENCH_TC_NOTAP=1 adds a row of
// the tc bypass with no packet socket open (how much the taps cost).
func TestFastPathBench(t *testing.T) {
	if os.Getenv("OTGW_BENCH_XDP") != "1" {
		t.Skip("set OTGW_BENCH_XDP=1 (make bench-xdp)")
	}
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("OTGW_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	l := line(t)
	benchModes := []Mode{ModeNative, ModeGeneric, ModeTC}
	if os.Getenv("OTGW_BENCH_TC_NOTAP") == "1" {
		benchModes = append(benchModes, ModeTC) // the last one without the tap
	}
	names := []string{"kernel bridge"}
	small := make([][]float64, 1+len(benchModes))
	offered := make([][]float64, 1+len(benchModes))
	tcp := make([][]float64, 1+len(benchModes))
	for round := 0; round < rounds; round++ {
		rs := []benchRow{benchBridge(t, l, 40100+10*round)}
		for i, mode := range benchModes {
			rs = append(rs, benchFastPath(t, l, mode, 40101+10*round+i, i == 3))
		}
		if round == 0 {
			for _, r := range rs[1:] {
				names = append(names, r.name)
			}
		}
		for i, r := range rs {
			small[i] = append(small[i], r.small)
			offered[i] = append(offered[i], r.offered)
			tcp[i] = append(tcp[i], r.tcp)
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	var sb strings.Builder
	fmt.Fprintf(&sb, "| path | small packets: frames/s delivered, median [min-max] (offered) | vs bridge | TCP, one stream, median [min-max] | vs bridge |\n|---|---|---|---|---|\n")
	// Ratios are paired per round (each round measures the bridge and
	// both modes back to back), then the median and range over rounds:
	// steadier than a ratio of medians on a shared, loaded machine.
	ratios := func(xs, base []float64) string {
		r := make([]float64, len(xs))
		for j := range xs {
			r[j] = xs[j] / base[j]
		}
		return fmt.Sprintf("%.2fx [%.2f-%.2f]", median(r), slices.Min(r), slices.Max(r))
	}
	for i, name := range names {
		fmt.Fprintf(&sb, "| %s | %.0f [%.0f-%.0f] (%.0f) | %s | %.0f Mbit/s [%.0f-%.0f] | %s |\n",
			name, median(small[i]), slices.Min(small[i]), slices.Max(small[i]), median(offered[i]),
			ratios(small[i], small[0]),
			median(tcp[i])/1e6, slices.Min(tcp[i])/1e6, slices.Max(tcp[i])/1e6, ratios(tcp[i], tcp[0]))
	}
	fmt.Fprintf(&sb, "\n%d rounds, %v per phase; load average at the end: %s", rounds, benchPhase, load)
	t.Logf("\n%s", sb.String())
	if out := os.Getenv("OTGW_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(sb.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}
