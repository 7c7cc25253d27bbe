package e2e

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/simulate/capture"
)

// benchPolicy allows what the benchmark sends: Modbus reads, UDP to port 9
// (small-packet blast) and TCP to port 5001 (bulk throughput).
const benchPolicy = `version: 1
name: bench
mode: enforce
action: drop
zones:
  clients: { port: north, networks: [192.0.2.0/25] }
  servers: { port: south, networks: [192.0.2.128/25] }
l2: { allow: [arp] }
conduits:
  - name: bench
    from: clients
    to: servers
    rules:
      - modbus:
          allow:
            - read: holding 0-99
      - udp: { ports: [9] }
      - tcp: { ports: [5001] }
`

// benchLine is netns.Line with the server in the other half of the /24 so
// the policy's zones split client and server.
func benchLine(t *testing.T) *netns.Line {
	l := &netns.Line{
		Client: netns.New(t, "bcli"), Gateway: netns.New(t, "bgw"), Server: netns.New(t, "bsrv"),
		ClientAddr: "192.0.2.1", ServerAddr: "192.0.2.130", North: "north0", South: "south0",
	}
	netns.Veth(t, l.Client, "eth0", l.Gateway, l.North)
	netns.Veth(t, l.Gateway, l.South, l.Server, "eth0")
	l.Client.Addr("eth0", l.ClientAddr+"/24")
	l.Server.Addr("eth0", l.ServerAddr+"/24")
	for _, ns := range []*netns.NS{l.Client, l.Server} {
		ns.MustRun("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
		// Offloads off on the peers too, so kernel bridge and gateway see
		// the same wire-sized frames.
		offloadsOff(t, ns, "eth0")
	}
	return l
}

// offloadsOff is `ethtool -K DEV tso off gso off gro off` through hal's
// ethtool ioctl (no dependency on the ethtool program: without it, TSO
// frames of up to 64 KiB would reach the gateway and be dropped as
// truncated, and the TCP figure would measure that).
func offloadsOff(t *testing.T, ns *netns.NS, dev string) {
	t.Helper()
	err := ns.Do(func() error {
		have, err := hal.Features(dev)
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
		return hal.SetFeatures(dev, want)
	})
	if err != nil {
		t.Fatalf("offloads off on %s in %s: %v", dev, ns.Name, err)
	}
}

type benchResult struct {
	smallPPS          float64 // frames/s delivered
	smallSent         float64
	tcpBps            float64
	rttP50, rttP99    time.Duration
	cpuPerPkt         time.Duration // gateway process CPU per forwarded small frame
	rttCPU            float64       // gateway CPU time / wall time during the RTT phase
	rssKB, flows      int
	rssIdleKB         int
	polls, pollErrors int
	xdpRedirected     float64       // frames the XDP bypass forwarded (variants with --xdp on)
	drops, tcpDrops   float64       // the ports' kernel drops (socket or ring full) in the small-packet and the TCP phase
	mb                mbFloodResult // the Modbus flood phase (pipelined reads on the inspected conduit)
	mbCPUPerSeg       time.Duration // gateway process CPU per forwarded TCP segment in the Modbus flood
	mbCPUPerPDU       time.Duration // the same per Modbus PDU
	mbCPU             float64       // gateway CPU time / wall time in the Modbus flood
	mbPerBatch        float64       // frames the gateway received per read batch in the Modbus flood
	// The alternated rounds of the Modbus flood (OTGW_BENCH_MB_ROUNDS):
	// per round, otgw's PDU rate / the bridge's and the bridge's path CPU
	// per PDU / otgw's.
	mbRoundRate, mbRoundCPU []float64
	mbAllowed               float64 // PDUs the gateway allowed in the Modbus flood
	mbRefused               float64 // PDUs denied or alerted and flows denied in the Modbus flood
}

const benchPhase = 2 * time.Second

// smallPackets blasts 60-byte UDP frames from the client port to the
// server for d and counts what the server's port receives.
func smallPackets(t *testing.T, l *netns.Line) (sentPPS, gotPPS float64) {
	t.Helper()
	cmac := macOf(t, l.Client, "eth0")
	smac := macOf(t, l.Server, "eth0")
	var tx, rx hal.Port
	if err := l.Client.Do(func() (err error) { tx, err = hal.OpenPort("eth0", hal.PortOptions{NoPromisc: true}); return err }); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if err := l.Server.Do(func() (err error) { rx, err = hal.OpenPort("eth0", hal.PortOptions{NoPromisc: true}); return err }); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	src := capture.Endpoint{MAC: cmac, Addr: netip.MustParseAddrPort(l.ClientAddr + ":40000")}
	dst := capture.Endpoint{MAC: smac, Addr: netip.MustParseAddrPort(l.ServerAddr + ":9")}
	frame := capture.UDPDatagram(src, dst, make([]byte, 18)) // 60 bytes on the wire
	// One datagram each way first: a UDP flow the server answered, which
	// the XDP bypass takes over (it never takes an unanswered one); the
	// same for every column.
	if _, err := tx.WriteBatch([][]byte{frame}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if _, err := rx.WriteBatch([][]byte{capture.UDPDatagram(dst, src, make([]byte, 18))}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	var got atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		bufs := make([][]byte, hal.MaxBatch)
		for i := range bufs {
			bufs[i] = make([]byte, 2048)
		}
		sizes := make([]int, hal.MaxBatch)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, _ := rx.ReadBatch(bufs, sizes, nil)
			for i := 0; i < n; i++ {
				if sizes[i] >= 42 && sizes[i] <= 64 && bufs[i][23] == 17 {
					got.Add(1)
				}
			}
		}
	}()
	batch := make([][]byte, 64)
	for i := range batch {
		batch[i] = frame
	}
	var sent int64
	start := time.Now()
	for time.Since(start) < benchPhase {
		n, _ := tx.WriteBatch(batch)
		sent += int64(n)
	}
	el := time.Since(start)
	time.Sleep(200 * time.Millisecond) // let the queues drain
	close(stop)
	<-done
	return float64(sent) / el.Seconds(), float64(got.Load()) / el.Seconds()
}

func macOf(t *testing.T, ns *netns.NS, dev string) [6]byte {
	out := ns.IP("-o", "link", "show", dev)
	i := strings.Index(out, "link/ether ")
	if i < 0 {
		t.Fatalf("no MAC in %q", out)
	}
	hw, err := net.ParseMAC(strings.Fields(out[i+len("link/ether "):])[0])
	if err != nil {
		t.Fatal(err)
	}
	var m [6]byte
	copy(m[:], hw)
	return m
}

// tcpThroughput sends bulk TCP from client to server for d.
func tcpThroughput(t *testing.T, l *netns.Line) float64 {
	t.Helper()
	var ln net.Listener
	if err := l.Server.Do(func() (err error) { ln, err = net.Listen("tcp", "0.0.0.0:5001"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var got atomic.Int64
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got.Store(n)
	}()
	var c net.Conn
	if err := l.Client.Do(func() (err error) { c, err = net.DialTimeout("tcp", l.ServerAddr+":5001", 3*time.Second); return err }); err != nil {
		t.Fatalf("tcp bench dial: %v", err)
	}
	buf := make([]byte, 64<<10)
	start := time.Now()
	var sent int64
	_ = c.SetWriteDeadline(start.Add(benchPhase + time.Second))
	for time.Since(start) < benchPhase {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			break
		}
	}
	el := time.Since(start)
	c.Close()
	return float64(sent) * 8 / el.Seconds()
}

// modbusRTT polls at 500 polls/s for 2 s and returns p50 and p99.
func modbusRTT(t *testing.T, l *netns.Line) (p50, p99 time.Duration, n, errs int) {
	t.Helper()
	var lat []time.Duration
	err := l.Client.Do(func() error {
		h := modbus.NewTCPClientHandler(l.ServerAddr + ":502")
		h.SlaveId, h.Timeout = 1, time.Second
		// The SYN may be lost in the tail of the TCP phase (the ports'
		// rings overflow under the bulk stream on a loaded machine; the
		// client retransmits only after 1 s, the dial timeout): a
		// connect is not a poll, so retry it.
		var err error
		for try := 0; try < 3; try++ {
			if err = h.Connect(); err == nil {
				break
			}
		}
		if err != nil {
			return err
		}
		defer h.Close()
		c := modbus.NewClient(h)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 1000; i++ {
			<-tick.C
			s := time.Now()
			if _, err := c.ReadHoldingRegisters(0, 10); err != nil {
				errs++
				continue
			}
			lat = append(lat, time.Since(s))
		}
		return nil
	})
	if err != nil || len(lat) == 0 {
		t.Fatalf("modbus rtt: %v (%d ok)", err, len(lat))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[len(lat)/2], lat[len(lat)*99/100], len(lat), errs
}

func procCPU(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b)[strings.LastIndex(string(b), ")")+2:])
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return time.Duration(u+s) * time.Second / 100 // USER_HZ = 100
}

func procRSS(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(ln, "VmRSS:") {
			kb, _ := strconv.Atoi(strings.Fields(ln)[1])
			return kb
		}
	}
	return 0
}

