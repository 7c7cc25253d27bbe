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

// TestLearnPortFlag: `otgw learn --port modbus=N` inspects Modbus on a
// port where nothing else would (--ports-only turns off recognition by
// content), and a bad --port value is a usage error.
func TestLearnPortFlag(t *testing.T) {
	pc := filepath.Join(t.TempDir(), "mb5020.pcap")
	f, err := os.Create(pc)
	if err != nil {
		t.Fatal(err)
	}
	w, err := capture.NewWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	fl := capture.NewTCPFlow(capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:50000")},
		capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.10:5020")})
	frames := fl.Handshake()
	frames = append(frames, fl.Send(true, modbus.AppendRequest(nil, 1, 1, modbus.AppendAddrQty(nil, 3, 0, 2))),
		fl.Send(false, modbus.AppendResponse(nil, 1, 1, modbus.AppendReadRegistersResponse(nil, 3, []uint16{1, 2}))))
	for _, fr := range frames {
		if err := w.WriteFrame(fr); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		want    string
		notWant string
	}{
		{"by port", []string{"--ports-only", "--port", "modbus=5020", pc}, 0, "ports: [5020]", "tcp:"},
		{"by content", []string{pc}, 0, "ports: [5020]", "tcp:"},
		{"ports only, no --port", []string{"--ports-only", pc}, 0, "tcp: {ports: [5020]}", "modbus:"},
		{"bad port", []string{"--port", "s7=102", pc}, 2, "", ""},
	} {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"learn"}, tc.args...), &stdout, &stderr)
		out := stdout.String()
		if code != tc.code || !strings.Contains(out, tc.want) || tc.notWant != "" && strings.Contains(out, tc.notWant) {
			t.Errorf("%s: exit %d (want %d), output lacks %q or has %q:\n%s%s", tc.name, code, tc.code, tc.want, tc.notWant, out, stderr.String())
		}
	}
}
