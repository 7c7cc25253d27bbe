package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/otgw/otgw/gateway/daemon"
	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// The XDP flow bypass through `otgw run` (gateway/daemon/xdp.go) on a
// client — gateway — server line of network namespaces: the gateway is
// this test binary run as otgw (OTGW_TEST_MAIN=1).

// xdpPolicy: a plain tcp conduit (bypassable) and a read-only Modbus
// conduit (inspected) between the same hosts. bulk is included only when
// withBulk.
func xdpPolicy(withBulk bool) string {
	p := `version: 1
name: xdp
mode: enforce
action: reply
zones:
  clients: { port: north, networks: [192.0.2.1/32] }
  servers: { port: south, networks: [192.0.2.2/32] }
assets:
  hmi: { ip: 192.0.2.1, zone: clients }
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
            - read: holding 0-99
`
	if withBulk {
		p += `  - name: hmi-bulk
    from: hmi
    to: plc
    rules:
      - tcp: { ports: [5001] }
`
	}
	return p
}

// xdpGW is one `otgw run` in the line's gateway namespace.
type xdpGW struct {
	t      *testing.T
	l      *netns.Line
	cmd    *exec.Cmd
	out    *lockedBuffer
	policy string
	events string
	done   chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

const xdpStatusAddr = "127.0.0.1:9102"

// xdpArgs are the flags of the XDP bypass in generic mode, the only XDP
// mode that forwards between veths whose peers are set up as on a wire
// (--xdp on alone takes the tc bypass there: run_tc_linux_test.go).
var xdpArgs = []string{"--xdp", "on", "--xdp-attach", "generic"}

// xdpLine builds the line with IPv6 off (no stray neighbour discovery).
func xdpLine(t *testing.T) *netns.Line {
	t.Helper()
	testenv.NeedRoot(t)
	if testenv.Emulated() {
		t.Skip("XDP needs bpf(2), which qemu-user does not have (hal/xdp TestUnavailableUnderEmulation covers the refusal there)")
	}
	l := netns.NewLine(t)
	for _, ns := range []*netns.NS{l.Client, l.Gateway, l.Server} {
		ns.MustRun("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
	}
	// Segmentation offloads off on the peers, as on a wire: a TSO frame of
	// up to 64 KiB would not fit the gateway's ring slots.
	for _, ns := range []*netns.NS{l.Client, l.Server} {
		if err := ns.Do(func() error {
			have, err := hal.Features("eth0")
			if err != nil {
				return err
			}
			want := map[string]bool{}
			for _, f := range []string{"tx-tcp-segmentation", "tx-tcp-ecn-segmentation", "tx-tcp-mangleid-segmentation",
				"tx-tcp6-segmentation", "tx-generic-segmentation", "rx-gro"} {
				if _, ok := have[f]; ok {
					want[f] = false
				}
			}
			return hal.SetFeatures("eth0", want)
		}); err != nil {
			t.Fatalf("offloads off in %s: %v", ns.Name, err)
		}
	}
	return l
}

// startXDPGateway starts otgw run with the policy and extra arguments (and
// extra environment) and waits, bounded, for its status endpoint.
func startXDPGateway(t *testing.T, l *netns.Line, policy string, env []string, args ...string) *xdpGW {
	t.Helper()
	dir := t.TempDir()
	g := &xdpGW{t: t, l: l, out: &lockedBuffer{}, policy: filepath.Join(dir, "policy.yaml"),
		events: filepath.Join(dir, "events.jsonl"), done: make(chan struct{})}
	if err := os.WriteFile(g.policy, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	all := append([]string{"run", "--policy", g.policy, "--board", "sim", "--ports", l.North + "," + l.South,
		"--events", g.events, "--status", xdpStatusAddr, "--spool", filepath.Join(dir, "spool")}, args...)
	g.cmd = l.Gateway.Command(context.Background(), os.Args[0], all...)
	g.cmd.Env = append(append(os.Environ(), "OTGW_TEST_MAIN=1"), env...)
	g.cmd.Stdout, g.cmd.Stderr = g.out, g.out
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.cmd.Wait(); close(g.done) }()
	t.Cleanup(func() {
		_ = g.cmd.Process.Kill()
		<-g.done
		if t.Failed() {
			t.Logf("otgw output:\n%s", lastLines(g.out.String(), 40))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st, err := g.tryStatus(); err == nil && st.Healthy {
			return g
		}
		select {
		case <-g.done:
			t.Fatalf("otgw run exited during start-up:\n%s", lastLines(g.out.String(), 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("otgw run not healthy within 20s:\n%s", lastLines(g.out.String(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// get fetches a path of the status endpoint from inside the gateway namespace.
func (g *xdpGW) get(path string) ([]byte, error) {
	var conn net.Conn
	if err := g.l.Gateway.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", xdpStatusAddr, 2*time.Second)
		return err
	}); err != nil {
		return nil, err
	}
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }, DisableKeepAlives: true}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + xdpStatusAddr + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return b, err
}

func (g *xdpGW) tryStatus() (daemon.Status, error) {
	var st daemon.Status
	b, err := g.get("/status")
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	return st, err
}

func (g *xdpGW) status() daemon.Status {
	g.t.Helper()
	st, err := g.tryStatus()
	if err != nil {
		g.t.Fatalf("status: %v", err)
	}
	return st
}

// conduitXDP returns the fast path's figures for a conduit.
func conduitXDP(st daemon.Status, name string) daemon.XDPConduit {
	if st.XDP != nil {
		for _, c := range st.XDP.Conduits {
			if c.Conduit == name {
				return c
			}
		}
	}
	return daemon.XDPConduit{Conduit: name}
}

// enginePackets returns the frames the user-space engine counted for the
// conduit's flows (GET /flows).
func (g *xdpGW) enginePackets(conduit string) uint64 {
	g.t.Helper()
	b, err := g.get("/flows?conduit=" + conduit)
	if err != nil {
		g.t.Fatalf("flows: %v", err)
	}
	var fl daemon.FlowList
	if err := json.Unmarshal(b, &fl); err != nil {
		g.t.Fatal(err)
	}
	var n uint64
	for _, f := range fl.Flows {
		n += f.Packets[0] + f.Packets[1]
	}
	return n
}

// newRxSink listens on addr in ns and reads the first connection (netns.RxSink).
func newRxSink(t *testing.T, ns *netns.NS, addr string) *netns.RxSink {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return netns.NewRxSink(t, ln)
}

// stream connects from the client namespace and writes until the test
// ends (writes time out once the path is gone).
func stream(t *testing.T, ns *netns.NS, remote string) {
	t.Helper()
	var c net.Conn
	if err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", remote, 3*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s: %v", remote, err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 16<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := c.Write(buf); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done; _ = c.Close() })
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// (a) A TCP stream on a plain tcp conduit is forwarded by XDP (the XDP
// counters grow, the engine's frame count for the flow does not) while a
// Modbus connection on the inspected conduit is still judged PDU by PDU:
// a write on the read-only rule is denied.
func TestXDPBypassThroughRun(t *testing.T) {
	l := xdpLine(t)
	g := startXDPGateway(t, l, xdpPolicy(true), nil, xdpArgs...)
	if st := g.status(); st.XDP == nil || st.XDP.State != "attached" || st.XDP.NorthMode != "generic" || st.XDP.SouthMode != "generic" {
		t.Fatalf("status xdp: %+v, want attached in generic mode on both ports", st.XDP)
	}
	sink := newRxSink(t, l.Server, "0.0.0.0:5001")
	stream(t, l.Client, "192.0.2.2:5001")
	waitUntil(t, "the stream to carry 8 MiB", 20*time.Second, func() bool { return sink.N.Load() > 8<<20 })
	waitUntil(t, "XDP to forward the plain conduit's flow", 10*time.Second, func() bool {
		return conduitXDP(g.status(), "hmi-bulk").Packets > 1000
	})
	st0 := g.status()
	x0, e0, n0 := conduitXDP(st0, "hmi-bulk"), g.enginePackets("hmi-bulk"), sink.N.Load()
	time.Sleep(time.Second)
	st1 := g.status()
	x1, e1, n1 := conduitXDP(st1, "hmi-bulk"), g.enginePackets("hmi-bulk"), sink.N.Load()
	// Frames the program passed because otgw renewed its lease late (no
	// CPU for 70 ms on a loaded machine) go through the engine, as they
	// must: the only frames of the flow the engine may count.
	lapsed := st1.XDP.Frames["lapsed"] - st0.XDP.Frames["lapsed"]
	t.Logf("in 1 s: %d bytes received, XDP %d frames / %d bytes, engine %d frames of the flow (%d in all), %d passed on a lapsed lease",
		n1-n0, x1.Packets-x0.Packets, x1.Bytes-x0.Bytes, e1-e0, e1, lapsed)
	if n1-n0 < 1<<20 {
		t.Errorf("only %d bytes crossed in a second", n1-n0)
	}
	if x1.Packets <= x0.Packets || x1.Flows != 1 {
		t.Errorf("XDP counters of hmi-bulk: %+v then %+v, want growing with one flow", x0, x1)
	}
	if e1-e0 > lapsed {
		t.Errorf("the engine counted %d more frames of the bypassed flow in a second, want 0 (or the %d passed on a lapsed lease)", e1-e0, lapsed)
	}
	m, err := g.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`otgw_xdp_bypassed_packets_total{conduit="hmi-bulk"}`, `otgw_xdp_bypassed_bytes_total{conduit="hmi-bulk"}`,
		`otgw_xdp_state{state="attached"} 1`, `otgw_xdp_frames_total{result="redirected"}`} {
		if !bytes.Contains(m, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	inspectedModbus(t, l, g)
}

// inspectedModbus checks Modbus on the inspected conduit of a gateway
// whose plain conduit is bypassed: the read crosses, the write is refused
// (a Modbus exception from the gateway), nothing of it reaches the
// server, and the conduit's flow is not in the bypass map.
func inspectedModbus(t *testing.T, l *netns.Line, g *xdpGW) {
	t.Helper()
	srv := newModbusRecorder(t, l.Server)
	var c net.Conn
	if err := l.Client.Do(func() (err error) { c, err = net.DialTimeout("tcp4", "192.0.2.2:502", 3*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	read := []byte{0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 2}
	write := []byte{0, 2, 0, 0, 0, 6, 1, 6, 0, 5, 0, 42}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(read); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, 256)
	if n, err := c.Read(resp); err != nil || n < 9 || resp[7] != 3 {
		t.Fatalf("read response: %x, %v", resp[:n], err)
	}
	if _, err := c.Write(write); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(resp)
	if err != nil || n < 9 || resp[7] != 0x86 {
		t.Errorf("write on the read-only rule: response %x, %v, want a Modbus exception (fc 0x86)", resp[:n], err)
	}
	time.Sleep(200 * time.Millisecond)
	if got := srv.received(); !bytes.Equal(got, read) {
		t.Errorf("the Modbus server received %x, want only the read request %x", got, read)
	}
	if st := g.status(); conduitXDP(st, "hmi-plc").Flows != 0 || conduitXDP(st, "hmi-plc").Packets != 0 {
		t.Errorf("the inspected conduit's flow is in the bypass map: %+v", conduitXDP(st, "hmi-plc"))
	}
}

// modbusRecorder is a Modbus/TCP server for one connection: it records
// every byte and answers each read holding registers request (FC 3).
type modbusRecorder struct {
	mu  sync.Mutex
	got []byte
}

func (m *modbusRecorder) received() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.got...)
}

func newModbusRecorder(t *testing.T, ns *netns.NS) *modbusRecorder {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", "0.0.0.0:502"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	m := &modbusRecorder{}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 260)
		for {
			if _, err := io.ReadFull(c, buf[:7]); err != nil {
				return
			}
			n := int(binary.BigEndian.Uint16(buf[4:6])) - 1
			if n < 1 || n > 253 {
				return
			}
			if _, err := io.ReadFull(c, buf[7:7+n]); err != nil {
				return
			}
			m.mu.Lock()
			m.got = append(m.got, buf[:7+n]...)
			m.mu.Unlock()
			if buf[7] == 3 && n == 5 {
				qty := int(binary.BigEndian.Uint16(buf[10:12]))
				resp := append([]byte(nil), buf[:4]...)
				resp = binary.BigEndian.AppendUint16(resp, uint16(3+2*qty))
				resp = append(resp, buf[6], 3, byte(2*qty))
				resp = append(resp, make([]byte, 2*qty)...)
				_, _ = c.Write(resp)
			}
		}
	}()
	return m
}

// (b) A policy reload that removes the plain conduit takes its flow out
// of the fast path, and the engine, re-judging the flow's next frame,
// cuts it: the stream stops.
func TestXDPReloadRemovesConduit(t *testing.T) {
	l := xdpLine(t)
	g := startXDPGateway(t, l, xdpPolicy(true), nil, xdpArgs...)
	sink := newRxSink(t, l.Server, "0.0.0.0:5001")
	stream(t, l.Client, "192.0.2.2:5001")
	waitUntil(t, "XDP to forward the stream", 20*time.Second, func() bool {
		return conduitXDP(g.status(), "hmi-bulk").Packets > 1000 && sink.N.Load() > 4<<20
	})
	gen := g.status().Policy.Generation
	if err := os.WriteFile(g.policy, []byte(xdpPolicy(false)), 0o644); err != nil {
		t.Fatal(err)
	}
	reloaded := time.Now()
	if err := g.cmd.Process.Signal(unix.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the reload", 10*time.Second, func() bool { return g.status().Policy.Generation > gen })
	waitUntil(t, "the stream to stop", 5*time.Second, func() bool { return !sink.Crossing(300 * time.Millisecond) })
	last := time.Unix(0, sink.LastRx.Load())
	t.Logf("the stream's last segment arrived %v after the policy file was rewritten", last.Sub(reloaded).Round(time.Millisecond))
	st := g.status()
	if st.XDP.Flows != 0 || st.XDP.Removed["engine"] == 0 {
		t.Errorf("after the reload the XDP map holds %d flows, removed %v; want 0 flows, one removed by the engine", st.XDP.Flows, st.XDP.Removed)
	}
	n := sink.N.Load()
	time.Sleep(time.Second)
	if sink.N.Load() != n {
		t.Errorf("%d bytes crossed more than a second after the stream stopped", sink.N.Load()-n)
	}
}

// (c) Fail-closed for the fast path through the binary: SIGKILL of otgw
// run during a bypassed stream stops it within 100 ms (the kernel receive
// time of the last segment the server read, after the kill).
func TestXDPSIGKILLStopsBypassedStream(t *testing.T) {
	l := xdpLine(t)
	g := startXDPGateway(t, l, xdpPolicy(true), nil, xdpArgs...)
	sink := newRxSink(t, l.Server, "0.0.0.0:5001")
	stream(t, l.Client, "192.0.2.2:5001")
	waitUntil(t, "XDP to forward the stream", 20*time.Second, func() bool {
		return conduitXDP(g.status(), "hmi-bulk").Packets > 1000 && sink.N.Load() > 4<<20
	})
	killStopsStream(t, g, sink)
	for _, port := range []string{l.North, l.South} {
		if out := l.Gateway.IP("-d", "link", "show", port); strings.Contains(out, "xdp") {
			t.Errorf("%s still has an XDP program after otgw run died:\n%s", port, out)
		}
	}
}

// (d) --xdp auto where XDP cannot attach: one log line, status
// "unavailable", and every flow forwarded in user space; two ways: AF_XDP
// ports on veths (only generic mode could feed them, and auto never takes
// it; with packet sockets auto takes the tc bypass: TestTCBypassThroughRun)
// and the fault-injection variable. --xdp on refuses to start instead, also
// on the natural failure of a process without CAP_BPF and CAP_SYS_ADMIN
// (setpriv drops them from the bounding set: bpf(2) refuses the map with
// EPERM).
func TestXDPAutoFallsBack(t *testing.T) {
	l := xdpLine(t)
	for _, tc := range []struct {
		name      string
		env, args []string
	}{
		{"AF_XDP on veth ports (generic mode only)", nil, []string{"--io", "xdp"}},
		{"fault injection", []string{"OTGW_FAULT_XDP_UNAVAILABLE=1"}, nil},
		// On veth with packet sockets auto tries tc only.
		{"fault injection: tc", []string{"OTGW_FAULT_XDP_UNAVAILABLE=tc"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := startXDPGateway(t, l, xdpPolicy(true), tc.env, append([]string{"--xdp", "auto"}, tc.args...)...)
			st := g.status()
			if st.XDP == nil || st.XDP.State != "unavailable" || !strings.Contains(st.XDP.Reason, "not available") {
				t.Fatalf("status xdp: %+v, want unavailable with the reason", st.XDP)
			}
			if n := strings.Count(g.out.String(), "fast path unavailable"); n != 1 {
				t.Errorf("%d log lines about the fall-back, want 1:\n%s", n, lastLines(g.out.String(), 20))
			}
			sink := newRxSink(t, l.Server, "0.0.0.0:5001")
			stream(t, l.Client, "192.0.2.2:5001")
			waitUntil(t, "the stream to carry 1 MiB in user space", 20*time.Second, func() bool { return sink.N.Load() > 1<<20 })
			if e := g.enginePackets("hmi-bulk"); e < 100 {
				t.Errorf("the engine counted %d frames of the stream, want all of them (>= 100)", e)
			}
			m, err := g.get("/metrics")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(m, []byte(`otgw_xdp_state{state="unavailable"} 1`)) {
				t.Errorf("/metrics lacks otgw_xdp_state{state=\"unavailable\"} 1")
			}
			_ = g.cmd.Process.Kill()
			<-g.done
		})
	}
	for _, tc := range []struct {
		name, want string
		env, wrap  []string
	}{
		{"on refuses to start: fault injection", "fault injection", []string{"OTGW_FAULT_XDP_UNAVAILABLE=1"}, nil},
		{"on refuses to start: no CAP_BPF", "operation not permitted", nil, []string{"setpriv", "--bounding-set", "-bpf,-sys_admin,-perfmon", "--"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			dir := t.TempDir()
			pol := filepath.Join(dir, "p.yaml")
			if err := os.WriteFile(pol, []byte(xdpPolicy(true)), 0o644); err != nil {
				t.Fatal(err)
			}
			args := append([]string(nil), tc.wrap...)
			if len(args) > 0 {
				if _, err := exec.LookPath(args[0]); err != nil {
					testenv.NeedCmd(t, args[0])
				}
			}
			args = append(args, os.Args[0], "run", "--policy", pol, "--board", "sim", "--ports", l.North+","+l.South,
				"--spool", filepath.Join(dir, "spool"), "--xdp", "on")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := l.Gateway.Command(ctx, args[0], args[1:]...)
			cmd.Env = append(append(os.Environ(), "OTGW_TEST_MAIN=1"), tc.env...)
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitRuntime || !strings.Contains(out.String(), "--xdp on") ||
				!strings.Contains(out.String(), tc.want) {
				t.Errorf("otgw run --xdp on without XDP: %v, want exit %d naming --xdp on and %q:\n%s", err, exitRuntime, tc.want, lastLines(out.String(), 10))
			}
		})
	}
}

// A datapath that fails takes the bypassed flows with it: the restarted
// datapath has a new engine and flow table, which never saw them, so the
// XDP map is flushed (nothing the failed engine let through forwards
// meanwhile) and the stream stops (its frames, now in user space, belong
// to no flow of the new table).
func TestXDPDatapathRestartFlushes(t *testing.T) {
	l := xdpLine(t)
	g := startXDPGateway(t, l, xdpPolicy(true), []string{"OTGW_FAULT_PANIC_AFTER_FRAMES=200"}, xdpArgs...)
	sink := newRxSink(t, l.Server, "0.0.0.0:5001")
	stream(t, l.Client, "192.0.2.2:5001")
	waitUntil(t, "XDP to forward the stream", 20*time.Second, func() bool {
		return conduitXDP(g.status(), "hmi-bulk").Packets > 1000 && sink.N.Load() > 4<<20
	})
	// Modbus polls cross the engine until it panics on its 200th frame.
	newModbusRecorder(t, l.Server)
	var c net.Conn
	if err := l.Client.Do(func() (err error) { c, err = net.DialTimeout("tcp4", "192.0.2.2:502", 3*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	read := []byte{0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 2}
	resp := make([]byte, 64)
	deadline := time.Now().Add(20 * time.Second)
	for g.status().DatapathRestarts == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no datapath restart within 20 s of Modbus polls")
		}
		_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Write(read); err == nil {
			_, _ = c.Read(resp)
		}
	}
	restarted := time.Now() // at least restartDelay (1 s) after the panic
	waitUntil(t, "the bypassed stream to stop after the restart", 5*time.Second, func() bool { return !sink.Crossing(300 * time.Millisecond) })
	// Flushed when the datapath failed, not when the new one started: the
	// stream stopped well before the restart was counted.
	if last := time.Unix(0, sink.LastRx.Load()); restarted.Sub(last) < 500*time.Millisecond {
		t.Errorf("the bypassed stream crossed until %v before the restart was counted, want it stopped at the failure (>= 500 ms before)",
			restarted.Sub(last).Round(time.Millisecond))
	}
	st := g.status()
	if st.XDP.Flows != 0 || st.XDP.Removed["restart"] == 0 {
		t.Errorf("after the restart the XDP map holds %d flows, removed %v; want 0, one removed for the restart", st.XDP.Flows, st.XDP.Removed)
	}
}

// killStopsStream SIGKILLs the gateway while a bypassed stream crosses
// into sink and checks that the stream stops within 100 ms and nothing
// crosses from 150 ms to 1.15 s after the kill (fail-closed: the kernel
// program dies with the process).
func killStopsStream(t *testing.T, g *xdpGW, sink *netns.RxSink) {
	t.Helper()
	waitUntil(t, "data crossing in the 20 ms before the kill", 5*time.Second, func() bool { return sink.Crossing(20 * time.Millisecond) })
	killed := time.Now()
	if err := g.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-g.done
	time.Sleep(150 * time.Millisecond)
	atLimit := sink.N.Load()
	time.Sleep(time.Second)
	stopped := time.Unix(0, sink.LastRx.Load()).Sub(killed)
	t.Logf("bypassed stream stopped %v after SIGKILL of otgw run", stopped.Round(10*time.Microsecond))
	if stopped > 100*time.Millisecond {
		t.Errorf("stream still crossing %v after SIGKILL, want < 100ms", stopped)
	}
	if sink.N.Load() != atLimit {
		t.Errorf("%d bytes crossed between 150 ms and 1.15 s after the kill", sink.N.Load()-atLimit)
	}
}

// TestXDPOnFallsBackToGeneric: --xdp on tries the modes in order; where
// tc cannot attach (fault injection of tc alone) it takes generic mode,
// says so in one log line and in the status's reason, and the bypass
// forwards the plain conduit's stream.
func TestXDPOnFallsBackToGeneric(t *testing.T) {
	l := xdpLine(t)
	g := startXDPGateway(t, l, xdpPolicy(true), []string{"OTGW_FAULT_XDP_UNAVAILABLE=tc"}, "--xdp", "on")
	st := g.status()
	if st.XDP == nil || st.XDP.State != "attached" || st.XDP.NorthMode != "generic" || st.XDP.SouthMode != "generic" ||
		!strings.Contains(st.XDP.Reason, "tc mode: ") || !strings.Contains(st.XDP.Reason, "fault injection") {
		t.Fatalf("status xdp: %+v, want attached in generic mode with tc's failure as the reason", st.XDP)
	}
	if n := strings.Count(g.out.String(), "fast path attached after a mode was unavailable"); n != 1 {
		t.Errorf("%d log lines about the fall-back, want 1:\n%s", n, lastLines(g.out.String(), 20))
	}
	if n := l.TCXPrograms(t); n != [2]int{} {
		t.Errorf("tcx ingress programs on the ports: %v, want none (tc failed)", n)
	}
	sink := newRxSink(t, l.Server, "0.0.0.0:5001")
	stream(t, l.Client, "192.0.2.2:5001")
	waitUntil(t, "generic XDP to forward the plain conduit's flow", 20*time.Second, func() bool {
		return conduitXDP(g.status(), "hmi-bulk").Packets > 1000 && sink.N.Load() > 1<<20
	})
}
