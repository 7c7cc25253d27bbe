package events

import (
	"net/netip"
	"time"
)

// Type classifies an event. Values are stable: they appear in syslog and JSON.
type Type string

// Event types.
const (
	TypeDeny          Type = "deny"
	TypeAlert         Type = "alert" // monitor mode: would have been denied
	TypePolicyReload  Type = "policy_reload"
	TypePolicyError   Type = "policy_error"
	TypeLink          Type = "link"
	TypeStart         Type = "start"
	TypeStop          Type = "stop"
	TypeUpdate        Type = "update" // firmware update step, see Event.Step
	TypeExporter      Type = "exporter"
	TypeDropped       Type = "dropped" // events lost to a full spool or rate limit
	TypeAggregated    Type = "aggregated"
	TypeWatchdog      Type = "watchdog"
	TypeBypass        Type = "bypass"
	TypeCrash         Type = "crash" // a datapath worker panicked or stalled; see Event.Message
	TypeFlowTableFull Type = "flow_table_full"
	// TypeGap reports a discontinuity in the event stream: the previous
	// run ended without a clean stop, so events it produced after the last
	// one delivered or spooled may be lost (Fields name the previous boot
	// and the missing sequence range where known).
	TypeGap Type = "gap"
	// TypeTransaction is one allowed request/response pair of a conduit
	// with log: transactions (severity info): the request's protocol
	// object with the response's in its "response" member.
	TypeTransaction Type = "transaction"
)

// Severity follows RFC 5424 section 6.2.1 numbering (0 emergency .. 7 debug).
type Severity uint8

// Severities.
const (
	SevEmergency Severity = iota
	SevAlert
	SevCritical
	SevError
	SevWarning
	SevNotice
	SevInfo
	SevDebug
)

// String returns the lower-case RFC 5424 name.
func (s Severity) String() string {
	names := [...]string{"emergency", "alert", "critical", "error", "warning", "notice", "info", "debug"}
	if int(s) < len(names) {
		return names[s]
	}
	return "unknown"
}

// TimeQuality tells the receiver how far to trust Event.Time (RFC 5424
// section 7.1 timeQuality).
type TimeQuality struct {
	TZKnown      bool
	IsSynced     bool
	SyncAccuracy int // microseconds; 0 = unknown
}

// Event is one security or operational event. The zero value is not a valid
// event: Seq, BootID, Time and Type are set by the pipeline or producer.
type Event struct {
	Seq         uint64 // per boot, contiguous, assigned by the Pipeline
	BootID      string // random per process start, assigned by the Pipeline
	Time        time.Time
	TimeQuality TimeQuality
	Severity    Severity
	Type        Type
	Message     string // one line a person reads

	// Verdict context (deny/alert).
	Mode     string // "enforce" or "monitor"
	Verdict  string // "deny", "alert", "allow"
	Action   string // "drop", "reset", "reply" (deny only)
	Conduit  string
	Rule     string
	Reason   string
	FromZone string
	ToZone   string
	Src      netip.AddrPort
	Dst      netip.AddrPort
	Proto    string // "modbus", "dnp3", "opcua", "tcp", "udp", "icmp", "l2"
	Frame    int    // replay only: 1-based frame number in the capture
	Count    int    // aggregated repeats (>= 1 when aggregated)

	// Net is the packet context of a verdict event (transport protocol,
	// ICMP type/code, MAC addresses and ethertype), from the frame that
	// caused it. It builds proto, flow_id and community_id in JSON.
	Net Net
	// PcapFile is the capture (base name) of a replayed frame; Frame its
	// 1-based number in that file.
	PcapFile string
	// AfterReset (replay only) marks a deny the enforcing gateway never
	// judged because an earlier deny had already reset or blocked the
	// connection: replay's what-if evaluation judged it, with the reason
	// the policy gives. Such a record has no Action (none was taken).
	AfterReset bool

	// Protocol fields, as in `otgw dissect` (e.g. "fc": 6, "unit": 1).
	Fields map[string]any

	// Update / policy / link context.
	Step    string // update: started, rejected, installed, committed, rolled_back
	Version string
	File    string // policy file
	Line    int
	Port    string // link events
}

// Net is the packet context of an event below the application layer.
// The zero value means "not known" (events with no packet behind them).
type Net struct {
	// IPProto is the IANA number of the transport protocol (ProtoTCP,
	// ProtoUDP, ProtoICMP, ProtoICMPv6, ...); 0 when not IP or unknown.
	IPProto uint8
	// ICMPType and ICMPCode of an ICMP or ICMPv6 packet.
	ICMPType, ICMPCode uint8
	// HasMAC: SrcMAC and DstMAC hold the Ethernet addresses.
	HasMAC         bool
	SrcMAC, DstMAC [6]byte
	// EtherType is the innermost ethertype (after VLAN tags); 0 unknown.
	EtherType uint16
	// App names the industrial protocol the gateway recognised on a
	// TCP or UDP flow it does not inspect (protocols.Recognise: "s7comm",
	// "enip", "iec104"); "" for none. It is the event's app_proto where
	// Proto is a transport (a plain tcp:/udp: rule judged the flow).
	App string
}

// Sink receives events. Emit must not block the caller for long and must be
// safe for concurrent use; it takes ownership of e.
type Sink interface {
	Emit(e *Event)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(e *Event)

// Emit calls f(e).
func (f SinkFunc) Emit(e *Event) { f(e) }

// Discard is a Sink that drops every event.
var Discard Sink = SinkFunc(func(*Event) {})