// openFlows sends 10,000 SYNs with distinct source ports from the client
// port; each becomes a flow in the gateway's table.
func openFlows(t *testing.T, l *netns.Line, n int) {
	cmac, smac := macOf(t, l.Client, "eth0"), macOf(t, l.Server, "eth0")
	var tx hal.Port
	if err := l.Client.Do(func() (err error) { tx, err = hal.OpenPort("eth0", hal.PortOptions{NoPromisc: true}); return err }); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	var batch [][]byte
	for i := 0; i < n; i++ {
		// Source addresses .2-.101 x ports: distinct 5-tuples the client
		// kernel does not own (no RST from it).
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(2 + i%100)}), uint16(20000+i/100))
		fl := capture.NewTCPFlow(capture.Endpoint{MAC: cmac, Addr: src},
			capture.Endpoint{MAC: smac, Addr: netip.MustParseAddrPort(l.ServerAddr + ":5001")})
		batch = append(batch, fl.Handshake()[0])
		if len(batch) == 64 || i == n-1 {
			if _, err := tx.WriteBatch(batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond)
}

// benchVariant is one way of running the gateway in the benchmark: an
// `otgw run --io` mode, optionally with --spin-read or --xdp on.
type benchVariant struct {
	io   string // ring | mmsg
	spin string // --spin-read value, "" for none
	xdp  bool   // --xdp on (else --xdp off)
	// native: --xdp on --xdp-attach native, with the peers set up as a
	// native redirect between veths needs (GRO on, transmit checksumming
	// off: nativePeers) for this variant and the bridge measured before it.
	native bool
	// generic: --xdp-attach generic (the AF_XDP ports' own programs in
	// generic mode).
	generic bool
	// tc: --xdp on --xdp-attach tc (the bypass as a tcx ingress program
	// with its socket filter on the ring or mmsg ports).
	tc   bool
	busy bool // --busy-poll (AF_XDP, with /spin=)
	poll bool // --poll (one thread busy-polls both ports)
}

