package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
)

// passHandler forwards every frame to the other port; frames starting
// with 0xee are answered with a crafted frame back out of the ingress port
// (as a reset or reply would be), from a buffer the handler reuses.
type passHandler struct {
	crafted [64]byte
}

func (h *passHandler) Handle(in gateway.PortID, frame []byte, tx gateway.Tx) {
	if len(frame) > 0 && frame[0] == 0xee {
		copy(h.crafted[:], frame)
		tx.Send(in, h.crafted[:len(frame)])
		h.crafted[0] = 0 // reused at once: Send must have copied
		return
	}
	tx.Send(in.Other(), frame)
}

func frameN(i int, size int) []byte {
	b := make([]byte, size)
	for j := range b {
		b[j] = byte(i + j)
	}
	b[0] = 0x02
	binary.BigEndian.PutUint32(b[14:], uint32(i))
	return b
}

func startForwarder(t *testing.T, h Handler, poll bool) (*Forwarder, *memPort, *memPort, context.CancelFunc, chan error) {
	t.Helper()
	n, s := newMemPort("north0"), newMemPort("south0")
	f, err := NewForwarder(ForwarderConfig{North: n, South: s, Handler: h, Poll: poll})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("forwarder did not stop within 5s")
		}
	})
	return f, n, s, cancel, done
}

func TestForwarderBothDirectionsInOrder(t *testing.T) {
	forEachMode(t, testForwarderBothDirectionsInOrder)
}

func testForwarderBothDirectionsInOrder(t *testing.T, poll bool) {
	_, n, s, _, _ := startForwarder(t, &passHandler{}, poll)
	const count = 1000
	for i := 0; i < count; i++ {
		n.inject(frameN(i, 60+i%1400), hal.FrameMeta{})
		s.inject(frameN(count+i, 60), hal.FrameMeta{})
	}
	gotS := s.waitSent(count, 10*time.Second)
	gotN := n.waitSent(count, 10*time.Second)
	if len(gotS) != count || len(gotN) != count {
		t.Fatalf("got %d frames north->south and %d south->north, want %d each", len(gotS), len(gotN), count)
	}
	for i := 0; i < count; i++ {
		if want := frameN(i, 60+i%1400); !bytes.Equal(gotS[i], want) {
			t.Fatalf("north->south frame %d: got % x..., want % x...", i, gotS[i][:18], want[:18])
		}
		if want := frameN(count+i, 60); !bytes.Equal(gotN[i], want) {
			t.Fatalf("south->north frame %d differs", i)
		}
	}
}

func TestForwarderCopiesCraftedFrames(t *testing.T) { forEachMode(t, testForwarderCopiesCraftedFrames) }

func testForwarderCopiesCraftedFrames(t *testing.T, poll bool) {
	_, n, s, _, _ := startForwarder(t, &passHandler{}, poll)
	f := frameN(7, 60)
	f[0] = 0xee
	n.inject(f, hal.FrameMeta{})
	got := n.waitSent(1, 5*time.Second)
	if len(got) != 1 || !bytes.Equal(got[0], f) {
		t.Fatalf("crafted frame back to north: got %d frames (%x), want the frame unchanged", len(got), got)
	}
	if extra := s.waitSent(1, 50*time.Millisecond); len(extra) != 0 {
		t.Errorf("got %d frames on south, want 0", len(extra))
	}
}

func TestForwarderDropsTruncated(t *testing.T) { forEachMode(t, testForwarderDropsTruncated) }

func testForwarderDropsTruncated(t *testing.T, poll bool) {
	fw, n, s, _, _ := startForwarder(t, &passHandler{}, poll)
	n.inject(make([]byte, DefaultBufSize), hal.FrameMeta{}) // larger than buffer minus headroom
	n.inject(frameN(1, 60), hal.FrameMeta{})
	got := s.waitSent(1, 5*time.Second)
	if len(got) != 1 || !bytes.Equal(got[0], frameN(1, 60)) {
		t.Fatalf("got %d frames, want only the small one", len(got))
	}
	if st := fw.Stats(); st.RxTruncated[gateway.North] != 1 {
		t.Errorf("RxTruncated north = %d, want 1", st.RxTruncated[gateway.North])
	}
}

func TestForwarderCompletesPartialChecksums(t *testing.T) {
	forEachMode(t, testForwarderCompletesPartialChecksums)
}

func testForwarderCompletesPartialChecksums(t *testing.T, poll bool) {
	fw, n, s, _, _ := startForwarder(t, &passHandler{}, poll)
	cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.1:40000")}
	srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.2:502")}
	good := capture.NewTCPFlow(cli, srv).Send(true, []byte{0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10})
	bad := partial(t, good, 14, 34, 16, false)
	n.inject(bad, hal.FrameMeta{ChecksumNotReady: true})
	got := s.waitSent(1, 5*time.Second)
	if len(got) != 1 || !bytes.Equal(got[0], good) {
		t.Fatalf("forwarded frame: got %x, want the frame with its checksum completed %x", got, good)
	}
	if st := fw.Stats(); st.RxCsumFixed[gateway.North] != 1 {
		t.Errorf("RxCsumFixed north = %d, want 1", st.RxCsumFixed[gateway.North])
	}
}

