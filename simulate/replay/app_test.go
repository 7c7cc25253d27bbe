package replay

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/simulate/capture"
)

// anyTCP admits no flow of the captures below (TCP port 1 only), so every
// flow gets an event: an alert in monitor mode, a deny in enforce mode.
const anyTCP = `version: 1
name: any
mode: %s
zones:
  all: { networks: [0.0.0.0/0, "::/0"] }
conduits:
  - name: nothing
    from: all
    to: all
    rules:
      - tcp: { ports: [1] }
`

// appEvents returns the app_proto of each event's record, by the event's
// server port: the end on a port of the protocols named, else the lower.
func appEvents(t *testing.T, mode string, paths ...string) map[uint16][]string {
	t.Helper()
	out := map[uint16][]string{}
	_, err := Run(Options{Policy: mustPolicy(t, fmt.Sprintf(anyTCP, mode)), OnEvent: func(e *Event) {
		var rec struct {
			AppProto string `json:"app_proto"`
		}
		if err := json.Unmarshal(e.JSON(), &rec); err != nil {
			t.Fatal(err)
		}
		port := min(e.Src.Port(), e.Dst.Port())
		for _, p := range []uint16{e.Src.Port(), e.Dst.Port()} {
			if p == 102 || p == 44818 || p == 2222 || p == 2404 {
				port = p
			}
		}
		out[port] = append(out[port], rec.AppProto)
	}}, paths...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEventsNameUninspectedProtocols: replayed real S7comm, EtherNet/IP
// and IEC 60870-5-104 captures on a plain tcp policy give events whose
// app_proto names the protocol (the flows are picked up mid-stream, so
// the first packet's payload is checked too); other flows in the same
// captures (NetBIOS, a stray UDP port) are not named.
func TestEventsNameUninspectedProtocols(t *testing.T) {
	dir := testenv.Pcaps(t)
	for _, tc := range []struct {
		file string
		port uint16
		want string
	}{
		{"other_s7comm_iti_reading_setting_plc_time.pcap", 102, "s7comm"},
		{"other_s7comm_iti_snap7_s300_everything.pcap", 102, "s7comm"},
		{"other_s7comm_iti_step7_s300_stop.pcap", 102, "s7comm"},
		{"other_enip_iti_enip_test.pcap", 44818, "enip"},
		{"other_enip_ndpi_ethernetIP.pcap", 44818, "enip"},
		{"other_enip_suricata_enip_test1.pcap", 44818, "enip"},
		{"other_iec104_iti_090813_diverse.pcap", 2404, "iec104"},
		{"other_iec104_ndpi_IEC104.pcap", 2404, "iec104"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got := appEvents(t, "monitor", filepath.Join(dir, tc.file))
			if len(got[tc.port]) == 0 {
				t.Fatalf("no event on port %d: %v", tc.port, got)
			}
			for port, apps := range got {
				for _, a := range apps {
					if port == tc.port && a != tc.want || port != tc.port && a != "" {
						t.Errorf("event on port %d: app_proto %q, want %q", port, a, map[bool]string{true: tc.want}[port == tc.port])
					}
				}
			}
		})
	}
}

// TestEventsNameByPortAndContent: a denied SYN to TCP 102 is named by its
// port; a flow on 102 picked up mid-stream whose bytes are no TPKT is not
// named S7comm, one whose bytes are is.
func TestEventsNameByPortAndContent(t *testing.T) {
	cli := capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:40000")}
	plc := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.10:102")}
	syn := capture.NewTCPFlow(cli, plc).Handshake()[:1]
	cli.Addr = netip.MustParseAddrPort("192.0.2.130:40001")
	http := capture.NewTCPFlow(cli, plc).Send(true, []byte("GET / HTTP/1.1\r\nHost: plc\r\n\r\n"))
	cli.Addr = netip.MustParseAddrPort("192.0.2.130:40002")
	cotp := capture.NewTCPFlow(cli, plc).Send(true, []byte{0x03, 0x00, 0x00, 0x16, 0x11, 0xe0, 0x00, 0x00, 0x00, 0x01, 0x00, 0xc1, 0x02, 0x01, 0x00, 0xc2, 0x02, 0x01, 0x02, 0xc0, 0x01, 0x0a})
	for _, tc := range []struct {
		name, mode string
		frame      []byte
		want       string
	}{
		{"syn", "enforce", syn[0], "s7comm"},
		{"not tpkt", "monitor", http, ""},
		{"cotp", "monitor", cotp, "s7comm"},
	} {
		got := appEvents(t, tc.mode, writeCapture(t, [][]byte{tc.frame}))
		if len(got[102]) != 1 || got[102][0] != tc.want {
			t.Errorf("%s: app_proto of the events on 102: %q, want [%q]", tc.name, got[102], tc.want)
		}
	}
	// The report names it too: top denied flows, text and JSON.
	rep, err := Run(Options{Policy: mustPolicy(t, fmt.Sprintf(anyTCP, "enforce"))}, writeCapture(t, syn))
	if err != nil {
		t.Fatal(err)
	}
	var sum strings.Builder
	if err := rep.WriteSummary(&sum); err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(rep.TopDenied)
	if len(rep.TopDenied) != 1 || !strings.Contains(sum.String(), "tcp (s7comm)") || !strings.Contains(string(js), `"app_proto":"s7comm"`) {
		t.Errorf("report does not name s7comm: top denied %s\n%s", js, sum.String())
	}
}
