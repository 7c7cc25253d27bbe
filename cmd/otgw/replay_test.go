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

func TestReplayCommand(t *testing.T) {
	dir := filepath.Join("..", "..", "simulate", "scenarios", "m21-pipelined")
	if _, err := os.Stat(dir); err != nil {
		t.Skip("scenarios not generated")
	}
	pol, pc := filepath.Join(dir, "policy.yaml"), filepath.Join(dir, "input.pcap")
	out := t.TempDir()
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"summary", []string{"--policy", pol, pc}, 0, "function_not_allowed"},
		{"json", []string{"--policy", pol, "--json", pc}, 0, `"verdict":"deny"`},
		{"fail on deny", []string{"--policy", pol, "--fail-on-deny", "--out", out, pc}, 3, "report.html"},
		{"no policy", []string{pc}, 2, ""},
	} {
		var stdout, stderr bytes.Buffer
		got := run(append([]string{"replay"}, tc.args...), &stdout, &stderr)
		if got != tc.wantCode || !strings.Contains(stdout.String(), tc.wantOut) {
			t.Errorf("%s: exit %d want %d; stdout %q lacks %q (stderr %s)", tc.name, got, tc.wantCode, stdout.String(), tc.wantOut, stderr.String())
		}
	}
	for _, f := range []string{"allowed.pcap", "denied.pcap", "report.json", "report.html"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("--out: %v", err)
		}
	}
}

func TestLearnCommandPassesCheck(t *testing.T) {
	pc := filepath.Join("..", "..", "simulate", "scenarios", "m15-frostygoop", "input.pcap")
	if _, err := os.Stat(pc); err != nil {
		t.Skip("scenarios not generated")
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"learn", "--zone", "sup=192.0.2.128/25", "--zone", "sup=north", "--zone", "cell=192.0.2.0/25", "--zone", "cell=south", pc}, &stdout, &stderr); code != 0 {
		t.Fatalf("learn exit %d: %s", code, stderr.String())
	}
	p := filepath.Join(t.TempDir(), "learned.yaml")
	if err := os.WriteFile(p, stdout.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var co bytes.Buffer
	if code := run([]string{"check", p}, &co, &co); code != 0 {
		t.Fatalf("check of learned policy: exit %d: %s\n%s", code, co.String(), stdout.String())
	}
	var ro bytes.Buffer
	if code := run([]string{"replay", "--policy", p, "--fail-on-deny", pc}, &ro, &ro); code != 0 {
		t.Errorf("replay of the learned capture: exit %d\n%s", code, ro.String())
	}
}

// Issue 14: `otgw replay` of many writes on one connection under a
// read-only policy lists every write, the ones after the reset with
// after_reset, and the summary leads with them; --what-if=false gives the
// events of the gateway on the wire only.
func TestReplayWhatIf(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "ro.yaml")
	if err := os.WriteFile(pol, []byte(`version: 1
name: ro
action: reset
zones:
  sup:  { port: north, networks: [192.0.2.128/25] }
  cell: { port: south, networks: [192.0.2.0/25] }
assets:
  hmi: { ip: 192.0.2.130, zone: sup }
  plc: { ip: 192.0.2.10, zone: cell }
conduits:
  - name: hmi-plc
    from: hmi
    to: plc
    rules:
      - modbus: { units: [1], allow: [ { read: holding 0-99 } ] }
`), 0o644); err != nil {
		t.Fatal(err)
	}
	const writes = 10
	pc := filepath.Join(dir, "writes.pcap")
	fh, err := os.Create(pc)
	if err != nil {
		t.Fatal(err)
	}
	w, err := capture.NewWriter(fh)
	if err != nil {
		t.Fatal(err)
	}
	f := capture.NewTCPFlow(capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:40000")},
		capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.10:502")})
	frames := f.Handshake()
	for i := range writes {
		pdu := modbus.AppendWriteSingleRegister(nil, uint16(40+i), 1)
		frames = append(frames, f.Send(true, modbus.AppendRequest(nil, uint16(i+1), 1, pdu)), f.Send(false, modbus.AppendResponse(nil, uint16(i+1), 1, pdu)))
	}
	for _, fr := range frames {
		if err := w.WriteFrame(fr); err != nil {
			t.Fatal(err)
		}
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	run1 := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"replay", "--policy", pol}, append(args, pc)...), &stdout, &stderr); code != 0 {
			t.Fatalf("replay %v: exit %d: %s", args, code, stderr.String())
		}
		return stdout.String()
	}
	j := run1("--json")
	if n, m := strings.Count(j, `"reason":"function_not_allowed"`), strings.Count(j, `"after_reset":true`); n != writes || m != writes-1 {
		t.Errorf("--json: %d function_not_allowed, %d after_reset; want %d and %d\n%s", n, m, writes, writes-1, j)
	}
	if wire := run1("--json", "--what-if=false"); strings.Count(wire, `"reason":"function_not_allowed"`) != 1 || strings.Contains(wire, "after_reset") {
		t.Errorf("--what-if=false: want the one deny of the wire\n%s", wire)
	}
	sum := strings.Split(run1(), "\n")
	if len(sum) < 2 || !strings.HasPrefix(sum[1], "what-if: the policy refuses 10 requests (10 distinct) on 1 conduit") {
		t.Errorf("summary does not lead with the refused requests:\n%s", strings.Join(sum, "\n"))
	}
}
