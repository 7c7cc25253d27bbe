package gateway

import (
	"unsafe"

	"net/netip"
	"sort"
	"time"

	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols"
)

// FlowInfo describes one flow of the table for the status endpoint.
// Indexes [0] and [1] are the client's (initiator's) and the server's.
type FlowInfo struct {
	ID         uint64         `json:"id"`
	Client     netip.AddrPort `json:"client"`
	Server     netip.AddrPort `json:"server"`
	Transport  string         `json:"transport"`           // tcp, udp, icmp, icmpv6
	Proto      string         `json:"proto,omitempty"`     // inspected protocol: modbus, dnp3, opcua
	ClientPort string         `json:"client_port"`         // bridge port the client is behind
	Conduit    string         `json:"conduit,omitempty"`   // conduit whose rule allowed (or refused) the flow
	Verdict    string         `json:"verdict"`             // flow-level verdict: allow, deny, alert
	Mode       string         `json:"mode"`                // enforce, monitor
	State      string         `json:"state,omitempty"`     // TCP: syn_sent ... closed
	Midstream  bool           `json:"midstream,omitempty"` // picked up without a handshake (monitor)
	Start      time.Time      `json:"start"`
	LastSeen   time.Time      `json:"last_seen"`
	Packets    [2]uint64      `json:"packets"`
	Bytes      [2]uint64      `json:"bytes"`
	PDUs       uint64         `json:"pdus"`
	PDUsDenied uint64         `json:"pdus_denied"` // denied, or alerted in monitor mode
}

var tcpStateNames = [...]string{"none", "syn_sent", "syn_received", "established", "closing", "closed"}

// Flows returns up to max flows of the table (max <= 0: all), most
// recently seen first. It is for the control plane: it allocates, and it
// takes each flow's lock briefly, as a packet of that flow would.
func (e *Engine) Flows(max int) []FlowInfo {
	t := e.tab
	type ref struct {
		i    int32
		gen  uint32
		last int64
	}
	t.mu.Lock()
	n := t.used
	t.mu.Unlock()
	refs := make([]ref, 0, n+n/8+64) // allocated outside the lock every packet takes (more flows may come: append grows it)
	t.mu.Lock()
	for c := range numClasses {
		for j := t.head[c]; j != noSlot; j = t.slot(j).next {
			refs = append(refs, ref{j, t.slot(j).gen, t.slot(j).lastSeen})
		}
	}
	t.mu.Unlock()
	sort.Slice(refs, func(a, b int) bool { return refs[a].last > refs[b].last })
	if max > 0 && len(refs) > max {
		refs = refs[:max]
	}
	out := make([]FlowInfo, 0, len(refs))
	for _, r := range refs {
		f := t.slot(r.i)
		f.mu.Lock()
		if f.gen != r.gen || !f.inUse {
			f.mu.Unlock()
			continue
		}
		out = append(out, e.flowInfo(f, r.last))
		f.mu.Unlock()
	}
	return out
}

// flowInfo copies what FlowInfo shows of f. Caller holds f.mu.
func (e *Engine) flowInfo(f *flow, last int64) FlowInfo {
	k := f.key
	a, b := netip.AddrPortFrom(k.a, k.pa), netip.AddrPortFrom(k.b, k.pb)
	if !f.aIsClient {
		a, b = b, a
	}
	fi := FlowInfo{
		ID: f.id, Client: a, Server: b,
		ClientPort: e.cfg.PortNames[f.clientPort],
		Conduit:    f.verdict.ConduitName,
		Verdict:    f.verdict.Action.String(),
		Mode:       f.verdict.Mode.String(),
		Midstream:  f.midstream,
		Start:      time.Unix(0, f.start).UTC(),
		LastSeen:   time.Unix(0, last).UTC(),
		Packets:    f.pkts,
		Bytes:      f.bytes,
		PDUs:       f.pdus,
		PDUsDenied: f.pdusDenied,
	}
	if f.verdict.Conduit < 0 {
		fi.Conduit = ""
	}
	switch k.proto {
	case packet.ProtoTCP:
		fi.Transport = "tcp"
		if int(f.state) < len(tcpStateNames) {
			fi.State = tcpStateNames[f.state]
		}
	case packet.ProtoUDP:
		fi.Transport = "udp"
	case packet.ProtoICMP:
		fi.Transport = "icmp"
	case packet.ProtoICMPv6:
		fi.Transport = "icmpv6"
	}
	if f.inspect != protocols.ProtoNone {
		fi.Proto = f.inspect.String()
	}
	return fi
}

// TableBytes is the memory of a flow table of maxFlows slots once all are
// in use (the slots alone: a flow's inspection state counts against
// Config.MemoryCap). otgw run sizes its soft memory limit with it.
func TableBytes(maxFlows int) int64 {
	if maxFlows <= 0 {
		maxFlows = DefaultMaxFlows
	}
	return int64(maxFlows) * int64(unsafe.Sizeof(flow{}))
}
