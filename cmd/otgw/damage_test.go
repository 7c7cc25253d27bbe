package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/simulate/capture"
)

// TestTruncatedCaptureLearnedAndReplayed: a capture cut inside its last
// frame (a killed tcpdump) is learned and replayed up to the damage: exit
// 0, a policy on stdout, and a warning that names the offset and the
// bytes lost.
func TestTruncatedCaptureLearnedAndReplayed(t *testing.T) {
	hmi := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:40000")}
	plc := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.10:502")}
	f := capture.NewTCPFlow(hmi, plc)
	frames := f.Handshake()
	for i := range 4 {
		req := modbus.AppendRequest(nil, uint16(i), 1, modbus.AppendAddrQty(nil, modbus.FuncReadHoldingRegisters, 0, 2))
		resp := modbus.AppendResponse(nil, uint16(i), 1, modbus.AppendReadRegistersResponse(nil, modbus.FuncReadHoldingRegisters, []uint16{1, 2}))
		frames = append(frames, f.Send(true, req), f.Send(false, resp))
	}
	var buf bytes.Buffer
	w, err := capture.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, fr := range frames {
		if err := w.WriteFrame(fr); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	pc := filepath.Join(dir, "cut.pcap")
	if err := os.WriteFile(pc, buf.Bytes()[:buf.Len()-30], 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"learn", pc}, &stdout, &stderr); code != 0 {
		t.Fatalf("learn exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "otgw learn: warning: cut.pcap: damaged capture: 10 frames read") ||
		!strings.Contains(stdout.String(), "read: holding 0-1") {
		t.Fatalf("learn: stderr %q, policy:\n%s", stderr.String(), stdout.String())
	}
	pol := filepath.Join(dir, "learned.yaml")
	if err := os.WriteFile(pol, stdout.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var ro, re bytes.Buffer
	if code := run([]string{"replay", "--policy", pol, "--fail-on-deny", pc}, &ro, &re); code != 0 ||
		!strings.Contains(re.String(), "otgw replay: warning: cut.pcap: damaged capture") {
		t.Fatalf("replay exit %d: stderr %q\n%s", code, re.String(), ro.String())
	}
}
