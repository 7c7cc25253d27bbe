package events

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestAppProtoOfPlainFlow: an event of a plain tcp flow on which the
// gateway recognised S7comm (Net.App) writes app_proto "s7comm" beside
// proto "TCP", and reads back as the same event; an inspected protocol's
// event keeps its own app_proto.
func TestAppProtoOfPlainFlow(t *testing.T) {
	e := Event{Time: time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC), Type: TypeDeny, Severity: SevNotice, Verdict: "deny",
		Src: netip.MustParseAddrPort("192.0.2.130:40000"), Dst: netip.MustParseAddrPort("192.0.2.10:102"),
		Proto: "tcp", Net: Net{IPProto: ProtoTCP, App: "s7comm"}}
	b := e.AppendJSON(nil)
	if !strings.Contains(string(b), `"proto":"TCP","app_proto":"s7comm"`) {
		t.Fatalf("record lacks app_proto s7comm: %s", b)
	}
	var back Event
	if err := UnmarshalJSONEvent(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Proto != "tcp" || back.Net.App != "s7comm" {
		t.Errorf("read back proto %q app %q, want tcp s7comm", back.Proto, back.Net.App)
	}
	e.Proto = "modbus"
	if b := e.AppendJSON(nil); !strings.Contains(string(b), `"app_proto":"modbus"`) {
		t.Errorf("an inspected flow's record: %s", b)
	}
}
