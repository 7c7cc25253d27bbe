package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/daemon"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
	"github.com/otgw/otgw/simulate/replay"
)

// TestScenariosLive replays every scenario of simulate/scenarios live
// through the real datapath and checks that it gives the same verdicts as
// the offline replay (simulate/replay) of the same capture and policy,
// both run here on the same engine version.
//
// Live path: client ns eth0 — north0 [gw ns] south0 — server ns eth0, no
// addresses and no IPv6 anywhere (nothing but the injected frames
// crosses). In the gateway namespace the datapath of `otgw run` runs
// in-process: hal AF_PACKET ports prepared by hal.PreparePair, the
// daemon's Forwarder and a gateway.Engine on the scenario's policy loaded
// by a rules.Watcher, as daemon.Run wires them. It runs in-process and not
// as the `otgw run` binary because the event pipeline of the binary folds
// identical denies within 10 s into one aggregated event, so per-frame
// verdicts would be lost; the engine's own Sink receives every event.
//
// Two-interface replay: a frame the offline replay feeds in on the north
// port is written (raw AF_PACKET) on the client's eth0, whose peer is
// north0; a south frame on the server's eth0. The side comes from the
// offline replay itself (Decision.In of the frame's decisions; a frame the
// engine decided nothing about is replayed alone, which gives its side).
// Causality: frame i+1 is sent only once the engine returned from frame i
// (a Handler wrapper around the engine signals it; bounded wait).
//
// Compared per frame: the verdict events (verdict, reason) — live: what
// the engine emitted to its Sink, plus normaliser drops, which have no
// event and show on the live gateway only in its drop counters (a drop
// counter increment on a frame with no event, "decode" excepted: offline
// reports no event for an undecodable frame either); offline: the events
// of replay.Run. Compared per scenario: drop counters by reason,
// forwarded, truncated and crafted frame counts, and that every frame the
// gateway sent arrived on a peer's interface.
func TestScenariosLive(t *testing.T) {
	testenv.NeedRoot(t)
	root := testenv.ModuleRoot(t)
	dirs, _ := filepath.Glob(filepath.Join(root, "simulate", "scenarios", "*", "expect.yaml"))
	if len(dirs) == 0 {
		t.Fatal("no scenarios under simulate/scenarios")
	}
	sort.Strings(dirs)
	start := time.Now()
	tp := newLiveTopo(t)
	var summary []string
	totalFrames, totalEvents := 0, 0
	for _, ef := range dirs {
		dir := filepath.Dir(ef)
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			res := runScenarioLive(t, tp, dir)
			totalFrames += res.frames
			totalEvents += res.agree
			summary = append(summary, fmt.Sprintf("%-32s frames %3d  offline events %2d  live events %2d  agree %2d  %s%s",
				name, res.frames, res.offline, res.live, res.agree, res.sides, res.note))
		})
		if time.Since(start) > 100*time.Second {
			t.Fatalf("scenarios took longer than 100s (stopped after %s)", name)
		}
	}
	t.Logf("live vs offline, per scenario:\n%s", strings.Join(summary, "\n"))
	t.Logf("%d scenarios, %d frames, %d events in agreement, %v", len(summary), totalFrames, totalEvents, time.Since(start).Round(time.Millisecond))
}

// liveException is a scenario whose live outcome differs from the offline
// replay for a reason inherent to the live path: the test asserts the
// exact live events instead (frame verdict reason, as cmpEvent.String).
type liveException struct {
	why  string
	live []string
}

// liveExceptions lists those scenarios. Empty: every scenario agrees.
var liveExceptions = map[string]liveException{}

// cmpEvent is what is compared: one verdict event of one frame.
type cmpEvent struct {
	Frame   int
	Verdict string
	Reason  string
}

func (e cmpEvent) String() string { return fmt.Sprintf("frame %d %s %s", e.Frame, e.Verdict, e.Reason) }

type scenarioResult struct {
	frames, offline, live, agree int
	sides, note                  string
}

