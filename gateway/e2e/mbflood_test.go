package e2e

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols/modbus"
)

// The Modbus flood phase of the datapath benchmark: small inspected
// Modbus frames as fast as mbFloodConns pipelined connections carry them.
const (
	mbFloodConns = 4 // TCP connections from the client to the PLC (port 502)
	// mbFloodWindow is the requests each connection keeps outstanding;
	// well inside the gateway's pairing table (modbus.MaxOutstanding per
	// connection), so no request is refused as too_many_outstanding.
	mbFloodWindow = 8
	mbFloodQty    = 1 // registers per read: a 12-byte request, an 11-byte response
)

// mbFloodResult is what the Modbus flood phase measured.
type mbFloodResult struct {
	elapsed   time.Duration
	responses int64 // correct answers to outstanding requests within the phase
	requests  int64 // requests sent within the phase
	// Errors: responses with an unknown transaction id, malformed or
	// wrong-valued responses, exceptions, I/O errors, requests left
	// unanswered after the phase.
	mismatched, malformed, exceptions, ioErrors, unanswered int64
	// TCP segments of the client's connections (TCP_INFO) during the
	// phase: data segments each way and all segments (pure ACKs
	// included), i.e. every frame the bridge or gateway forwarded.
	dataSegsOut, dataSegsIn, segs int64
	// endpointCPU is the CPU time of this test process, the client and
	// the PLC server (and, through the kernel bridge, the forwarding the
	// kernel does in their system calls), during the phase.
	endpointCPU time.Duration
}

// pdusPerSec is the Modbus PDUs delivered per second: each correct
// answer and the request it answers (errors are not counted).
func (r mbFloodResult) pdusPerSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(2*r.responses) / r.elapsed.Seconds()
}

// segsPerSec is the TCP segments (frames) per second both ways.
func (r mbFloodResult) segsPerSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.segs) / r.elapsed.Seconds()
}

// pdusPerSeg is the mean Modbus PDUs per data segment: requests per
// client data segment and responses per server data segment.
func (r mbFloodResult) pdusPerSeg() (req, resp float64) {
	if r.dataSegsOut > 0 {
		req = float64(r.requests) / float64(r.dataSegsOut)
	}
	if r.dataSegsIn > 0 {
		resp = float64(r.responses) / float64(r.dataSegsIn)
	}
	return req, resp
}

func (r mbFloodResult) errors() int64 {
	return r.mismatched + r.malformed + r.exceptions + r.ioErrors + r.unanswered
}

func (r mbFloodResult) String() string {
	rq, rs := r.pdusPerSeg()
	return fmt.Sprintf("%.0f PDUs/s, %.0f segments/s, %.2f/%.2f PDUs per request/response segment, %d responses, errors: %d mismatched, %d malformed, %d exceptions, %d I/O, %d unanswered",
		r.pdusPerSec(), r.segsPerSec(), rq, rs, r.responses, r.mismatched, r.malformed, r.exceptions, r.ioErrors, r.unanswered)
}

// tcpSegs reads the connection's segment counters from TCP_INFO.
func tcpSegs(c *net.TCPConn) (dataOut, dataIn, all int64, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, 0, err
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return 0, 0, 0, err
	}
	if gerr != nil {
		return 0, 0, 0, gerr
	}
	return int64(info.Data_segs_out), int64(info.Data_segs_in), int64(info.Segs_out) + int64(info.Segs_in), nil
}