func (v benchVariant) String() string {
	s := v.io
	if v.spin != "" {
		s += "+spin" + v.spin
	}
	if v.xdp {
		s += " --xdp on"
	}
	if v.native {
		s += " --xdp-attach native (peers: GRO on, tx csum off)"
	}
	if v.generic {
		s += " --xdp-attach generic"
	}
	if v.tc {
		s += " --xdp-attach tc"
	}
	if v.busy {
		s += " --busy-poll"
	}
	if v.poll {
		s += " --poll"
	}
	return s
}

// benchVariants parses OTGW_BENCH_IO, a comma-separated list of
// MODE[/spin=DURATION][/xdp][/native][/generic][/tc][/busy][/poll] (default
// "ring,mmsg").
func benchVariants(t *testing.T) []benchVariant {
	spec := os.Getenv("OTGW_BENCH_IO")
	if spec == "" {
		spec = "ring,mmsg"
	}
	var vs []benchVariant
	for _, f := range strings.Split(spec, ",") {
		parts := strings.Split(strings.TrimSpace(f), "/")
		v := benchVariant{io: parts[0]}
		for _, opt := range parts[1:] {
			if d, ok := strings.CutPrefix(opt, "spin="); ok {
				if _, err := time.ParseDuration(d); err != nil {
					t.Fatalf("OTGW_BENCH_IO %q: %v", f, err)
				}
				v.spin = d
			} else if opt == "xdp" {
				v.xdp = true
			} else if opt == "native" {
				v.xdp, v.native = true, true
			} else if opt == "generic" {
				v.generic = true
			} else if opt == "tc" {
				v.xdp, v.tc = true, true
			} else if opt == "busy" {
				v.busy = true
			} else if opt == "poll" {
				v.poll = true
			} else {
				t.Fatalf("OTGW_BENCH_IO %q: want MODE[/spin=DURATION][/xdp][/native][/generic][/tc][/busy][/poll]", f)
			}
		}
		vs = append(vs, v)
	}
	return vs
}