func TestForwarderCleanShutdown(t *testing.T) { forEachMode(t, testForwarderCleanShutdown) }

func testForwarderCleanShutdown(t *testing.T, poll bool) {
	fw, n, s, cancel, done := startForwarder(t, &passHandler{}, poll)
	deadline := time.Now().Add(2 * time.Second)
	for !fw.Healthy() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !fw.Healthy() {
		t.Fatal("Healthy() = false while running")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v, want nil on cancel", err)
		}
		done <- nil // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of cancel")
	}
	if !n.isClosed() || !s.isClosed() {
		t.Errorf("ports closed: north %v south %v, want both", n.isClosed(), s.isClosed())
	}
	if fw.Healthy() {
		t.Errorf("Healthy() = true after stop")
	}
}

func TestForwarderPortFailureStopsBoth(t *testing.T) {
	forEachMode(t, testForwarderPortFailureStopsBoth)
}

func testForwarderPortFailureStopsBoth(t *testing.T, poll bool) {
	_, n, s, _, done := startForwarder(t, &passHandler{}, poll)
	n.Close() // the north port goes away underneath the gateway
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("Run returned nil, want the port error")
		}
		done <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of a port failure")
	}
	if !s.isClosed() {
		t.Errorf("south port still open after north failed: the gateway must stop as a whole")
	}
}

func TestForwarderStallIsUnhealthy(t *testing.T) { forEachMode(t, testForwarderStallIsUnhealthy) }

func testForwarderStallIsUnhealthy(t *testing.T, poll bool) {
	block := make(chan struct{})
	h := HandlerFunc(func(in gateway.PortID, frame []byte, tx gateway.Tx) { <-block })
	fw, n, _, _, _ := startForwarder(t, h, poll)
	defer close(block)
	deadline := time.Now().Add(2 * time.Second)
	for !fw.Healthy() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !fw.Healthy() {
		t.Fatal("Healthy() = false before the stall")
	}
	start := time.Now()
	n.inject(frameN(1, 60), hal.FrameMeta{})
	deadline = time.Now().Add(StallAfter + 3*time.Second)
	for fw.Healthy() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if fw.Healthy() {
		t.Errorf("Healthy() = true with a worker stuck for %v", StallAfter+3*time.Second)
	}
	if d := time.Since(start); d < StallAfter-readWake {
		t.Errorf("unhealthy after %v, want not before about %v", d, StallAfter)
	}
}

// TestHandleBatchNoAllocs: the steady state of a direction (handle a full
// batch through the real engine, write it) allocates nothing.
func TestHandleBatchNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector (sync.Pool drops items)")
	}
	e := modbusEngine(t)
	n, s := newMemPort("north0"), newMemPort("south0")
	n.keep, s.keep = false, false
	fw, err := NewForwarder(ForwarderConfig{North: n, South: s, Handler: e})
	if err != nil {
		t.Fatal(err)
	}
	w := fw.w[gateway.North]
	cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.1:40000")}
	srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.2:502")}
	fl := capture.NewTCPFlow(cli, srv)
	for i, f := range fl.Handshake() {
		in := gateway.North
		if i == 1 {
			in = gateway.South
		}
		e.Handle(in, append([]byte(nil), f...), gateway.TxFunc(func(gateway.PortID, []byte) {}))
	}
	// A batch of ARP frames (allowed by l2) is judged without flow state.
	arp := make([]byte, 60)
	copy(arp, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0x5e, 0, 0, 1, 0x08, 0x06})
	const batch = 64
	for i := 0; i < batch; i++ {
		w.sizes[i] = copy(w.bufs[i], arp)
	}
	if a := testing.AllocsPerRun(50, func() { w.handleBatch(batch) }); a != 0 {
		t.Errorf("got %v allocs per batch, want 0", a)
	}
	if s.txN.Load() == 0 {
		t.Fatal("nothing forwarded: the test policy does not allow ARP")
	}
}

