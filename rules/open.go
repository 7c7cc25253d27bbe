package rules

// This file answers the first question the gateway asks of a packet it
// has no flow for: is there a flow, and which end opened it? The answer
// depends on the policy (a conduit that allows the reverse direction, a
// monitor-mode conduit that adopts a connection picked up mid-stream, a
// DNP3 rule that lets an outstation speak first), so it lives here; the
// gateway reports and forwards what it says.

import "github.com/otgw/otgw/protocols"

// Opening says how the packet that opens a flow was seen.
type Opening uint8

const (
	// OpenSYN: a TCP SYN (without ACK, RST or FIN): its sender is the
	// client.
	OpenSYN Opening = iota
	// OpenMidstream: another TCP segment, of a connection whose handshake
	// the gateway did not see (it started, or was restarted, while the
	// connection was open).
	OpenMidstream
	// OpenDatagram: a UDP datagram.
	OpenDatagram
)

// Event reasons of UDP flows a plain udp rule would allow but that carry
// an inspected protocol's port (EvaluateOpen's named result).
const (
	// NamedModbusUDP: a UDP flow to or from port 502. Modbus over UDP
	// (Modbus Messaging on TCP/IP Implementation Guide V1.0b section 4.1)
	// is not inspected, so it is refused (Reason protocol_not_allowed;
	// monitor mode: an alert).
	NamedModbusUDP = "modbus_udp_not_inspected"
	// NamedDNP3UDP: the same for port 20000 (IEEE 1815-2012 Annex E),
	// which crosses only through a dnp3 rule, inspected.
	NamedDNP3UDP = "dnp3_udp_not_inspected"
)

// The Modbus and DNP3 ports, for UDP too.
const (
	modbusUDPPort = 502
	dnp3UDPPort   = 20000
)

// Reverse swaps the two ends of f: ports of the bridge, MAC and IP
// addresses, transport ports.
func (f *Flow) Reverse() {
	f.InPort, f.OutPort = f.OutPort, f.InPort
	f.SrcMAC, f.DstMAC = f.DstMAC, f.SrcMAC
	f.Src, f.Dst = f.Dst, f.Src
	f.SrcPort, f.DstPort = f.DstPort, f.SrcPort
	f.cache = flowCache{}
}

// EvaluateOpen judges the packet that opens a flow. f describes it as
// sent (the packet's sender as Src); when the policy reads the flow the
// other way (the sender is the responder), EvaluateOpen reverses f and
// reports reversed. payload is the datagram's payload (OpenDatagram).
// named is "" or an event reason the verdict has beyond its Reason
// (NamedModbusUDP, NamedDNP3UDP). It allocates nothing.
//
//   - A SYN is judged from its sender.
//   - A mid-stream segment is judged from its sender, else the other way;
//     the gateway adopts it only when Verdict.AdoptsMidstream.
//   - A datagram is judged from its sender. The one exception is a
//     responder that speaks first because its protocol says so: a DNP3
//     outstation's unsolicited response to its master (IEEE 1815-2012
//     clause 4.2.2.4 and Annex E), adopted only when the reversed datagram
//     matches a conduit's DNP3 rule (master to outstation on the rule's
//     port) and is inspected from there. A plain udp rule never adopts
//     reverse traffic: with a conduit plc1 -> logsrv udp/514, the log
//     server's datagrams from port 514 to any port of plc1 are new flows
//     of logsrv, judged (and refused) as such. The reversed DNP3 rule is
//     preferred to an uninspected allowance, and to a DNP3 rule the other
//     way when the datagram's first frame comes from an outstation (DIR
//     clear, IEEE 1815-2012 clause 9.2.4.1.3): the master is the one the
//     DIR bit names, not the first to speak.
//   - Modbus over UDP is not inspected, and DNP3 over UDP only through a
//     dnp3 rule: a plain udp rule does not let their datagrams through
//     unjudged, in either direction of the flow (a flow a plain rule lets
//     the outstation open would carry the master's operates back
//     uninspected). Such a flow is refused (monitor mode: alerted) with
//     Reason protocol_not_allowed and a named reason.
func (rs *Ruleset) EvaluateOpen(f *Flow, o Opening, payload []byte) (v Verdict, reversed bool, named string) {
	v = rs.EvaluateFlow(f)
	switch o {
	case OpenMidstream:
		if v.Action == Deny {
			f.Reverse()
			if v2 := rs.EvaluateFlow(f); v2.Action != Deny {
				return v2, true, ""
			}
			f.Reverse()
		}
	case OpenDatagram:
		if v.Action == Deny || v.Inspect == protocols.ProtoNone || v.Inspect == protocols.ProtoDNP3 && dnp3FromOutstation(payload) {
			f.Reverse()
			if v2 := rs.EvaluateFlow(f); v2.Action == Allow && v2.Inspect == protocols.ProtoDNP3 {
				v, reversed = v2, true
			} else {
				f.Reverse()
			}
		}
		if named = uninspectedUDP(f.SrcPort, f.DstPort); named != "" && v.Action != Deny && v.Inspect == protocols.ProtoNone {
			v.Reason, v.Rule, v.RuleName = ReasonProtocolNotAllowed, -1, ""
			if v.Mode == ModeMonitor {
				v.Action = Alert
			} else {
				v.Action = Deny
			}
		} else {
			named = ""
		}
	}
	return v, reversed, named
}

// AdoptsMidstream reports whether v lets the gateway adopt a TCP
// connection it picked up mid-stream: only an allowing monitor-mode
// conduit (or policy) does; in enforce mode a connection must be seen
// opening.
func (v Verdict) AdoptsMidstream() bool { return v.Action != Deny && v.Mode == ModeMonitor }

// dnp3FromOutstation reports whether b starts with a DNP3 link frame
// header whose DIR bit is clear: sent by an outstation (IEEE 1815-2012
// clause 9.2.4.1.3).
func dnp3FromOutstation(b []byte) bool {
	return len(b) >= 10 && b[0] == 0x05 && b[1] == 0x64 && b[3]&0x80 == 0
}

// uninspectedUDP names the reason a UDP flow between ports sport and
// dport may not cross without inspection: Modbus or DNP3 on either end.
func uninspectedUDP(sport, dport uint16) string {
	switch {
	case sport == modbusUDPPort || dport == modbusUDPPort:
		return NamedModbusUDP
	case sport == dnp3UDPPort || dport == dnp3UDPPort:
		return NamedDNP3UDP
	}
	return ""
}