// offlineRun is the offline replay's view of one capture.
type offlineRun struct {
	events []cmpEvent
	flows  map[cmpEvent]string    // flow_id and community_id of each verdict event
	in     map[int]gateway.PortID // capture frame -> ingress port
	rep    *replay.Report
}

// runOffline replays the capture with simulate/replay (strict mid-stream,
// as the scenario expectations are written) and records each frame's side.
func runOffline(t *testing.T, pol *rules.Policy, rs *rules.Ruleset, pcap string) offlineRun {
	t.Helper()
	out := offlineRun{in: map[int]gateway.PortID{}, flows: map[cmpEvent]string{}}
	rep, err := replay.Run(replay.Options{Policy: pol, Ruleset: rs, StrictMidstream: true,
		OnDecision: func(f replay.FrameRef, _ *packet.Packet, d *gateway.Decision) {
			if f.Index > 0 {
				out.in[f.Index] = d.In
			}
		},
		OnEvent: func(e *replay.Event) {
			out.events = append(out.events, cmpEvent{e.Frame, e.Verdict, e.Reason})
			out.flows[cmpEvent{e.Frame, e.Verdict, e.Reason}] = flowIDs(e.Record())
		},
	}, pcap)
	if err != nil {
		t.Fatalf("offline replay: %v", err)
	}
	out.rep = rep
	return out
}

// sideAlone returns the port the offline replay feeds frame in on, by
// replaying it alone: every IP frame the engine sees without a flow gets a
// decision (a flow verdict, or a no_flow drop), and the side of an IP
// frame depends on nothing but the frame. ok is false when the engine
// decides nothing even then (a frame it cannot decode: its side cannot
// change a verdict).
func sideAlone(t *testing.T, pol *rules.Policy, rs *rules.Ruleset, frame []byte, ts time.Time) (gateway.PortID, bool) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "one.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := pcapgo.NewWriter(f)
	err = w.WriteFileHeader(65535, layers.LinkTypeEthernet)
	if err == nil {
		err = w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(frame), Length: len(frame)}, frame)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	var in gateway.PortID
	ok := false
	_, err = replay.Run(replay.Options{Policy: pol, Ruleset: rs, StrictMidstream: true,
		OnDecision: func(f replay.FrameRef, _ *packet.Packet, d *gateway.Decision) {
			if f.Index == 1 && !ok {
				in, ok = d.In, true
			}
		}}, path)
	if err != nil {
		t.Fatalf("offline replay of one frame: %v", err)
	}
	return in, ok
}

// liveTopo is the topology shared by all scenarios: the two peer ports the
// test injects on, and the gateway namespace with its prepared ports.
type liveTopo struct {
	gw    *netns.NS
	north string
	south string
	mtu   int
	peer  [2]hal.Port     // by the gateway port they face: peer[North] is the client's eth0
	rx    [2]atomic.Int64 // frames the peers received (sent by the gateway)
}