func modbusEngine(t testing.TB) *gateway.Engine {
	t.Helper()
	p, err := rules.Parse("policy.yaml", []byte(`version: 1
name: unit
mode: enforce
action: reply
zones:
  a: { port: north, networks: [192.0.2.1/32] }
  b: { port: south, networks: [192.0.2.2/32] }
l2: { allow: [arp] }
conduits:
  - name: a-b
    from: a
    to: b
    rules:
      - modbus:
          allow:
            - read: holding 0-99
`))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	e, err := gateway.NewEngine(gateway.Config{Rules: func() *rules.Ruleset { return rs }})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestForwarderWithEngine: the real engine behind the loop forwards an
// allowed Modbus read byte-identical and answers a denied write with an
// exception towards the client (north) and a reset towards the server.
func TestForwarderWithEngine(t *testing.T) { forEachMode(t, testForwarderWithEngine) }

func testForwarderWithEngine(t *testing.T, poll bool) {
	e := modbusEngine(t)
	_, n, s, _, _ := startForwarder(t, e, poll)
	cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.1:40000")}
	srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.2:502")}
	fl := capture.NewTCPFlow(cli, srv)
	hs := fl.Handshake()
	n.inject(hs[0], hal.FrameMeta{})
	s.waitSent(1, 5*time.Second)
	s.inject(hs[1], hal.FrameMeta{})
	n.waitSent(1, 5*time.Second)
	n.inject(hs[2], hal.FrameMeta{})
	read := fl.Send(true, []byte{0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10})
	n.inject(read, hal.FrameMeta{})
	got := s.waitSent(3, 5*time.Second)
	if len(got) != 3 || !bytes.Equal(got[2], read) {
		t.Fatalf("allowed read: got %d frames on south, want 3 with the read unchanged", len(got))
	}
	write := fl.Send(true, []byte{0, 2, 0, 0, 0, 6, 1, 6, 0, 5, 0x10, 0x92})
	n.inject(write, hal.FrameMeta{})
	toClient := n.waitSent(2, 5*time.Second) // SYN-ACK, then the exception (and a RST)
	if len(toClient) < 2 {
		t.Fatalf("got %d frames back to the client, want the SYN-ACK and an exception", len(toClient))
	}
	exc := toClient[1]
	pl := exc[14+20+20:]
	if len(pl) < 9 || pl[0] != 0 || pl[1] != 2 || pl[6] != 1 || pl[7] != 0x86 {
		t.Errorf("exception reply payload: got % x, want tid 0002 unit 1 fc 0x86", pl)
	}
	for _, f := range s.waitSent(4, time.Second) {
		if bytes.Equal(f, write) {
			t.Errorf("the denied write reached the server")
		}
	}
}

// TestForwarderPollNeedsPollers: a polling Forwarder refuses ports that
// cannot be polled, naming the port.
func TestForwarderPollNeedsPollers(t *testing.T) {
	n, s := newMemPort("north0"), newMemPort("south0")
	_, err := NewForwarder(ForwarderConfig{North: n, South: plainPort{s}, Handler: &passHandler{}, Poll: true})
	if !errors.Is(err, ErrNoPoller) || !strings.Contains(err.Error(), "south0") {
		t.Errorf("NewForwarder(Poll, a port that cannot be polled) = %v, want ErrNoPoller naming south0", err)
	}
	if _, err := NewForwarder(ForwarderConfig{North: n, South: plainPort{s}, Handler: &passHandler{}}); err != nil {
		t.Errorf("NewForwarder without Poll: %v", err)
	}
}

// downPort is a memPort whose link is down: every read fails at once
// with ENETDOWN, as a ring port's does.
type downPort struct{ *memPort }

func (p downPort) ReadBatch([][]byte, []int, []hal.FrameMeta) (int, error) {
	if p.isClosed() {
		return 0, hal.ErrClosed
	}
	return 0, syscall.ENETDOWN
}

func (p downPort) TryReadBatch(b [][]byte, s []int, m []hal.FrameMeta) (int, error) {
	return p.ReadBatch(b, s, m)
}

// TestForwarderLinkDownStaysHealthy: a port whose link is down fails
// every read; the Forwarder counts the errors, backs off, keeps
// forwarding the other direction and stays healthy past StallAfter (a
// dead link is not a hung datapath: the watchdog keeps being fed).
func TestForwarderLinkDownStaysHealthy(t *testing.T) {
	forEachMode(t, testForwarderLinkDownStaysHealthy)
}

func testForwarderLinkDownStaysHealthy(t *testing.T, poll bool) {
	n, s := newMemPort("north0"), newMemPort("south0")
	f, err := NewForwarder(ForwarderConfig{North: downPort{n}, South: s, Handler: &passHandler{}, Poll: poll})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(5 * time.Second); !f.Healthy() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	for end := time.Now().Add(StallAfter + time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !f.Healthy() {
			t.Fatalf("Healthy() = false with the north link down (read errors so far: %d)", f.Stats().RxErrors[gateway.North])
		}
	}
	s.inject(frameN(1, 60), hal.FrameMeta{})
	if got := n.waitSent(1, 5*time.Second); len(got) != 1 {
		t.Errorf("south->north: %d frames forwarded with the north link down for reading, want 1", len(got))
	}
	if e := f.Stats().RxErrors[gateway.North]; e == 0 {
		t.Error("no read error counted on the north port")
	}
}
