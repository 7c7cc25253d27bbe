package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/simulate/capture"
)

// otgw replay --json prints the transaction records of a conduit with
// log: transactions, as the live gateway logs them (one per allowed read
// and its response, in the record schema), with the capture's file and
// the response's frame number; a denied write makes none.
func TestReplayTransactions(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "tx.yaml")
	if err := os.WriteFile(pol, []byte(`version: 1
name: tx
action: reply
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
    log: transactions
    rules:
      - modbus: { units: [1], allow: [ { read: holding 0-99 } ] }
`), 0o644); err != nil {
		t.Fatal(err)
	}
	f := capture.NewTCPFlow(capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:40000")},
		capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.10:502")})
	frames := f.Handshake()
	for tid := uint16(1); tid <= 3; tid++ {
		frames = append(frames,
			f.Send(true, modbus.AppendRequest(nil, tid, 1, modbus.AppendAddrQty(nil, modbus.FuncReadHoldingRegisters, 10*tid, 2))),
			f.Send(false, modbus.AppendResponse(nil, tid, 1, modbus.AppendReadRegistersResponse(nil, modbus.FuncReadHoldingRegisters, []uint16{1, 2}))))
	}
	frames = append(frames, f.Send(true, modbus.AppendRequest(nil, 9, 1, modbus.AppendWriteSingleRegister(nil, 5, 1))))
	pc := filepath.Join(dir, "reads.pcap")
	fh, err := os.Create(pc)
	if err != nil {
		t.Fatal(err)
	}
	w, err := capture.NewWriter(fh)
	if err != nil {
		t.Fatal(err)
	}
	for _, fr := range frames {
		if err := w.WriteFrame(fr); err != nil {
			t.Fatal(err)
		}
	}
	fh.Close()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"replay", "--policy", pol, "--json", pc}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	sch := testenv.CompileSchema(t, events.Schema)
	var tx []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if err := testenv.ValidateJSON(sch, []byte(line)); err != nil {
			t.Errorf("record does not validate: %v\n%s", err, line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if m["event_type"] == "transaction" {
			tx = append(tx, m)
		}
	}
	if len(tx) != 3 {
		t.Fatalf("%d transaction records, want 3:\n%s", len(tx), stdout.String())
	}
	for i, m := range tx {
		mb, _ := m["modbus"].(map[string]any)
		resp, _ := mb["response"].(map[string]any)
		if m["pcap_filename"] != "reads.pcap" || m["pcap_cnt"] != float64(5+2*i) || m["conduit"] != "hmi-plc" ||
			mb["addr"] != float64(10*(i+1)) || mb["function"] != "read_holding_registers" || resp["dir"] != "response" {
			t.Errorf("transaction %d: %v", i, m)
		}
	}
}