// modbusFlood opens mbFloodConns connections (TCP_NODELAY) from the client
// to the PLC on 502; each keeps mbFloodWindow Read Holding Registers
// requests outstanding (unique transaction ids) and sends a new one per
// response for benchPhase, then stops sending, collects what is still
// outstanding (bounded) and closes. Every response is checked: its
// transaction id was outstanding, it is a well-formed answer with the
// PLC's value, not an exception.
func modbusFlood(t *testing.T, l *netns.Line) mbFloodResult {
	t.Helper()
	conns := make([]*net.TCPConn, 0, mbFloodConns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for len(conns) < mbFloodConns {
		var c net.Conn
		err := l.Client.Do(func() (err error) {
			// As in modbusRTT: a SYN lost in the tail of an earlier phase
			// is retransmitted only after 1 s; a connect is not a read.
			for try := 0; try < 3; try++ {
				if c, err = net.DialTimeout("tcp", l.ServerAddr+":502", time.Second); err == nil {
					return nil
				}
			}
			return err
		})
		if err != nil {
			t.Fatalf("modbus flood dial: %v", err)
		}
		tc := c.(*net.TCPConn)
		if err := tc.SetNoDelay(true); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, tc)
	}
	results := make([]mbFloodResult, len(conns))
	var wg sync.WaitGroup
	cpu0 := procCPU(t, os.Getpid())
	start := time.Now()
	end := start.Add(benchPhase)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = floodConn(c, end)
		}()
	}
	wg.Wait()
	var r mbFloodResult
	r.endpointCPU = procCPU(t, os.Getpid()) - cpu0
	for _, x := range results {
		r.responses += x.responses
		r.requests += x.requests
		r.mismatched += x.mismatched
		r.malformed += x.malformed
		r.exceptions += x.exceptions
		r.ioErrors += x.ioErrors
		r.unanswered += x.unanswered
		r.dataSegsOut += x.dataSegsOut
		r.dataSegsIn += x.dataSegsIn
		r.segs += x.segs
	}
	r.elapsed = benchPhase
	return r
}

// floodConn runs one connection of modbusFlood until end, then drains.
func floodConn(c *net.TCPConn, end time.Time) (r mbFloodResult) {
	const unit = 1
	var (
		out     [65536]bool // transaction ids outstanding
		pending int
		tid     uint16
		req     [7 + 5]byte
	)
	send := func() bool {
		tid++
		addr := tid % 100 // holding 0-99: what benchPolicy allows
		binary.BigEndian.PutUint16(req[0:], tid)
		binary.BigEndian.PutUint16(req[2:], 0) // protocol id
		binary.BigEndian.PutUint16(req[4:], 6) // unit id + PDU
		req[6] = unit
		req[7] = modbus.FuncReadHoldingRegisters
		binary.BigEndian.PutUint16(req[8:], addr)
		binary.BigEndian.PutUint16(req[10:], mbFloodQty)
		if _, err := c.Write(req[:]); err != nil {
			r.ioErrors++
			return false
		}
		out[tid] = true
		pending++
		r.requests++
		return true
	}
	o0, i0, s0, err := tcpSegs(c)
	if err != nil {
		r.ioErrors++
		return r
	}
	_ = c.SetDeadline(end.Add(2 * time.Second)) // the phase, then the drain
	for range mbFloodWindow {
		if !send() {
			return r
		}
	}
	br := bufio.NewReaderSize(c, 4096)
	var hdr [7]byte
	var body [256]byte
	stopped := false
	for pending > 0 {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			r.ioErrors++
			break
		}
		n := int(binary.BigEndian.Uint16(hdr[4:]))
		if n < 2 || n-1 > len(body) {
			r.malformed++
			break // framing is lost
		}
		if _, err := io.ReadFull(br, body[:n-1]); err != nil {
			r.ioErrors++
			break
		}
		id := binary.BigEndian.Uint16(hdr[0:])
		pdu := body[:n-1]
		correct := false
		switch {
		case !out[id]:
			r.mismatched++
		case pdu[0]&0x80 != 0:
			r.exceptions++
		case binary.BigEndian.Uint16(hdr[2:]) != 0 || hdr[6] != unit || pdu[0] != modbus.FuncReadHoldingRegisters ||
			len(pdu) != 2+2*mbFloodQty || pdu[1] != 2*mbFloodQty ||
			binary.BigEndian.Uint16(pdu[2:]) != 1000+id%100: // peers.PLC: holding i = 1000+i
			r.malformed++
		default:
			correct = true
		}
		retired := out[id]
		if retired {
			out[id] = false
			pending--
		}
		if stopped {
			continue
		}
		// Only correct answers are PDUs delivered; any answer to an
		// outstanding request frees its place in the window.
		if correct {
			r.responses++
		}
		if !retired {
			continue
		}
		if time.Now().Before(end) {
			if !send() {
				break
			}
			continue
		}
		stopped = true
		o1, i1, s1, err := tcpSegs(c)
		if err != nil {
			r.ioErrors++
		}
		r.dataSegsOut, r.dataSegsIn, r.segs = o1-o0, i1-i0, s1-s0
	}
	r.unanswered = int64(pending)
	return r
}

