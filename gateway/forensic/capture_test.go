package forensic_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/forensic"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
)

const modbusPolicy = `version: 1
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
`

// rig is an engine whose OnVerdict and frames go through a Tap into a
// Capture, with the engine's events collected.
type rig struct {
	eng *gateway.Engine
	tap *forensic.Tap
	cap *forensic.Capture
	mu  sync.Mutex
	evs []*events.Event
}

func newRig(t *testing.T, cfg forensic.Config) *rig {
	t.Helper()
	p, err := rules.Parse("policy.yaml", []byte(modbusPolicy))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{}
	if r.cap, err = forensic.Open(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.cap.Close() })
	r.tap = r.cap.NewTap()
	r.eng, err = gateway.NewEngine(gateway.Config{Rules: func() *rules.Ruleset { return rs },
		OnVerdict: r.tap.OnVerdict,
		Sink: events.SinkFunc(func(e *events.Event) {
			r.mu.Lock()
			r.evs = append(r.evs, e)
			r.mu.Unlock()
		})})
	if err != nil {
		t.Fatal(err)
	}
	r.tap.Next = r.eng
	return r
}

var nopTx = gateway.TxFunc(func(gateway.PortID, []byte) {})

// readDir reads every capture file of dir, oldest first.
func readDir(t *testing.T, dir string) (names []string, pkts []forensic.Packet) {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "denied-*.pcapng"))
	sort.Strings(m)
	for _, path := range m {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		p, _, err := forensic.Read(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		names = append(names, filepath.Base(path))
		pkts = append(pkts, p...)
	}
	return names, pkts
}

