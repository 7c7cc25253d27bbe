package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/netns"
)

// The tc flow bypass through `otgw run --xdp on --xdp-attach tc`
// (hal/xdp.ModeTC: a tcx ingress program, and its socket filter on the
// gateway's packet sockets), on the same line and policy as the XDP
// tests (run_xdp_linux_test.go).

// tcArgs are the flags of the tc bypass.
var tcArgs = []string{"--xdp", "on", "--xdp-attach", "tc"}

// tcpExt returns the TcpExt and Tcp counters of a namespace
// (/proc/net/netstat and /proc/net/snmp read by a process inside it).
func tcpExt(t *testing.T, ns *netns.NS) map[string]uint64 {
	t.Helper()
	out, err := ns.Run("cat", "/proc/net/netstat", "/proc/net/snmp")
	if err != nil {
		t.Fatalf("read TCP counters in %s: %v", ns.Name, err)
	}
	m := map[string]uint64{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		names := strings.Fields(sc.Text())
		if !sc.Scan() {
			break
		}
		vals := strings.Fields(sc.Text())
		if len(names) != len(vals) || len(names) == 0 || names[0] != vals[0] {
			continue
		}
		for i := 1; i < len(names); i++ {
			if v, err := strconv.ParseUint(vals[i], 10, 64); err == nil {
				m[strings.TrimSuffix(names[0], ":")+"."+names[i]] = v
			}
		}
	}
	return m
}

// portTx returns the frames the gateway's user space sent on both ports.
func portTx(g *xdpGW) uint64 {
	var n uint64
	for _, p := range g.status().Ports {
		n += p.Stats.TxFrames
	}
	return n
}

// pattern fills b with the little-endian uint64 counter stream at byte
// offset off (a multiple of 8), so a receiver can check every byte.
func pattern(b []byte, off uint64) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], (off+uint64(i))/8)
	}
}

// TestTCBypassThroughRun: with --xdp auto on veth ports with packet
// sockets (the default I/O), the tc bypass attaches, and a TCP transfer on the
// plain tcp conduit is forwarded by the tc program (the bypass counters
// grow, the gateway's user space forwards only a few frames of it), the
// receiver gets every byte in order with no more than a few duplicate
// segments (the filter and the tc program can disagree only about a
// frame in flight while the flow is added), and a Modbus write on the
// inspected conduit is still denied.
func TestTCBypassThroughRun(t *testing.T) {
	l := xdpLine(t)
	g := startXDPGateway(t, l, xdpPolicy(true), nil, "--xdp", "auto")
	st := g.status()
	if st.XDP == nil || st.XDP.State != "attached" || st.XDP.NorthMode != "tc" || st.XDP.SouthMode != "tc" {
		t.Fatalf("status xdp: %+v, want attached in tc mode on both ports", st.XDP)
	}
	if n := l.TCXPrograms(t); n != [2]int{1, 1} {
		t.Fatalf("tcx ingress programs on the ports: %v, want one on each", n)
	}

	tcTransfer(t, l, g)
	m, err := g.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`otgw_xdp_bypassed_packets_total{conduit="hmi-bulk"}`, `otgw_xdp_frames_total{result="redirected"}`} {
		if !bytes.Contains(m, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	inspectedModbus(t, l, g)
}

// TestTCSIGKILLStopsBypassedStream: fail-closed in tc mode: SIGKILL of
// otgw run during a bypassed stream stops it within 100 ms, and no tcx
// program is left on the ports.
func TestTCSIGKILLStopsBypassedStream(t *testing.T) {
	l := xdpLine(t)
	g := startXDPGateway(t, l, xdpPolicy(true), nil, tcArgs...)
	sink := newRxSink(t, l.Server, "0.0.0.0:5001")
	stream(t, l.Client, "192.0.2.2:5001")
	waitUntil(t, "the tc bypass to forward the stream", 20*time.Second, func() bool {
		return conduitXDP(g.status(), "hmi-bulk").Packets > 1000 && sink.N.Load() > 4<<20
	})
	if n := l.TCXPrograms(t); n != [2]int{1, 1} {
		t.Fatalf("tcx ingress programs on the ports: %v, want one on each", n)
	}
	killStopsStream(t, g, sink)
	if n := l.TCXPrograms(t); n != [2]int{} {
		t.Errorf("tcx ingress programs on the ports after otgw run died: %v, want none", n)
	}
}

// TestTCRefusedWithAFXDP: the tc program cannot serve AF_XDP sockets, so
// --xdp-attach tc with --io xdp or auto refuses to start, saying why.
func TestTCRefusedWithAFXDP(t *testing.T) {
	l := xdpLine(t)
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(pol, []byte(xdpPolicy(true)), 0o644); err != nil {
		t.Fatal(err)
	}
	// --xdp off would ignore tc.
	cases := []struct{ name, want string }{
		{"xdp", "--xdp-attach tc needs packet sockets (--io ring or mmsg), not I/O xdp"},
		{"auto", "--xdp-attach tc needs packet sockets (--io ring or mmsg), not I/O auto"},
		{"xdp-off", "--xdp-attach tc needs --xdp on or auto (the XDP mode in force is off)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			args := []string{"run", "--policy", pol, "--board", "sim", "--ports", l.North + "," + l.South,
				"--spool", filepath.Join(dir, "spool-"+c.name)}
			switch c.name {
			case "xdp", "auto":
				args = append(append(args, "--io", c.name), tcArgs...)
			default:
				args = append(args, "--io", "ring", "--xdp", strings.TrimPrefix(c.name, "xdp-"), "--xdp-attach", "tc")
			}
			cmd := l.Gateway.Command(ctx, os.Args[0], args...)
			cmd.Env = append(os.Environ(), "OTGW_TEST_MAIN=1")
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitRuntime || !strings.Contains(out.String(), c.want) {
				t.Errorf("otgw %s: %v, want exit %d with %q:\n%s", strings.Join(args, " "), err, exitRuntime, c.want, lastLines(out.String(), 10))
			}
			if n := l.TCXPrograms(t); n != [2]int{} {
				t.Errorf("tcx ingress programs left on the ports: %v", n)
			}
		})
	}
}