// mbFlood runs the Modbus flood phase through the gateway g (process pid)
// and records its rate, the gateway's CPU per frame and what it allowed
// and refused; stopPerf ends the phase's profile. Errors at the client
// and any refusal fail the benchmark: the phase measures reads the
// policy allows.
func (gr *benchResult) mbFlood(t *testing.T, l *netns.Line, g *gw, pid int, stopPerf func()) {
	t.Helper()
	st0 := g.statusJSON()
	c0 := procCPU(t, pid)
	gr.mb = modbusFlood(t, l)
	cpu := procCPU(t, pid) - c0
	gr.mbCPU = float64(cpu) / float64(gr.mb.elapsed)
	stopPerf()
	st1 := g.statusJSON()
	delta := func(k string) float64 { return counter(st1, "counters", k) - counter(st0, "counters", k) }
	gr.mbAllowed = delta("pdus_allowed")
	gr.mbRefused = delta("pdus_denied") + delta("pdus_alerted") + delta("flows_denied")
	if b := rxBatches(st1) - rxBatches(st0); b > 0 {
		rx := counter(st1, "counters", "rx_frames", "north") + counter(st1, "counters", "rx_frames", "south") -
			counter(st0, "counters", "rx_frames", "north") - counter(st0, "counters", "rx_frames", "south")
		gr.mbPerBatch = rx / b
	}
	if gr.mb.segs > 0 {
		gr.mbCPUPerSeg = time.Duration(float64(cpu) / float64(gr.mb.segs))
	}
	if gr.mb.responses > 0 {
		gr.mbCPUPerPDU = time.Duration(float64(cpu) / float64(2*gr.mb.responses))
	}
	// Every delivered request and response was judged (inspected, not
	// bypassed); the drain adds a few more.
	if gr.mb.errors() != 0 || gr.mbRefused != 0 || gr.mbAllowed < float64(2*gr.mb.responses) {
		t.Errorf("modbus flood through otgw: %v; %.0f PDUs allowed, %.0f refused", gr.mb, gr.mbAllowed, gr.mbRefused)
	}
}

// rxBatches sums the datapath loop's read batches over both ports in a
// status document.
func rxBatches(st map[string]any) float64 {
	loop, _ := st["counters"].(map[string]any)["loop"].(map[string]any)
	bs, _ := loop["rx_batches"].([]any)
	sum := 0.0
	for _, b := range bs {
		f, _ := b.(float64)
		sum += f
	}
	return sum
}

// mbPathCPU is the CPU the whole path spent per delivered PDU in the
// Modbus flood: the endpoints' (the test process) plus otgw's (0 for
// the bridge, whose forwarding is in the endpoints' system time when it
// runs in their softirqs; tick accounting, ksoftirqd not counted).
func (gr benchResult) mbPathCPU() time.Duration {
	if gr.mb.responses == 0 {
		return 0
	}
	return (gr.mb.endpointCPU + time.Duration(gr.mbCPU*float64(gr.mb.elapsed))) / time.Duration(2*gr.mb.responses)
}

// mbFloodRounds is $OTGW_BENCH_MB_ROUNDS: how many alternated rounds of
// the Modbus flood (bridge, then a fresh gateway) to run per variant
// after its main measurement; 0 (none) when unset.
func mbFloodRounds(t *testing.T) int {
	s := os.Getenv("OTGW_BENCH_MB_ROUNDS")
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 20 {
		t.Fatalf("OTGW_BENCH_MB_ROUNDS=%q: want 0-20", s)
	}
	return n
}

// mbAlternate runs the Modbus flood n times through the kernel bridge
// and n times through variant v, alternately (bridge, otgw, bridge,
// otgw, ...; a fresh otgw each round, as the bridge and otgw cannot hold
// the ports together), and returns each round's ratios: otgw's PDU rate
// to the bridge's, and the bridge's path CPU per PDU to otgw's.
func mbAlternate(t *testing.T, l *netns.Line, v benchVariant, n int) (rate, cpu []float64) {
	t.Helper()
	for range n {
		remove := kernelBridge(t, l) // also removed at cleanup after a t.Fatal
		br := benchResult{mb: modbusFlood(t, l)}
		remove()
		if br.mb.errors() != 0 {
			t.Errorf("modbus flood through the kernel bridge: %v", br.mb)
		}
		g := startBenchGateway(t, l, v)
		var gr benchResult
		gr.mbFlood(t, l, g, g.cmd.Process.Pid, func() {})
		g.stop()
		if br.mb.responses > 0 && gr.mb.responses > 0 {
			rate = append(rate, gr.mb.pdusPerSec()/br.mb.pdusPerSec())
			cpu = append(cpu, float64(br.mbPathCPU())/float64(gr.mbPathCPU()))
		}
	}
	return rate, cpu
}

