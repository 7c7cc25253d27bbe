package rules

import (
	"net/netip"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/opcua"
)

// Action is what a verdict tells the datapath to do.
type Action uint8

// Actions. The zero value is Deny, so a forgotten verdict fails closed.
const (
	Deny  Action = iota
	Allow        // forward
	Alert        // monitor mode: would have been denied; forward and report
)

// String returns "deny", "allow" or "alert".
func (a Action) String() string {
	switch a {
	case Allow:
		return "allow"
	case Alert:
		return "alert"
	}
	return "deny"
}

// Mode is a conduit's (or the policy's) enforcement mode.
type Mode uint8

// Modes. The zero value is ModeEnforce.
const (
	ModeEnforce Mode = iota
	ModeMonitor
)

// String returns "enforce" or "monitor".
func (m Mode) String() string {
	if m == ModeMonitor {
		return "monitor"
	}
	return "enforce"
}

// DenyAction is how a denied PDU or flow is refused (DESIGN.md "Deny actions").
type DenyAction uint8

// Deny actions. The zero value is ActionDrop.
const (
	ActionDrop  DenyAction = iota
	ActionReset            // RST to both ends
	ActionReply            // protocol-native error to the client, then reset
)

// String returns "drop", "reset" or "reply".
func (a DenyAction) String() string {
	switch a {
	case ActionReset:
		return "reset"
	case ActionReply:
		return "reply"
	}
	return "drop"
}

// Reason says why a verdict was reached. The set is closed; String gives the
// stable snake_case name used in events, counters and replay output.
type Reason uint8

// Reasons.
const (
	ReasonAllowed                  Reason = iota // allowed by a rule (or by the l2 list)
	ReasonNoConduit                              // no conduit joins the two endpoints
	ReasonProtocolNotAllowed                     // conduit has no rule for this protocol/transport
	ReasonPortNotAllowed                         // no rule allows this TCP/UDP destination port
	ReasonICMPTypeNotAllowed                     // no icmp rule allows this type
	ReasonFunctionNotAllowed                     // Modbus/DNP3 function not allowed
	ReasonAddressOutOfRange                      // Modbus address range not allowed
	ReasonValueOutOfRange                        // Modbus written value out of range
	ReasonUnitNotAllowed                         // Modbus unit id not allowed
	ReasonLinkAddressNotAllowed                  // DNP3 link source/destination not allowed
	ReasonObjectNotAllowed                       // DNP3 object group/variation not allowed
	ReasonSecurityModeTooLow                     // OPC UA security mode below the minimum
	ReasonSecurityPolicyNotAllowed               // OPC UA security policy not listed
	ReasonServiceNotAllowed                      // OPC UA service not allowed
	ReasonNodeNotAllowed                         // OPC UA write/call node not allowed
	ReasonUnsolicitedNotAllowed                  // DNP3 unsolicited response not allowed
	ReasonResponseWithoutRequest                 // response matches no outstanding request
	ReasonMalformed                              // parser anomaly, see Verdict.Anomaly
	ReasonL2NotAllowed                           // non-IP ethertype not allowed
	ReasonFragment                               // IP fragment
	ReasonAuthRequired                           // DNP3 require_auth: control not authenticated (IEEE 1815-2012 clause 7)
	numReasons
)

var reasonNames = [numReasons]string{
	"allowed", "no_conduit", "protocol_not_allowed", "port_not_allowed",
	"icmp_type_not_allowed", "function_not_allowed", "address_out_of_range",
	"value_out_of_range", "unit_not_allowed", "link_address_not_allowed",
	"object_not_allowed", "security_mode_too_low", "security_policy_not_allowed",
	"service_not_allowed", "node_not_allowed", "unsolicited_not_allowed",
	"response_without_request", "malformed", "l2_not_allowed", "fragment",
	"auth_required",
}

