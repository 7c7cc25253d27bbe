package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/otgw/otgw/gateway/forensic"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

// TestCaptureDeniedLive: `otgw run --capture-denied DIR` keeps the denied
// Modbus write in a pcapng file that tshark reads, with the deny event's
// flow_id and reason in the packet comment, and /metrics counts it.
func TestCaptureDeniedLive(t *testing.T) {
	testenv.NeedRoot(t)
	tshark := testenv.NeedCmd(t, "tshark")
	l := netns.NewLine(t)
	startPymodbus(t, l)
	dir := filepath.Join(t.TempDir(), "denied")
	g := startGateway(t, l, policyYAML("enforce", "reply"), "--capture-denied", dir, "--capture-denied-size", "1MiB", "--capture-denied-files", "2")
	_ = mbClient(t, l, time.Second, func(c modbus.Client) error {
		_, err := c.WriteSingleRegister(5, 4242)
		return err
	})
	g.waitEvent("deny", 5*time.Second, func(e event) bool { return e.Type == "deny" && e.Proto == "modbus" })
	var flowID uint64
	var reason string
	f, err := os.Open(g.events)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r struct {
			EventType string `json:"event_type"`
			AppProto  string `json:"app_proto"`
			FlowID    uint64 `json:"flow_id"`
			Reason    string `json:"reason"`
		}
		// The write's deny, not the IPv6 neighbour or MLD frames the
		// namespaces' interfaces send around the same time (also denied).
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.EventType == "deny" && r.AppProto == "modbus" && flowID == 0 {
			flowID, reason = r.FlowID, r.Reason
		}
	}
	f.Close()
	if flowID == 0 {
		t.Fatal("no modbus deny event with a flow_id")
	}
	// Wait for the write's own frame, not just any: a denied NDP or MLD
	// frame may be in the file first while the write's is still with the
	// capture's writer.
	var files []string
	want := "flow_id=" + strconv.FormatUint(flowID, 10) + " "
	deadline := time.Now().Add(10 * time.Second)
	for found := false; !found; {
		files, _ = filepath.Glob(filepath.Join(dir, "denied-*.pcapng"))
		if len(files) == 1 {
			if fh, err := os.Open(files[0]); err == nil {
				pkts, _, err := forensic.Read(fh)
				fh.Close()
				for _, p := range pkts {
					found = found || (err == nil && strings.Contains(p.Comment+" ", want))
				}
			}
		}
		if !found && time.Now().After(deadline) {
			t.Fatalf("the write's denied frame (%s) not captured in %s within 10s (files %v)", want, dir, files)
		}
		if !found {
			time.Sleep(20 * time.Millisecond)
		}
	}
	out, err := exec.Command(tshark, "-r", files[0], "-T", "fields", "-E", "separator=|",
		"-e", "frame.interface_name", "-e", "modbus.func_code", "-e", "modbus.reference_num", "-e", "frame.comment").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	// Other denied frames may be captured too: the namespaces' interfaces
	// send IPv6 MLD reports when they come up, which the policy denies
	// (no_conduit). Exactly one is the write; every frame carries a deny
	// comment.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	writes := 0
	for _, ln := range lines {
		if !strings.Contains(ln, "|otgw deny flow_id=") {
			t.Errorf("captured frame without the deny comment: %q", ln)
		}
		if strings.Contains(ln, want) {
			writes++
			if !strings.Contains(ln, "reason="+reason) || !strings.HasPrefix(ln, "north ("+l.North+")|6|5|") {
				t.Errorf("tshark: %q, want the write (fc 6, register 5) on north with reason %s", ln, reason)
			}
		}
	}
	if writes != 1 {
		t.Errorf("tshark: %q, want one frame with %q (the write)", out, want)
	}
	m := g.get("/metrics")
	var frames int
	for _, ln := range strings.Split(m, "\n") {
		if v, ok := strings.CutPrefix(ln, "otgw_capture_denied_frames_total "); ok {
			frames, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if frames < len(lines) {
		t.Errorf("/metrics: otgw_capture_denied_frames_total %d, but %d frames were read from the file", frames, len(lines))
	}
}

// TestTransactionLogLive: with log: transactions on the conduit, an
// allowed read and its response through `otgw run` make one transaction
// record in the events file, in the record schema, and /metrics counts it.
func TestTransactionLogLive(t *testing.T) {
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	startPymodbus(t, l)
	pol := strings.Replace(policyYAML("enforce", "reply"), "    to: plc\n", "    to: plc\n    log: transactions\n", 1)
	g := startGateway(t, l, pol)
	if got := readHolding(t, l, 5, 2); got[0] != 1005 {
		t.Fatalf("holding 5: got %d, want 1005", got[0])
	}
	ev := g.waitEvent("transaction", 5*time.Second, func(e event) bool { return e.Type == "transaction" })
	if ev.Conduit != "hmi-plc" || ev.Proto != "modbus" || ev.Fields["function"] != "read_holding_registers" {
		t.Errorf("transaction event: %+v", ev)
	}
	if a, _ := ev.Fields["addr"].(float64); a != 5 {
		t.Errorf("transaction addr = %v, want 5", ev.Fields["addr"])
	}
	if r, ok := ev.Fields["response"].(map[string]any); !ok || r["dir"] != "response" {
		t.Errorf("transaction response = %v", ev.Fields["response"])
	}
	g.checkEventsFileSchema()
	if m := g.get("/metrics"); !strings.Contains(m, "otgw_transactions_total 1\n") {
		t.Errorf("/metrics lacks otgw_transactions_total 1")
	}
}