// A denied Modbus write is captured as it arrived (before the engine
// answers it), on the north interface, with the flow_id and community_id
// of its deny event and the event's reason, conduit and rule; the allowed
// handshake and read are not captured.
func TestDeniedFrameCarriesItsEvent(t *testing.T) {
	dir := t.TempDir()
	r := newRig(t, forensic.Config{Dir: dir, App: "otgw test"})
	cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.1:40000")}
	srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.2:502")}
	fl := capture.NewTCPFlow(cli, srv)
	for i, f := range fl.Handshake() {
		r.tap.Handle(gateway.PortID(i%2), f, nopTx)
	}
	r.tap.Handle(gateway.North, fl.Send(true, []byte{0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10}), nopTx)
	write := fl.Send(true, []byte{0, 2, 0, 0, 0, 6, 1, 6, 0, 5, 0x10, 0x92})
	orig := append([]byte(nil), write...)
	r.tap.Handle(gateway.North, write, nopTx)
	r.cap.Close()

	names, pkts := readDir(t, dir)
	if len(names) != 1 || len(pkts) != 1 {
		t.Fatalf("got files %v with %d packets, want one file with the denied write", names, len(pkts))
	}
	p := pkts[0]
	if !bytes.Equal(p.Data, orig) || p.OrigLen != len(orig) || p.Iface != int(gateway.North) {
		t.Errorf("captured frame (iface %d):\n got % x\nwant % x", p.Iface, p.Data, orig)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.evs) != 1 {
		t.Fatalf("got %d events, want the deny", len(r.evs))
	}
	var rec struct {
		FlowID      uint64 `json:"flow_id"`
		CommunityID string `json:"community_id"`
		Reason      string `json:"reason"`
		Conduit     string `json:"conduit"`
		Rule        string `json:"rule"`
		Action      string `json:"action"`
	}
	if err := json.Unmarshal(r.evs[0].AppendJSON(nil), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.FlowID == 0 || rec.Reason == "" {
		t.Fatalf("event without flow_id or reason: %+v", rec)
	}
	for _, want := range []string{
		fmt.Sprintf("flow_id=%d ", rec.FlowID), "community_id=" + rec.CommunityID + " ", "reason=" + rec.Reason + " ",
		"conduit=" + rec.Conduit + " ", "rule=" + rec.Rule, "action=" + rec.Action, "app_proto=modbus",
	} {
		if !strings.Contains(p.Comment, want) {
			t.Errorf("comment %q lacks %q", p.Comment, want)
		}
	}
	if st := r.cap.Stats(); st.Frames != 1 || st.Dropped != 0 || st.Files != 1 || st.Bytes == 0 {
		t.Errorf("Stats = %+v", st)
	}
}

// deny is a Decision as the engine reports a denied PDU.
func deny() *gateway.Decision {
	return &gateway.Decision{HasVerdict: true, Proto: "modbus",
		Src: netip.MustParseAddrPort("192.0.2.1:40000"), Dst: netip.MustParseAddrPort("192.0.2.2:502"),
		Verdict: rules.Verdict{Action: rules.Deny, Reason: rules.ReasonFunctionNotAllowed, ConduitName: "a b", RuleName: "modbus#1", Conduit: 0, Rule: 0}}
}

// offer retries Denied until the writer freed a slot, and returns how
// often it was refused.
func offer(t *testing.T, c *forensic.Capture, frame []byte, d *gateway.Decision) (refused uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for ; !c.Denied(gateway.South, frame, d); refused++ {
		if time.Now().After(deadline) {
			t.Fatal("no free slot for 5s")
		}
		time.Sleep(time.Millisecond)
	}
	return refused
}

// Rotation keeps both bounds (files and bytes) over many frames, every
// file stays readable, the newest frames survive, and a second run in the
// same directory counts the first run's files and numbers after them.
func TestRotationBounds(t *testing.T) {
	dir := t.TempDir()
	const maxFiles, perFile = 4, forensic.MinFileBytes
	cfg := forensic.Config{Dir: dir, MaxBytes: maxFiles * perFile, MaxFiles: maxFiles, QueueLen: 32}
	frame := make([]byte, 1514)
	d := deny()
	for run := range 2 {
		c, err := forensic.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		const n = 500 // about 12 files' worth
		var refused uint64
		for i := range n {
			frame[100] = byte(run)
			frame[101], frame[102] = byte(i>>8), byte(i)
			refused += offer(t, c, frame, d)
		}
		c.Close()
		st := c.Stats()
		if st.Frames != n || st.Dropped != refused || st.WriteErrors != 0 || st.Removed == 0 {
			t.Errorf("run %d: Stats = %+v, want %d frames, removals, no loss", run, st, n)
		}
		names, pkts := readDir(t, dir)
		if len(names) > maxFiles {
			t.Errorf("run %d: %d files, bound %d", run, len(names), maxFiles)
		}
		var total int64
		for _, nm := range names {
			fi, _ := os.Stat(filepath.Join(dir, nm))
			total += fi.Size()
			if fi.Size() > perFile {
				t.Errorf("%s: %d bytes, per-file bound %d", nm, fi.Size(), perFile)
			}
		}
		if total > cfg.MaxBytes {
			t.Errorf("run %d: %d bytes on disk, bound %d", run, total, cfg.MaxBytes)
		}
		last := pkts[len(pkts)-1].Data
		if last[100] != byte(run) || int(last[101])<<8|int(last[102]) != n-1 {
			t.Errorf("run %d: the newest frame kept is not the last written", run)
		}
		if run == 1 && names[0] <= "denied-000012.pcapng" {
			t.Errorf("second run's files %v: numbering did not continue", names)
		}
		if !strings.Contains(pkts[0].Comment, `conduit="a b"`) || !strings.Contains(pkts[0].Comment, "reason=function_not_allowed") {
			t.Errorf("comment %q", pkts[0].Comment)
		}
	}
}

// blockingHandler makes the writer's first log line wait for release:
// the writer is then stuck with one slot, as behind a slow disk.
type blockingHandler struct {
	slog.Handler
	release chan struct{}
	entered chan struct{} // closed when the writer starts waiting, if set
	once    sync.Once
}

func (h *blockingHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "opened") {
		h.once.Do(func() {
			if h.entered != nil {
				close(h.entered)
			}
			<-h.release
		})
	}
	return nil
}
func (h *blockingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *blockingHandler) Enabled(context.Context, slog.Level) bool { return true }