// stop ends the gateway with SIGTERM (SIGKILL after 5 s) and reaps it.
func (g *gw) stop() {
	g.t.Helper()
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = g.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = g.cmd.Process.Kill()
		<-done
	}
}

// args is the variant's `otgw run` arguments.
func (v benchVariant) args() []string {
	args := []string{"--io", v.io, "--xdp", "off"}
	if v.xdp {
		args[3] = "on"
	}
	if v.native {
		args = append(args, "--xdp-attach", "native")
	}
	if v.generic {
		args = append(args, "--xdp-attach", "generic")
	}
	if v.tc {
		args = append(args, "--xdp-attach", "tc")
	}
	if v.busy {
		args = append(args, "--busy-poll")
	}
	if v.poll {
		args = append(args, "--poll")
	}
	if v.spin != "" {
		args = append(args, "--spin-read", v.spin)
	}
	return args
}

// startBenchGateway starts otgw run for the variant (with extra
// arguments) on the line and checks it got the I/O method asked for.
func startBenchGateway(t *testing.T, l *netns.Line, v benchVariant, extra ...string) *gw {
	t.Helper()
	g := startGateway(t, l, benchPolicy, append(v.args(), extra...)...)
	if !strings.Contains(g.out.String(), "io="+v.io) {
		// The daemon logs the I/O method it got; a silent fallback would
		// make the comparison meaningless.
		time.Sleep(200 * time.Millisecond)
		if !strings.Contains(g.out.String(), "io="+v.io) {
			g.stop()
			t.Fatalf("gateway not running with io=%s:\n%s", v.io, tail(g.out.String(), 20))
		}
	}
	return g
}

// benchGateway measures one variant of the gateway on the line.
func benchGateway(t *testing.T, l *netns.Line, v benchVariant) benchResult {
	var gr benchResult
	var extra []string
	prof := benchProfileDir(t)
	if prof != "" {
		extra = append(extra, "--cpuprofile", filepath.Join(prof, strings.ReplaceAll(v.String(), " ", "")+".pprof"))
	}
	g := startBenchGateway(t, l, v, extra...)
	defer g.stop()
	pid := g.cmd.Process.Pid
	gr.rssIdleKB = procRSS(t, pid)
	c0 := procCPU(t, pid)
	name := strings.ReplaceAll(v.String(), " ", "")
	stopPerf := perfRecord(t, prof, pid, name+"-small")
	gr.smallSent, gr.smallPPS = smallPackets(t, l)
	stopPerf()
	cpu := procCPU(t, pid) - c0
	if gr.smallPPS > 0 {
		gr.cpuPerPkt = time.Duration(float64(cpu) / (gr.smallPPS * benchPhase.Seconds()))
	}
	gr.drops = portDrops(g.statusJSON())
	stopPerf = perfRecord(t, prof, pid, name+"-tcp")
	gr.tcpBps = tcpThroughput(t, l)
	stopPerf()
	gr.tcpDrops = portDrops(g.statusJSON()) - gr.drops
	c0, t0 := procCPU(t, pid), time.Now()
	gr.rttP50, gr.rttP99, gr.polls, gr.pollErrors = modbusRTT(t, l)
	gr.rttCPU = float64(procCPU(t, pid)-c0) / float64(time.Since(t0))
	gr.mbFlood(t, l, g, pid, perfRecord(t, prof, pid, name+"-modbus"))
	gr.xdpRedirected = counter(g.statusJSON(), "xdp", "frames", "redirected")
	openFlows(t, l, 10000)
	gr.rssKB = procRSS(t, pid)
	gr.flows = int(counter(g.statusJSON(), "flows", "active"))
	return gr
}

// nativePeers sets the client's and server's veth up for a native-mode
// XDP redirect between the gateway's veths (on), or back (off): a native
// redirect to a veth needs NAPI on its peer (GRO on) and carries no
// CHECKSUM_PARTIAL state, so the senders must complete their checksums
// (hal/xdp doc.go).
func nativePeers(t *testing.T, l *netns.Line, on bool) {
	t.Helper()
	for _, ns := range []*netns.NS{l.Client, l.Server} {
		err := ns.Do(func() error {
			have, err := hal.Features("eth0")
			if err != nil {
				return err
			}
			want := map[string]bool{"rx-gro": on}
			if _, ok := have["tx-checksum-ip-generic"]; ok { // veth's one checksum feature
				want["tx-checksum-ip-generic"] = !on
			}
			return hal.SetFeatures("eth0", want)
		})
		if err != nil {
			t.Fatalf("peer features in %s: %v", ns.Name, err)
		}
	}
}