// tcTransfer sends 64 MiB over the plain tcp conduit and checks that
// every byte arrives in order, that the tc bypass forwarded the bulk of
// it, that the gateway's user space sent few frames meanwhile (else the
// sockets received the bypassed frames too: no filter, or an old one),
// and that the receiver saw at most a few duplicate segments beyond the
// sender's retransmissions.
func tcTransfer(t *testing.T, l *netns.Line, g *xdpGW) {
	t.Helper()
	x0 := conduitXDP(g.status(), "hmi-bulk")
	const total = 64 << 20
	var ln net.Listener
	if err := l.Server.Do(func() (err error) { ln, err = net.Listen("tcp4", "0.0.0.0:5001"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		n   uint64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		r := bufio.NewReaderSize(c, 64<<10)
		var off uint64
		var w [8]byte
		for {
			if _, err := io.ReadFull(r, w[:]); err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				got <- result{n: off, err: err}
				return
			}
			if v := binary.LittleEndian.Uint64(w[:]); v != off/8 {
				got <- result{n: off, err: errors.New("wrong bytes at offset " + strconv.FormatUint(off, 10) + ": word " + strconv.FormatUint(v, 10))}
				return
			}
			off += 8
		}
	}()
	srv0, cli0, tx0 := tcpExt(t, l.Server), tcpExt(t, l.Client), portTx(g)
	var c net.Conn
	if err := l.Client.Do(func() (err error) { c, err = net.DialTimeout("tcp4", "192.0.2.2:5001", 3*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	buf := make([]byte, 256<<10)
	_ = c.SetWriteDeadline(time.Now().Add(60 * time.Second))
	for off := uint64(0); off < total; off += uint64(len(buf)) {
		pattern(buf, off)
		if _, err := c.Write(buf); err != nil {
			fl, _ := g.get("/flows?conduit=hmi-bulk")
			t.Fatalf("write at %d: %v; bypass %+v; engine's flows %s", off, err, g.status().XDP, fl)
		}
	}
	_ = c.Close()
	var res result
	select {
	case res = <-got:
	case <-time.After(60 * time.Second):
		t.Fatal("the receiver did not finish within 60 s")
	}
	took := time.Since(start)
	if res.err != nil || res.n != total {
		t.Fatalf("received %d of %d bytes: %v", res.n, total, res.err)
	}
	time.Sleep(200 * time.Millisecond) // the last ACKs and FINs
	srv1, cli1, tx1 := tcpExt(t, l.Server), tcpExt(t, l.Client), portTx(g)
	x := conduitXDP(g.status(), "hmi-bulk")
	x.Packets -= x0.Packets
	x.Bytes -= x0.Bytes
	dup := srv1["TcpExt.TCPDSACKOldSent"] - srv0["TcpExt.TCPDSACKOldSent"] + srv1["TcpExt.TCPDSACKOfoSent"] - srv0["TcpExt.TCPDSACKOfoSent"]
	retrans := cli1["Tcp.RetransSegs"] - cli0["Tcp.RetransSegs"]
	t.Logf("%d MiB in %v (%.0f Mbit/s): tc bypass %d frames / %d bytes, user space sent %d frames, receiver's duplicate segments %d, sender's retransmissions %d",
		total>>20, took.Round(time.Millisecond), float64(total)*8/took.Seconds()/1e6, x.Packets, x.Bytes, tx1-tx0, dup, retrans)
	if x.Packets < total/1500 {
		t.Errorf("the tc bypass forwarded %d frames of a %d-byte transfer, want at least %d", x.Packets, total, total/1500)
	}
	if tx1-tx0 > x.Packets/50 {
		t.Errorf("user space sent %d frames during the transfer, want few (< 2%% of the %d the bypass forwarded): it forwards the bypassed frames too",
			tx1-tx0, x.Packets)
	}
	// A segment the receiver got twice that the sender sent once was
	// duplicated on the way. The sender's own retransmissions (after a
	// frame was lost or overtaken on the way) account for the rest.
	if dup > retrans+10 {
		t.Errorf("the receiver saw %d duplicate segments (DSACKs sent) for %d retransmissions, want at most a few more: the gateway duplicated frames", dup, retrans)
	}
}

// TestTCDatapathRestartKeepsFilter: a datapath that fails is restarted
// with new ports and the same FastPath (openXDP runs once per Run), so
// the reopened packet sockets carry the filter of the tc program still
// attached: a transfer after the restart is bypassed and user space does
// not forward it a second time.
func TestTCDatapathRestartKeepsFilter(t *testing.T) {
	l := xdpLine(t)
	g := startXDPGateway(t, l, xdpPolicy(true), []string{"OTGW_FAULT_PANIC_AFTER_FRAMES=40"}, tcArgs...)
	// Modbus polls cross the engine until it panics on its 40th frame.
	// Only the first datapath panics: poll on new connections until 50
	// polls in a row cross the restarted one.
	mb := newModbusListener(t, l.Server)
	read := []byte{0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 2}
	resp := make([]byte, 64)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("no stable restarted datapath within 30 s of Modbus polls (%d restarts)", g.status().DatapathRestarts)
		}
		r0 := g.status().DatapathRestarts
		ok := 0
		var c net.Conn
		if err := l.Client.Do(func() (err error) {
			c, err = net.DialTimeout("tcp4", "192.0.2.2:502", 500*time.Millisecond)
			return err
		}); err == nil {
			for ; ok < 50; ok++ {
				_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := c.Write(read); err != nil {
					break
				}
				if _, err := io.ReadFull(c, resp[:13]); err != nil {
					break
				}
			}
			_ = c.Close()
		}
		if r1 := g.status().DatapathRestarts; r1 > 0 && r1 == r0 && ok == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = mb.Close()
	if n := g.status().DatapathRestarts; n != 1 {
		t.Errorf("%d datapath restarts, want 1 (the fault injection hits the first datapath only)", n)
	}
	waitUntil(t, "the restarted datapath to be healthy", 10*time.Second, func() bool {
		st, err := g.tryStatus()
		return err == nil && st.Healthy
	})
	if n := l.TCXPrograms(t); n != [2]int{1, 1} {
		t.Fatalf("tcx ingress programs on the ports after the restart: %v, want one on each", n)
	}
	tcTransfer(t, l, g)
}

// newModbusListener answers read holding registers requests (FC 3, two
// registers) on every connection to port 502 in ns until closed.
func newModbusListener(t *testing.T, ns *netns.NS) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", "0.0.0.0:502"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req := make([]byte, 12)
				for {
					if _, err := io.ReadFull(c, req); err != nil {
						return
					}
					resp := append(append([]byte(nil), req[:4]...), 0, 7, req[6], 3, 4, 0, 0, 0, 0)
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln
}