// String returns the snake_case name of the reason.
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons returns every reason, for counters keyed by reason.
func Reasons() []Reason {
	out := make([]Reason, numReasons)
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

// Verdict is the result of an evaluation. It holds no pointers into the
// PDU; the strings point into the Ruleset (no allocation).
type Verdict struct {
	Action     Action
	Reason     Reason
	Anomaly    protocols.Anomaly // Reason == ReasonMalformed: the parser's anomaly
	Mode       Mode
	DenyAction DenyAction      // how to refuse when Action is Deny
	Conduit    int             // index in the policy's conduits; -1 for none
	Rule       int             // index in the conduit's rules; -1 for none
	Inspect    protocols.Proto // EvaluateFlow: the parser to attach, or ProtoNone
	// ConduitName and RuleName identify the decision for people; RuleName
	// is the rule's name: or "<proto>#<n>" (n counts from 1 within the conduit).
	ConduitName string
	RuleName    string
	Generation  uint64 // Ruleset.Generation of the ruleset that decided
}

// ReasonString returns the reason's name, with ":anomaly" for malformed
// PDUs (allocates; for the control plane).
func (v Verdict) ReasonString() string {
	if v.Reason == ReasonMalformed {
		return "malformed:" + v.Anomaly.String()
	}
	return v.Reason.String()
}

// Transport numbers (IANA protocol numbers).
const (
	TransportICMP   uint8 = 1
	TransportTCP    uint8 = 6
	TransportUDP    uint8 = 17
	TransportICMPv6 uint8 = 58
)

// Flow describes one connection or datagram flow, oriented from the
// initiator (client, master) to the responder, as the gateway's flow table
// holds it. It is caller-owned. Evaluate and EvaluateFlow cache the flow's
// conduit match in it, keyed by the Ruleset's generation, so a Flow must not
// be evaluated from two goroutines at once; after a reload the cache is
// recomputed on first use, so flows survive a reload and are judged by the
// new policy. Zero MACs, VLAN 0 and empty port names mean "unknown" (e.g.
// offline replay) and are not checked.
type Flow struct {
	InPort, OutPort  string // bridge port the initiator's packets enter and leave by
	VLAN             uint16
	SrcMAC, DstMAC   [6]byte
	EtherType        uint16 // 0, 0x0800 or 0x86dd for IP; other values are judged by the l2 list
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Transport        uint8 // TransportTCP, ...
	ICMPType         uint8
	Fragment         bool // an IP fragment (offset != 0 or more-fragments)

	cache flowCache
	auth  dnp3Auth // DNP3 Secure Authentication state, see doc.go
}

// Invalidate drops the flow's cached conduit match (benchmarks, tests).
func (f *Flow) Invalidate() { f.cache = flowCache{} }

const maxCached = 8

type flowCache struct {
	gen      uint64
	n        uint8
	overflow bool
	conduits [maxCached]uint16
}

// MaxValues is the most register values a Modbus write carries (FC 16: 123).
const MaxValues = 123

// Modbus is the part of a PDU that Modbus rules judge (Modbus Application
// Protocol v1.1b3 section 6). The table is implied by FC.
type Modbus struct {
	Unit uint8
	FC   uint8  // as on the wire (exception responses keep the 0x80 bit)
	Sub  uint16 // FC 8 sub-function, FC 43 MEI type
	// Addr/Qty: the range read (FC 1-4, 23) or written (FC 5, 6, 15, 16, 22;
	// Qty 1 for single writes). WriteAddr/WriteQty: the write half of FC 23.
	Addr, Qty           uint16
	WriteAddr, WriteQty uint16
	// Values written to holding registers (FC 6, 16, 23), register Addr+i
	// (WriteAddr+i for FC 23) gets Values[i]. NValues 0 means unknown
	// (FC 22 mask write), which fails any values constraint.
	Values  [MaxValues]uint16
	NValues uint8
	// PairedRequest (responses): the transaction matched an outstanding
	// request of this flow with the same unit and function.
	PairedRequest bool
	// Exception (responses): the exception code of an exception response
	// (FC with the 0x80 bit), 0 otherwise. The rate detectors read it.
	Exception uint8
	// Unread (requests): the PDU ends before the fields after its function
	// code (address, quantity, sub-function), so they are unknown: that
	// fails any address range and any sub-function other than "any".
	Unread bool
}

// MaxObjects is the most object headers a DNP3 PDU reports.
const MaxObjects = 32

// DNP3Object is one object header (IEEE 1815-2012 section 4.2.2.7).
type DNP3Object struct {
	Group, Variation, Qualifier uint8
	Start, Stop                 uint32
}

// DNP3 is the part of a PDU that DNP3 rules judge.
type DNP3 struct {
	LinkSrc, LinkDst uint16
	FC               uint8
	Objects          [MaxObjects]DNP3Object
	NObjects         uint8
	// ObjectsTruncated: not every object header was read (more than
	// MaxObjects, or an anomaly stopped the parser's walk); fails any
	// objects list.
	ObjectsTruncated bool
	// WalkIncomplete: the object walk stopped before the end of the
	// fragment (an object it cannot size, a bad qualifier or range), so
	// the objects after it are unknown (ObjectsTruncated is set too).
	// Learn does not draft such a request; ObjectsTruncated alone (more
	// headers than MaxObjects) it drafts as any object.
	WalkIncomplete bool
	// FuncUnread: the fragment ends before its function code, which fails
	// every function.
	FuncUnread    bool
	Unsolicited   bool // UNS bit or FC 130
	PairedRequest bool // responses: matches an outstanding request
	// IIN (responses): the internal indications, IIN1<<8 | IIN2; 0 for
	// requests. The rate detectors read it.
	IIN uint16
}

// MaxNodes is the most NodeIds an OPC UA PDU reports.
const MaxNodes = 16

// OPCUA is the part of a PDU that OPC UA rules judge.
type OPCUA struct {
	MsgType        opcua.MessageType
	SecurityPolicy string             // short name ("Basic256Sha256"), from a constant table
	SecurityMode   opcua.SecurityMode // of the secure channel (OPN: requested); ModeInvalid when not known
	ServiceID      uint32             // request/response type id; 0 when not visible (encrypted)
	// Nodes: the NodeIds written or called, as decoded (Bytes may alias
	// the PDU buffer).
	Nodes          [MaxNodes]opcua.NodeID
	NNodes         uint8
	NodesTruncated bool // more than MaxNodes; fails any nodes list
	PairedRequest  bool // responses: matches an outstanding request
}

// PDU is one application PDU as the parsers decode it, protocol-neutral.
// It is caller-owned and read-only to Evaluate.
type PDU struct {
	Proto protocols.Proto
	Dir   protocols.Dir
	// Anomaly is the parser's anomaly (AnomalyNone when well formed);
	// tolerate lists are matched against it without its name.
	Anomaly protocols.Anomaly
	Modbus  Modbus
	DNP3    DNP3
	OPCUA   OPCUA
	Other   Other // a registered protocol's (Section)
}