// portDrops sums the ports' kernel_drops in a status document.
func portDrops(st map[string]any) float64 {
	ps, _ := st["ports"].([]any)
	sum := 0.0
	for _, p := range ps {
		if m, ok := p.(map[string]any); ok {
			sum += counter(m, "stats", "kernel_drops")
		}
	}
	return sum
}

// benchProfileDir returns $OTGW_BENCH_PROFILE, a directory that receives
// a copy of the otgw binary (so that pprof resolves symbols), one Go CPU
// profile per variant (VARIANT.pprof, the whole run of `otgw run
// --cpuprofile`) and, when the perf program is installed, one system-wide
// profile of the gateway process per phase (VARIANT-small.perf,
// VARIANT-tcp.perf: user and kernel stacks, which the Go profile lacks).
// "" when unset: no profiling.
func benchProfileDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("OTGW_BENCH_PROFILE")
	if dir == "" {
		return ""
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(otgwBinary(t))
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "otgw"), bin, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// perfRecord samples the process pid with `perf record -g` into
// DIR/NAME.perf until the returned function is called; a no-op when dir
// is "" or perf is not installed.
func perfRecord(t *testing.T, dir string, pid int, name string) (stop func()) {
	t.Helper()
	if dir == "" {
		return func() {}
	}
	return runPerf(t, "record", "-q", "-g", "-F", "2000", "-p", strconv.Itoa(pid), "-o", filepath.Join(dir, name+".perf"))
}

// runPerf starts `perf ARGS...` (perf sub-command first) and gives it
// 100 ms to attach; stop interrupts it (perf then writes its file) and
// waits. A no-op, and stop too, when perf is not installed or does not
// start (logged).
func runPerf(t *testing.T, args ...string) (stop func()) {
	t.Helper()
	perf, err := exec.LookPath("perf")
	if err != nil {
		return func() {}
	}
	cmd := exec.Command(perf, args...)
	if err := cmd.Start(); err != nil {
		t.Logf("perf %s: %v", args[0], err)
		return func() {}
	}
	time.Sleep(100 * time.Millisecond) // let perf attach before the phase starts
	return func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
	}
}

