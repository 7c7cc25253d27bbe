package gateway

import (
	"net"
	"strconv"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols"
)

// EventNet is the packet context of an event (transport, ICMP type and
// code, MACs, ethertype, and the uninspected industrial protocol its
// ports and payload show: protocols.Recognise). The engine calls it only
// when it emits an event; replay uses it for its records.
func EventNet(p *packet.Packet) events.Net {
	if p == nil {
		return events.Net{}
	}
	n := events.Net{HasMAC: p.HasMAC, SrcMAC: p.SrcMAC, DstMAC: p.DstMAC, EtherType: p.EtherType}
	if p.IPVersion != 0 {
		n.IPProto = p.Proto
		if p.Proto == events.ProtoICMP || p.Proto == events.ProtoICMPv6 {
			n.ICMPType, n.ICMPCode = p.ICMPType, p.ICMPCode
		}
		if p.HasL4 && !p.Fragment && (p.Proto == packet.ProtoTCP || p.Proto == packet.ProtoUDP) {
			n.App = protocols.Recognise(p.Proto == packet.ProtoUDP, p.SrcPort, p.DstPort, p.Payload).String()
		}
	}
	return n
}

// endpoints is the "src -> dst" of an event message: addresses and ports,
// or for a frame without IP its MAC addresses and ethertype.
func endpoints(e *events.Event) string {
	if e.Src.IsValid() && e.Dst.IsValid() {
		return e.Src.String() + " -> " + e.Dst.String()
	}
	if e.Net.HasMAC {
		return net.HardwareAddr(e.Net.SrcMAC[:]).String() + " -> " + net.HardwareAddr(e.Net.DstMAC[:]).String() +
			" ethertype 0x" + strconv.FormatUint(uint64(e.Net.EtherType), 16)
	}
	return "(no addresses)"
}