// A writer that falls behind never blocks the datapath: with every slot
// waiting, Denied returns at once, and the frames it refused are counted.
func TestWriterBehindDropsAndCounts(t *testing.T) {
	h := &blockingHandler{Handler: slog.DiscardHandler, release: make(chan struct{})}
	const slots = 4
	c, err := forensic.Open(forensic.Config{Dir: t.TempDir(), QueueLen: slots, Logger: slog.New(h)})
	if err != nil {
		t.Fatal(err)
	}
	d := deny()
	frame := make([]byte, 100)
	if !c.Denied(gateway.South, frame, d) {
		t.Fatal("first frame refused")
	}
	// Wait until the writer holds the first slot (it blocks in its log line).
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().Queued != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	const offered = 100
	start := time.Now()
	accepted := 1
	for range offered {
		if c.Denied(gateway.South, frame, d) {
			accepted++
		}
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("%d offers took %v: Denied waited", offered, el)
	}
	if accepted != slots || c.Stats().Dropped != uint64(offered+1-slots) {
		t.Errorf("accepted %d, dropped %d; want %d and %d", accepted, c.Stats().Dropped, slots, offered+1-slots)
	}
	close(h.release)
	c.Close()
	if st := c.Stats(); st.Frames != slots {
		t.Errorf("written %d frames, want the %d accepted", st.Frames, slots)
	}
}

// The datapath side allocates nothing: an allowed frame through the Tap
// and the engine, and a denied frame handed to the Capture.
func TestTapAndDeniedNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector (sync.Pool drops items)")
	}
	// The writer goroutine allocates when it opens a file, and
	// AllocsPerRun counts every goroutine's allocations: hold the writer
	// in its "opened" log line while the datapath side is measured.
	h := &blockingHandler{Handler: slog.DiscardHandler, release: make(chan struct{}), entered: make(chan struct{})}
	r := newRig(t, forensic.Config{Dir: t.TempDir(), QueueLen: 1024, Logger: slog.New(h)})
	d := deny()
	frame := make([]byte, 1514)
	if !r.cap.Denied(gateway.North, frame, d) {
		t.Fatal("first frame refused")
	}
	select {
	case <-h.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("writer never opened a file")
	}
	defer close(h.release)
	arp := make([]byte, 60)
	copy(arp, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0x5e, 0, 0, 1, 0x08, 0x06})
	if a := testing.AllocsPerRun(100, func() { r.tap.Handle(gateway.North, arp, nopTx) }); a != 0 {
		t.Errorf("allowed frame through the Tap: %v allocs, want 0", a)
	}
	if a := testing.AllocsPerRun(100, func() { r.cap.Denied(gateway.North, frame, d) }); a != 0 {
		t.Errorf("Denied: %v allocs, want 0", a)
	}
}

// Open refuses bounds that leave less than MinFileBytes per file.
func TestOpenRefusesTinyBounds(t *testing.T) {
	_, err := forensic.Open(forensic.Config{Dir: t.TempDir(), MaxBytes: 100 << 10, MaxFiles: 8})
	if err == nil || !strings.Contains(err.Error(), "per file") {
		t.Errorf("Open = %v, want ErrTooSmall", err)
	}
}

// tcpFrame is a Modbus write from 192.0.2.1:40000 to 192.0.2.2:502.
func tcpFrame() []byte {
	cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.1:40000")}
	srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.2:502")}
	fl := capture.NewTCPFlow(cli, srv)
	fl.Handshake()
	return fl.Send(true, []byte{0, 2, 0, 0, 0, 6, 1, 6, 0, 5, 0x10, 0x92})
}