// TestDatapathBench is `make bench-datapath`: the kernel bridge and the
// gateway on the same topology in the same run, the gateway once per
// variant of OTGW_BENCH_IO (default: ring, then mmsg). Enabled by
// OTGW_BENCH_DATAPATH=1; the result table goes to the log and to
// $OTGW_BENCH_OUT when set.
func TestDatapathBench(t *testing.T) {
	if os.Getenv("OTGW_BENCH_DATAPATH") != "1" {
		t.Skip("set OTGW_BENCH_DATAPATH=1 (make bench-datapath)")
	}
	testenv.NeedRoot(t)
	variants := benchVariants(t)
	l := benchLine(t)
	servePLC(t, l)

	// Kernel bridge, offloads off on its ports as the gateway has them.
	bridge := func() benchResult {
		var br benchResult
		removeBridge := kernelBridge(t, l)
		br.smallSent, br.smallPPS = smallPackets(t, l)
		br.tcpBps = tcpThroughput(t, l)
		br.rttP50, br.rttP99, br.polls, br.pollErrors = modbusRTT(t, l)
		br.mb = modbusFlood(t, l)
		if br.mb.errors() != 0 {
			t.Errorf("modbus flood through the kernel bridge: %v", br.mb)
		}
		removeBridge()
		return br
	}
	br := bridge()

	// The gateway, once per variant, each right after a measurement of
	// the bridge's small packets and TCP (the ratios are to that one: on
	// a shared machine the load moves between phases).
	grs := make([]benchResult, len(variants))
	pairs := make([]benchResult, len(variants))
	for i, v := range variants {
		if v.native {
			nativePeers(t, l, true)
		}
		if i > 0 || v.native {
			pairs[i] = bridge()
		} else {
			pairs[i] = br
		}
		grs[i] = benchGateway(t, l, v)
		if n := mbFloodRounds(t); n > 0 {
			grs[i].mbRoundRate, grs[i].mbRoundCPU = mbAlternate(t, l, v, n)
		}
		if v.native {
			nativePeers(t, l, false)
		}
	}
	// The floor: a bare forwarder on the same ports, right after a round
	// trip and a flood through the bridge.
	var floorBridge benchResult
	removeBridge := kernelBridge(t, l)
	floorBridge.rttP50, floorBridge.rttP99, _, _ = modbusRTT(t, l)
	floorBridge.mb = modbusFlood(t, l)
	removeBridge()
	floor := benchFloor(t, l)

	ratio := func(a, b float64) string {
		if b == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	var b strings.Builder
	var pair benchResult // the bridge measured right before the variant of the cell
	row := func(measure, bridge, goal string, cell func(gr benchResult) string) {
		fmt.Fprintf(&b, "| %s | %s |", measure, bridge)
		for i, gr := range grs {
			pair = pairs[i]
			fmt.Fprintf(&b, " %s |", cell(gr))
		}
		fmt.Fprintf(&b, " %s |\n", goal)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "load average at the end: %s\n\n", strings.TrimSpace(string(load)))
	fmt.Fprintf(&b, "| measure | kernel bridge |")
	for _, v := range variants {
		fmt.Fprintf(&b, " otgw --io %s |", v)
	}
	fmt.Fprintf(&b, " goal |\n|---|---|")
	for range variants {
		fmt.Fprintf(&b, "---|")
	}
	fmt.Fprintf(&b, "---|\n")
	us := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
	added := func(d time.Duration) string {
		if d < 0 {
			return us(d).String()
		}
		return "+" + us(d).String()
	}
	row("small packets (60 B UDP, frames/s delivered; offered) [bridge right before]", fmt.Sprintf("%.0f (%.0f)", br.smallPPS, br.smallSent), ">= 1.0x (plain udp conduit)",
		func(gr benchResult) string {
			return fmt.Sprintf("%.0f (%.0f): **%s** [%.0f]", gr.smallPPS, gr.smallSent, ratio(gr.smallPPS, pair.smallPPS), pair.smallPPS)
		})
	row("TCP throughput (one stream) [bridge right before]", fmt.Sprintf("%.0f Mbit/s", br.tcpBps/1e6), ">= 1.0x (plain tcp conduit)",
		func(gr benchResult) string {
			return fmt.Sprintf("%.0f Mbit/s: **%s** [%.0f]", gr.tcpBps/1e6, ratio(gr.tcpBps, pair.tcpBps), pair.tcpBps/1e6)
		})
	row("Modbus RTT p50 at 500 polls/s (polls, errors) [bridge right before]", fmt.Sprintf("%v (%d, %d)", us(br.rttP50), br.polls, br.pollErrors), "<= +50 us",
		func(gr benchResult) string {
			return fmt.Sprintf("%v (%d, %d): **%s** [%v]", us(gr.rttP50), gr.polls, gr.pollErrors, added(gr.rttP50-pair.rttP50), us(pair.rttP50))
		})
	row("Modbus RTT p99 at 500 polls/s [bridge right before]", fmt.Sprintf("%v", us(br.rttP99)), "<= +150 us",
		func(gr benchResult) string {
			return fmt.Sprintf("%v: **%s** [%v]", us(gr.rttP99), added(gr.rttP99-pair.rttP99), us(pair.rttP99))
		})
	row("small Modbus frames, inspected conduit (pipelined reads: 4 connections x 8 outstanding), Modbus PDUs/s delivered (TCP segments/s) [bridge right before]",
		fmt.Sprintf("%.0f (%.0f)", br.mb.pdusPerSec(), br.mb.segsPerSec()), ">= 0.9x",
		func(gr benchResult) string {
			return fmt.Sprintf("%.0f (%.0f): **%s** [%.0f]", gr.mb.pdusPerSec(), gr.mb.segsPerSec(), ratio(gr.mb.pdusPerSec(), pair.mb.pdusPerSec()), pair.mb.pdusPerSec())
		})
	perSeg := func(r mbFloodResult) string { rq, rs := r.pdusPerSeg(); return fmt.Sprintf("%.2f / %.2f", rq, rs) }
	row("Modbus flood: PDUs per data segment, requests / responses", perSeg(br.mb), "",
		func(gr benchResult) string { return perSeg(gr.mb) })
	row("Modbus flood: PDUs allowed / refused by otgw (errors at the client)", fmt.Sprintf("(%d)", br.mb.errors()), "refused 0, errors 0",
		func(gr benchResult) string {
			return fmt.Sprintf("%.0f / %.0f (%d)", gr.mbAllowed, gr.mbRefused, gr.mb.errors())
		})
	cores := func(r mbFloodResult) float64 { return float64(r.endpointCPU) / float64(r.elapsed) }
	row("Modbus flood: CPU in cores, endpoints (test process: client + PLC server) / otgw", fmt.Sprintf("%.2f", cores(br.mb)), "",
		func(gr benchResult) string { return fmt.Sprintf("%.2f / %.2f", cores(gr.mb), gr.mbCPU) })
	row("Modbus flood: CPU per delivered PDU, endpoints + otgw (bridge: endpoints, its forwarding in their system time), ratio bridge/otgw [bridge right before]",
		fmt.Sprintf("%v", br.mbPathCPU().Round(10*time.Nanosecond)), ">= 0.9x",
		func(gr benchResult) string {
			return fmt.Sprintf("%v: **%s** [%v]", gr.mbPathCPU().Round(10*time.Nanosecond), ratio(float64(pair.mbPathCPU()), float64(gr.mbPathCPU())), pair.mbPathCPU().Round(10*time.Nanosecond))
		})
	if n := mbFloodRounds(t); n > 0 {
		row(fmt.Sprintf("Modbus flood, %d alternated rounds (bridge, fresh otgw, ...): median (range) of the PDU rate ratio; of the CPU-per-PDU ratio", n), "", ">= 0.9x",
			func(gr benchResult) string {
				return fmt.Sprintf("**%s**; %s", medianRange(gr.mbRoundRate), medianRange(gr.mbRoundCPU))
			})
	}
	row("otgw CPU per forwarded frame in the Modbus flood (per PDU); frames per read batch", "", "",
		func(gr benchResult) string {
			return fmt.Sprintf("%v (%v); %.1f", gr.mbCPUPerSeg, gr.mbCPUPerPDU, gr.mbPerBatch)
		})
	row("otgw CPU per forwarded small frame", "", "",
		func(gr benchResult) string { return fmt.Sprintf("%v", gr.cpuPerPkt) })
	row("otgw CPU during the RTT phase (share of one core)", "", "",
		func(gr benchResult) string { return fmt.Sprintf("%.0f%%", 100*gr.rttCPU) })
	row("frames forwarded by the XDP bypass (small + TCP phases)", "", "",
		func(gr benchResult) string {
			if gr.xdpRedirected < 0 {
				return "(off)"
			}
			return fmt.Sprintf("%.0f", gr.xdpRedirected)
		})
	row("otgw ports' kernel drops: small-packet phase / TCP phase", "", "",
		func(gr benchResult) string { return fmt.Sprintf("%.0f / %.0f", gr.drops, gr.tcpDrops) })
	row("otgw RSS idle / with 10k flows (flows in the table)", "", "<= 32 MB",
		func(gr benchResult) string {
			return fmt.Sprintf("%.1f MiB / %.1f MiB (%d)", float64(gr.rssIdleKB)/1024, float64(gr.rssKB)/1024, gr.flows)
		})
	fmt.Fprintf(&b, "\nFloor (a bare forwarder on the same ports: hal ring I/O, one goroutine per direction as in otgw, no engine; gateway/e2e floor_test.go): "+
		"Modbus RTT p50 %v (**%s** over the bridge right before, %v), p99 %v (%s over %v); %d polls, %d errors; its CPU %.0f%% of a core. "+
		"Modbus flood %.0f PDUs/s (**%s** the bridge right before, %.0f), CPU per PDU of the whole path %v (ratio bridge/floor **%s**, bridge %v).\n",
		us(floor.rttP50), added(floor.rttP50-floorBridge.rttP50), us(floorBridge.rttP50), us(floor.rttP99), added(floor.rttP99-floorBridge.rttP99), us(floorBridge.rttP99),
		floor.polls, floor.pollErrors, 100*floor.rttCPU,
		floor.mb.pdusPerSec(), ratio(floor.mb.pdusPerSec(), floorBridge.mb.pdusPerSec()), floorBridge.mb.pdusPerSec(),
		floor.mbPathCPU().Round(10*time.Nanosecond), ratio(float64(floorBridge.mbPathCPU()), float64(floor.mbPathCPU())), floorBridge.mbPathCPU().Round(10*time.Nanosecond))
	t.Logf("\n%s", b.String())
	if out := os.Getenv("OTGW_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}
