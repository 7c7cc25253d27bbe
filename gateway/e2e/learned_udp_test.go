package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/rules/learn"
	"github.com/otgw/otgw/simulate/capture"
	"github.com/otgw/otgw/simulate/learnrun"
	"github.com/otgw/otgw/simulate/replay"
)

// TestLearnedDNP3UDPDeniesOperate is issue 13's DNP3/UDP learned case: a
// read-only DNP3-over-UDP capture in which the outstation speaks first
// (from port 20000 to the master's port). The policy learned
// from it has one dnp3 conduit from the master (the DIR bit names it) that
// allows reads; replayed with the capture (without --strict-midstream),
// nothing of the capture is denied, and a DIRECT_OPERATE from the
// master's port, one second after it, is denied.
func TestLearnedDNP3UDPDeniesOperate(t *testing.T) {
	path := filepath.Join(testenv.Pcaps(t), "dnp3_zeek_dnp3_udp_read.pcap") // skips naming the path when absent (fails under CI)
	pol, _, err := learnrun.Learn(learn.Options{}, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(pol.Conduits) != 1 || pol.Conduits[0].Rules[0].DNP3 == nil {
		t.Fatalf("learned %d conduits (first %+v), want one dnp3 conduit", len(pol.Conduits), pol.Conduits)
	}
	// The master and outstation are the capture's own DNP3/UDP endpoints
	// (the outstation on port 20000), read from it rather than restated.
	var end time.Time
	var master, out capture.Endpoint
	if err := capture.ReadFrames(path, func(f *capture.Frame) error {
		if f.Time.After(end) {
			end = f.Time
		}
		var p packet.Packet
		if p.Decode(f.Data, f.Link) == nil && p.Proto == packet.ProtoUDP && p.SrcPort == 20000 {
			out = capture.Endpoint{MAC: capture.MAC(2), Addr: p.SrcAddrPort()}
			master = capture.Endpoint{MAC: capture.MAC(1), Addr: p.DstAddrPort()}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !out.Addr.IsValid() {
		t.Fatal("no datagram from the outstation's port 20000 in the capture")
	}
	extra := filepath.Join(t.TempDir(), "operate.pcap")
	fh, err := os.Create(extra)
	if err != nil {
		t.Fatal(err)
	}
	w, err := capture.NewWriter(fh)
	if err != nil {
		t.Fatal(err)
	}
	w.Time = end.Add(time.Second)
	apdu := dnp3.AppendCROB(nil, 5, dnp3.FuncDirectOperate, 0, dnp3.CROB{Code: 0x03, Count: 1, OnMs: 100})
	if err := w.WriteFrame(capture.UDPDatagram(master, out, dnp3.AppendLinkFrames(nil, 0xC4, 1, 100, apdu))); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	var evs []*replay.Event
	if _, err := replay.Run(replay.Options{Policy: pol, OnEvent: func(e *replay.Event) { evs = append(evs, e) }}, path, extra); err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].File != "operate.pcap" || evs[0].Verdict != "deny" || evs[0].Reason != "function_not_allowed" {
		for _, e := range evs {
			t.Logf("event: %s frame %d %s %s", e.File, e.Frame, e.Verdict, e.Reason)
		}
		t.Fatalf("got %d events, want exactly one: the operate denied as function_not_allowed", len(evs))
	}
}