func newLiveTopo(t *testing.T) *liveTopo {
	t.Helper()
	cli, gwns, srv := netns.New(t, "lcli"), netns.New(t, "lgw"), netns.New(t, "lsrv")
	// No IPv6 on any interface from its creation on: no DAD, router or
	// MLD messages enter the gateway besides the injected frames.
	for _, ns := range []*netns.NS{cli, gwns, srv} {
		err := ns.Do(func() error {
			for _, k := range []string{"all", "default"} {
				p := "/proc/sys/net/ipv6/conf/" + k + "/disable_ipv6"
				if _, err := os.Stat(p); err != nil {
					continue // kernel without IPv6
				}
				if err := os.WriteFile(p, []byte("1\n"), 0); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("disable IPv6 in %s: %v", ns.Name, err)
		}
	}
	tp := &liveTopo{gw: gwns, north: "north0", south: "south0"}
	netns.Veth(t, cli, "eth0", gwns, tp.north)
	netns.Veth(t, gwns, tp.south, srv, "eth0")
	err := gwns.Do(func() error {
		n, err := hal.OpenLink(tp.north)
		if err != nil {
			return err
		}
		s, err := hal.OpenLink(tp.south)
		if err != nil {
			return err
		}
		if err := hal.PreparePair(n, s, hal.LinkOptions{}); err != nil {
			return err
		}
		info, err := n.Info()
		tp.mtu = info.MTU
		return err
	})
	if err != nil {
		t.Fatalf("prepare gateway ports: %v", err)
	}
	for i, ns := range [2]*netns.NS{cli, srv} {
		err := ns.Do(func() (err error) {
			tp.peer[i], err = hal.OpenPort("eth0", hal.PortOptions{})
			return err
		})
		if err != nil {
			t.Fatalf("peer port in %s: %v", ns.Name, err)
		}
	}
	var wg sync.WaitGroup
	for i := range tp.peer {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tp.collect(i)
		}()
	}
	t.Cleanup(func() {
		for _, p := range tp.peer {
			_ = p.Close()
		}
		wg.Wait()
	})
	return tp
}

// collect counts the frames arriving on peer port i until it is closed.
func (tp *liveTopo) collect(i int) {
	p := tp.peer[i]
	bufs := make([][]byte, 16)
	for j := range bufs {
		bufs[j] = make([]byte, 2048)
	}
	sizes := make([]int, len(bufs))
	for {
		_ = p.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := p.ReadBatch(bufs, sizes, nil)
		switch {
		case err == nil:
			tp.rx[i].Add(int64(n))
		case err == hal.ErrClosed:
			return
		case err != hal.ErrTimeout:
			time.Sleep(10 * time.Millisecond) // a transient error: do not spin
		}
	}
}

// flowIDs is "flow_id community_id" of an event record ("" without IP
// endpoints).
func flowIDs(e *events.Event) string {
	t, ok := e.Tuple()
	if !ok {
		return ""
	}
	return fmt.Sprint(events.FlowID(t), " ", events.CommunityID(t, 0))
}

// eventSink keeps every event the engine emits.
type eventSink struct {
	mu  sync.Mutex // guards evs
	evs []*events.Event
}

func (s *eventSink) Emit(e *events.Event) {
	s.mu.Lock()
	s.evs = append(s.evs, e)
	s.mu.Unlock()
}

func (s *eventSink) since(n int) []*events.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*events.Event(nil), s.evs[n:]...)
}

func (s *eventSink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.evs)
}

// handled is one frame the engine finished, as it received it.
type handled struct {
	in    gateway.PortID
	frame []byte
}

// tapHandler is the engine as the Forwarder's Handler, telling the test
// when it is done with a frame.
type tapHandler struct {
	eng  *gateway.Engine
	done chan handled
	lost atomic.Int64
}

func (h *tapHandler) Handle(in gateway.PortID, frame []byte, tx gateway.Tx) {
	cp := append([]byte(nil), frame...) // before Handle, which may rewrite it
	h.eng.Handle(in, frame, tx)
	select {
	case h.done <- handled{in, cp}:
	default:
		h.lost.Add(1)
	}
}

// frameWait bounds the wait for the engine to deal with one frame;
// after maxTimeouts such waits a scenario gives up.
const (
	frameWait   = 500 * time.Millisecond
	maxTimeouts = 3
)

