package rules

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/otgw/otgw/protocols"
)

const openPolicy = `version: 1
name: open
mode: enforce
zones:
  sup:  { port: north, networks: [192.0.2.128/25] }
  cell: { port: south, networks: [192.0.2.0/25] }
assets:
  master: { ip: 192.0.2.140, zone: sup }
  logsrv: { ip: 192.0.2.150, zone: sup }
  rtu:    { ip: 192.0.2.20,  zone: cell }
  plc:    { ip: 192.0.2.10,  zone: cell }
conduits:
  - name: scada
    from: master
    to: rtu
    rules:
      - dnp3:
          allow:
            - function: read
            - unsolicited: true
  - name: logs
    from: plc
    to: logsrv
    rules:
      - udp: { ports: [514, 502] }
      - tcp: { ports: [8080] }
  - name: watch
    from: master
    to: plc
    mode: monitor
    rules:
      - tcp: { ports: [22] }
`

// TestEvaluateOpen checks which end the policy makes the opener of a flow
// and whether the gateway may open it, for each kind of first packet.
func TestEvaluateOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "open.yaml")
	if err := os.WriteFile(path, []byte(openPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	rs := mustCompile(t, path)
	mk := func(src string, sport uint16, dst string, dport uint16, transport uint8) Flow {
		f := Flow{InPort: "north", OutPort: "south", Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst),
			SrcPort: sport, DstPort: dport, Transport: transport}
		if f.Src.As4()[3] < 128 {
			f.InPort, f.OutPort = "south", "north"
		}
		return f
	}
	// A DNP3 link header, DIR clear: sent by an outstation.
	fromOutstation := []byte{0x05, 0x64, 0x0a, 0x44, 0x01, 0x00, 0x0a, 0x00, 0, 0}
	cases := []struct {
		name         string
		f            Flow
		open         Opening
		payload      []byte
		action       Action
		reversed     bool
		named        string
		inspect      protocols.Proto
		adoptsMidstr bool
	}{
		{"syn on a monitor conduit", mk("192.0.2.140", 40000, "192.0.2.10", 22, TransportTCP), OpenSYN, nil, Allow, false, "", protocols.ProtoNone, true},
		{"syn from the responder", mk("192.0.2.10", 22, "192.0.2.140", 40000, TransportTCP), OpenSYN, nil, Deny, false, "", protocols.ProtoNone, false},
		{"server's segment picked up mid-stream", mk("192.0.2.10", 22, "192.0.2.140", 40000, TransportTCP), OpenMidstream, nil, Allow, true, "", protocols.ProtoNone, true},
		{"mid-stream on an enforce conduit", mk("192.0.2.10", 40000, "192.0.2.150", 8080, TransportTCP), OpenMidstream, nil, Allow, false, "", protocols.ProtoNone, false},
		{"outstation's unsolicited datagram", mk("192.0.2.20", 20000, "192.0.2.140", 20000, TransportUDP), OpenDatagram, fromOutstation, Allow, true, "", protocols.ProtoDNP3, false},
		{"log server answering a plain udp flow", mk("192.0.2.150", 514, "192.0.2.10", 40000, TransportUDP), OpenDatagram, nil, Deny, false, "", protocols.ProtoNone, false},
		{"plain udp flow", mk("192.0.2.10", 40000, "192.0.2.150", 514, TransportUDP), OpenDatagram, nil, Allow, false, "", protocols.ProtoNone, false},
		{"modbus over udp through a plain rule", mk("192.0.2.10", 40000, "192.0.2.150", 502, TransportUDP), OpenDatagram, nil, Deny, false, NamedModbusUDP, protocols.ProtoNone, false},
	}
	for _, c := range cases {
		f := c.f
		v, reversed, named := rs.EvaluateOpen(&f, c.open, c.payload)
		if v.Action != c.action || reversed != c.reversed || named != c.named || v.Inspect != c.inspect || v.AdoptsMidstream() != c.adoptsMidstr {
			t.Errorf("%s: action %v reversed %v named %q inspect %v adopts %v; want %v %v %q %v %v",
				c.name, v.Action, reversed, named, v.Inspect, v.AdoptsMidstream(), c.action, c.reversed, c.named, c.inspect, c.adoptsMidstr)
		}
		want := c.f
		if c.reversed {
			want.Reverse()
		}
		if f.Src != want.Src || f.SrcPort != want.SrcPort || f.InPort != want.InPort {
			t.Errorf("%s: flow left as %v:%d in %s, want %v:%d in %s", c.name, f.Src, f.SrcPort, f.InPort, want.Src, want.SrcPort, want.InPort)
		}
		if named != "" && v.Reason != ReasonProtocolNotAllowed {
			t.Errorf("%s: reason %v, want protocol_not_allowed", c.name, v.Reason)
		}
	}
	f := mk("192.0.2.20", 20000, "192.0.2.140", 20000, TransportUDP)
	if a := testing.AllocsPerRun(100, func() {
		g := f
		_, _, _ = rs.EvaluateOpen(&g, OpenDatagram, fromOutstation)
	}); a != 0 {
		t.Errorf("EvaluateOpen allocates %.0f times", a)
	}
}