// medianRange formats the median of xs and their range as
// "0.93x (0.81-1.02)"; "n/a" when xs is empty.
func medianRange(xs []float64) string {
	if len(xs) == 0 {
		return "n/a"
	}
	s := slices.Sorted(slices.Values(xs))
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf("%.2fx (%.2f-%.2f)", m, s[0], s[len(s)-1])
}

// TestFloodConnCountsOnlyCorrectAnswers runs floodConn against a fake PLC
// on loopback that answers every request, in one of several ways: only
// correct answers count as responses (the phase's PDU rate), the others
// only as errors.
func TestFloodConnCountsOnlyCorrectAnswers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(resp []byte) // rewrites a correct 11-byte answer
		check func(r mbFloodResult) int64
	}{
		{"correct", func([]byte) {}, nil},
		{"exception", func(b []byte) { b[5], b[7], b[8] = 3, modbus.FuncReadHoldingRegisters|0x80, 2 }, func(r mbFloodResult) int64 { return r.exceptions }},
		{"wrong value", func(b []byte) { b[10]++ }, func(r mbFloodResult) int64 { return r.malformed }},
		{"unknown transaction", func(b []byte) { b[0] ^= 0x80 }, func(r mbFloodResult) int64 { return r.mismatched }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				s, err := ln.Accept()
				if err != nil {
					return
				}
				defer s.Close()
				var req [12]byte
				for {
					if _, err := io.ReadFull(s, req[:]); err != nil {
						return
					}
					// The answer peers.PLC gives: holding i = 1000+i.
					resp := []byte{req[0], req[1], 0, 0, 0, 5, req[6], req[7], 2, 0, 0}
					binary.BigEndian.PutUint16(resp[9:], 1000+binary.BigEndian.Uint16(req[8:]))
					tc.reply(resp)
					if _, err := s.Write(resp[:6+int(resp[5])]); err != nil {
						return
					}
				}
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r := floodConn(c.(*net.TCPConn), time.Now().Add(100*time.Millisecond))
			if tc.check == nil {
				if r.responses == 0 || r.errors() != 0 {
					t.Errorf("correct answers: %v, want responses and no errors", r)
				}
				return
			}
			if r.responses != 0 || tc.check(r) == 0 {
				t.Errorf("%s answers only: %v, want 0 responses and the answers counted as errors", tc.name, r)
			}
		})
	}
}

// mbFatalChildEnv makes TestMBAlternateRemovesBridgeOnFatal run its
// failing half (in a child process: a failing test cannot pass).
const mbFatalChildEnv = "OTGW_E2E_MB_FATAL_CHILD"

// TestMBAlternateRemovesBridgeOnFatal: a t.Fatal during mbAlternate's
// bridge round (here: no PLC listens, so the flood's dial fails) removes
// the kernel bridge before the namespace goes, not with it. The child
// test looks for br0 in a cleanup registered before mbAlternate, which
// runs after mbAlternate's own cleanups and before the namespaces'
// deletion.
func TestMBAlternateRemovesBridgeOnFatal(t *testing.T) {
	testenv.NeedRoot(t)
	if os.Getenv(mbFatalChildEnv) == "1" {
		l := benchLine(t)
		t.Cleanup(func() {
			if strings.Contains(l.Gateway.IP("-o", "link", "show"), "br0") {
				fmt.Println("MBFATAL: bridge left")
			} else {
				fmt.Println("MBFATAL: bridge removed")
			}
		})
		mbAlternate(t, l, benchVariant{io: "ring"}, 1)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMBAlternateRemovesBridgeOnFatal$", "-test.count=1")
	cmd.Env = append(os.Environ(), mbFatalChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "modbus flood dial") {
		t.Fatalf("child: %v, want it to fail at the flood's dial:\n%s", err, out)
	}
	if !strings.Contains(string(out), "MBFATAL: bridge removed") {
		t.Errorf("bridge not removed before the namespace's deletion:\n%s", out)
	}
}