func runScenarioLive(t *testing.T, tp *liveTopo, dir string) scenarioResult {
	t.Helper()
	name := filepath.Base(dir)
	polPath := filepath.Join(dir, "policy.yaml")
	pcap := filepath.Join(dir, "input.pcap")
	pol, err := rules.Load(polPath)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Compile(pol)
	if err != nil {
		t.Fatal(err)
	}

	// Offline: events and sides.
	off := runOffline(t, pol, rs, pcap)
	type frame struct {
		index int
		data  []byte
		in    gateway.PortID
	}
	var frames []frame
	var nonEth []int
	var sides [2]int
	alone := 0 // frames whose side came from replaying them alone
	err = capture.ReadFrames(pcap, func(f *capture.Frame) error {
		if f.Link != packet.LinkEthernet {
			nonEth = append(nonEth, f.Index)
			return nil
		}
		fr := frame{index: f.Index, data: append([]byte(nil), f.Data...)}
		in, ok := off.in[f.Index]
		if !ok {
			alone++
			in, _ = sideAlone(t, pol, rs, fr.data, f.Time) // North when nothing is decided (undecodable)
		}
		fr.in = in
		sides[in]++
		frames = append(frames, fr)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(nonEth) > 0 {
		t.Fatalf("frames %v are not Ethernet: the live path injects Ethernet frames only", nonEth)
	}

	// Live: a fresh engine and datapath on the scenario's policy.
	w, err := daemon.NewWatcher(daemon.WatcherConfig{Path: polPath})
	if err != nil {
		t.Fatal(err)
	}
	sink := &eventSink{}
	eng, err := gateway.NewEngine(gateway.Config{Rules: w.Ruleset, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	h := &tapHandler{eng: eng, done: make(chan handled, 256)}
	var ports [2]hal.Port
	err = tp.gw.Do(func() (err error) {
		if ports[0], err = hal.OpenPort(tp.north, hal.PortOptions{}); err != nil {
			return err
		}
		if ports[1], err = hal.OpenPort(tp.south, hal.PortOptions{}); err != nil {
			ports[0].Close()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := daemon.NewForwarder(daemon.ForwarderConfig{North: ports[0], South: ports[1], Handler: h,
		BufSize: max(daemon.DefaultBufSize, tp.mtu+14+8+hal.VLANHeadroom)})
	if err != nil {
		ports[0].Close()
		ports[1].Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fwdErr := make(chan error, 1)
	go func() { fwdErr <- fwd.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-fwdErr; err != nil {
				t.Errorf("forwarder: %v", err)
			}
		}
	}
	defer stop()
	rx0 := tp.rx[0].Load() + tp.rx[1].Load()

	var live []cmpEvent
	liveFlows := map[cmpEvent]string{}
	var problems []string
	var other []string
	timeouts := 0
	for _, fr := range frames {
		if timeouts == maxTimeouts {
			problems = append(problems, fmt.Sprintf("%d frames not handled in time: the rest of the capture was not sent", maxTimeouts))
			break
		}
		before := eng.Counters()
		nev := sink.len()
		if _, err := tp.peer[fr.in].WriteBatch([][]byte{fr.data}); err != nil {
			problems = append(problems, fmt.Sprintf("frame %d: inject on the %s side: %v", fr.index, fr.in, err))
			continue
		}
		timer := time.NewTimer(frameWait)
		got := false
		for !got {
			select {
			case hd := <-h.done:
				if hd.in != fr.in || !bytes.Equal(hd.frame, fr.data) {
					problems = append(problems, fmt.Sprintf("frame %d: the engine got a different frame on %s (%d bytes, sent %d on %s)",
						fr.index, hd.in, len(hd.frame), len(fr.data), fr.in))
				}
				got = true
			case <-timer.C:
				problems = append(problems, fmt.Sprintf("frame %d (%s side, %d bytes): not handled by the gateway within %v",
					fr.index, fr.in, len(fr.data), frameWait))
				timeouts++
				got = true
			}
		}
		timer.Stop()
		after := eng.Counters()
		evs := sink.since(nev)
		verdicts := 0
		for _, e := range evs {
			switch e.Type {
			case events.TypeDeny, events.TypeAlert:
				live = append(live, cmpEvent{fr.index, e.Verdict, e.Reason})
				liveFlows[cmpEvent{fr.index, e.Verdict, e.Reason}] = flowIDs(e)
				verdicts++
			default:
				other = append(other, fmt.Sprintf("frame %d: %s %s", fr.index, e.Type, e.Message))
			}
		}
		if verdicts == 0 {
			// Normaliser drops: counted, no event.
			for _, r := range gateway.DropReasons() {
				if r == gateway.DropDecode {
					continue
				}
				for n := after.Drops[r] - before.Drops[r]; n > 0; n-- {
					live = append(live, cmpEvent{fr.index, "deny", r.String()})
				}
			}
		}
	}
	c := eng.Counters()
	// Everything the gateway sent arrives on a peer (bounded wait).
	sent := int64(c.TxFrames[0] + c.TxFrames[1] + c.Injected[0] + c.Injected[1])
	deadline := time.Now().Add(time.Second)
	for tp.rx[0].Load()+tp.rx[1].Load()-rx0 < sent && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	stop()
	if got := tp.rx[0].Load() + tp.rx[1].Load() - rx0; got != sent {
		problems = append(problems, fmt.Sprintf("peers received %d frames, the gateway sent %d (forwarded + crafted)", got, sent))
	}
	if n := h.lost.Load(); n > 0 {
		problems = append(problems, fmt.Sprintf("%d handled frames not reported to the test", n))
	}
	if len(other) > 0 {
		t.Logf("other engine events: %s", strings.Join(other, "; "))
	}

	// The same traffic has the same flow_id and community_id live and
	// offline (issue 17).
	for k, v := range liveFlows {
		if o, ok := off.flows[k]; ok && o != v {
			problems = append(problems, fmt.Sprintf("%s: flow_id/community_id live %s, offline %s", k, v, o))
		}
	}

	// Per-scenario counters: the same engine on the same frames.
	rep := off.rep
	liveDrops := c.DropsByName()
	if !equalDrops(liveDrops, rep.Drops) {
		problems = append(problems, fmt.Sprintf("drop counters: live %v, offline %v", liveDrops, rep.Drops))
	}
	if got, want := int(c.TxFrames[0]+c.TxFrames[1]), rep.Forwarded+rep.Truncated; got != want {
		problems = append(problems, fmt.Sprintf("forwarded frames: live %d, offline %d", got, want))
	}
	if got, want := int(c.Truncated), rep.Truncated; got != want {
		problems = append(problems, fmt.Sprintf("truncated frames: live %d, offline %d", got, want))
	}
	if got, want := int(c.Injected[0]+c.Injected[1]), rep.Injected; got != want {
		problems = append(problems, fmt.Sprintf("crafted frames (RST, replies): live %d, offline %d", got, want))
	}

	res := scenarioResult{frames: len(frames), offline: len(off.events), live: len(live),
		sides: fmt.Sprintf("north %2d south %2d (alone %d)  sent fwd %2d crafted %d", sides[0], sides[1], alone,
			c.TxFrames[0]+c.TxFrames[1], c.Injected[0]+c.Injected[1])}
	want := off.events
	ex, isEx := liveExceptions[name]
	if isEx {
		res.note = "  (exception: " + ex.why + ")"
		want = nil
		for _, s := range ex.live {
			var e cmpEvent
			if _, err := fmt.Sscanf(s, "frame %d %s %s", &e.Frame, &e.Verdict, &e.Reason); err != nil {
				t.Fatalf("liveExceptions[%s]: %q: %v", name, s, err)
			}
			want = append(want, e)
		}
	}
	for i := 0; i < len(live) && i < len(want); i++ {
		if live[i] == want[i] {
			res.agree++
		}
	}
	if !equalEvents(live, want) {
		what := "offline replay"
		if isEx {
			what = "liveExceptions"
		}
		problems = append(problems, fmt.Sprintf("verdict events differ\n live:    %s\n %s: %s",
			joinEvents(live), what, joinEvents(want)))
	} else if isEx && equalEvents(live, off.events) {
		problems = append(problems, "listed in liveExceptions but live now agrees with offline: remove it")
	}
	for _, p := range problems {
		t.Error(p)
	}
	return res
}

func equalEvents(a, b []cmpEvent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalDrops(a, b map[string]uint64) bool {
	for k, v := range a {
		if v != 0 && b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if v != 0 && a[k] != v {
			return false
		}
	}
	return true
}

func joinEvents(evs []cmpEvent) string {
	if len(evs) == 0 {
		return "(none)"
	}
	s := make([]string, len(evs))
	for i, e := range evs {
		s[i] = e.String()
	}
	return strings.Join(s, "; ")
}
