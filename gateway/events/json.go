package events

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
)

// ErrBadSeverity is returned by ParseSeverity for an unknown name.
var ErrBadSeverity = errors.New("events: unknown severity")

// ParseSeverity returns the Severity named by s (the RFC 5424 names
// that String returns).
func ParseSeverity(s string) (Severity, error) {
	for i := SevEmergency; i <= SevDebug; i++ {
		if i.String() == s {
			return i, nil
		}
	}
	return 0, fmt.Errorf("%w %q", ErrBadSeverity, s)
}

// jsonEvent is the one record schema of otgw events (see the package
// documentation and schema.json): Suricata EVE names where EVE has one,
// snake case, empty values omitted. The legacy* fields read records that
// earlier versions spooled (time, type, src/dst as "ip:port", fields);
// they are never written.
type jsonEvent struct {
	Timestamp   string           `json:"timestamp,omitempty"`
	FlowID      uint64           `json:"flow_id,omitempty"`
	CommunityID string           `json:"community_id,omitempty"`
	EventType   Type             `json:"event_type,omitempty"`
	SrcIP       string           `json:"src_ip,omitempty"`
	SrcPort     uint16           `json:"src_port,omitempty"`
	DestIP      string           `json:"dest_ip,omitempty"`
	DestPort    uint16           `json:"dest_port,omitempty"`
	Proto       string           `json:"proto,omitempty"`
	ICMPType    *uint8           `json:"icmp_type,omitempty"`
	ICMPCode    *uint8           `json:"icmp_code,omitempty"`
	AppProto    string           `json:"app_proto,omitempty"`
	Ether       *jsonEther       `json:"ether,omitempty"`
	Verdict     string           `json:"verdict,omitempty"`
	Action      string           `json:"action,omitempty"`
	Reason      string           `json:"reason,omitempty"`
	Conduit     string           `json:"conduit,omitempty"`
	Rule        string           `json:"rule,omitempty"`
	Mode        string           `json:"mode,omitempty"`
	SrcZone     string           `json:"src_zone,omitempty"`
	DestZone    string           `json:"dest_zone,omitempty"`
	Severity    string           `json:"severity"`
	Message     string           `json:"message,omitempty"`
	Seq         uint64           `json:"seq"`
	BootID      string           `json:"boot_id,omitempty"`
	TimeQuality *jsonTimeQuality `json:"time_quality,omitempty"`
	PcapFile    string           `json:"pcap_filename,omitempty"`
	Frame       int              `json:"pcap_cnt,omitempty"`
	AfterReset  bool             `json:"after_reset,omitempty"`
	Count       int              `json:"count,omitempty"`
	Modbus      map[string]any   `json:"modbus,omitempty"`
	DNP3        map[string]any   `json:"dnp3,omitempty"`
	OPCUA       map[string]any   `json:"opcua,omitempty"`
	Fields      map[string]any   `json:"fields,omitempty"`
	Step        string           `json:"step,omitempty"`
	Version     string           `json:"version,omitempty"`
	File        string           `json:"file,omitempty"`
	Line        int              `json:"line,omitempty"`
	Port        string           `json:"port,omitempty"`

	LegacyTime     string `json:"time,omitempty"`
	LegacyType     Type   `json:"type,omitempty"`
	LegacySrc      string `json:"src,omitempty"`
	LegacyDst      string `json:"dst,omitempty"`
	LegacyFromZone string `json:"from_zone,omitempty"`
	LegacyToZone   string `json:"to_zone,omitempty"`
	LegacyFrame    int    `json:"frame,omitempty"`
}

type jsonEther struct {
	SrcMAC    string `json:"src_mac,omitempty"`
	DestMAC   string `json:"dest_mac,omitempty"`
	EtherType uint16 `json:"ether_type,omitempty"`
}

type jsonTimeQuality struct {
	TZKnown        bool `json:"tz_known"`
	IsSynced       bool `json:"is_synced"`
	SyncAccuracyUS int  `json:"sync_accuracy_us,omitempty"`
}

// JSONTimeLayout is the layout of "timestamp": RFC 3339 in UTC with
// exactly six fractional digits (microseconds, as RFC 5424 section 6.2.3
// allows at most).
const JSONTimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// protoName is the EVE "proto" of an IANA protocol number.
func protoName(n uint8) string {
	switch n {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoICMP:
		return "ICMP"
	case ProtoICMPv6:
		return "IPv6-ICMP"
	case ProtoSCTP:
		return "SCTP"
	case 0:
		return ""
	}
	return strconv.Itoa(int(n))
}

func parseProtoName(s string) (uint8, error) {
	for _, n := range []uint8{ProtoTCP, ProtoUDP, ProtoICMP, ProtoICMPv6, ProtoSCTP} {
		if protoName(n) == s {
			return n, nil
		}
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("events: decode json: proto %q", s)
	}
	return uint8(n), nil
}

// transportOf is the transport of an Event.Proto value that names one
// ("tcp", "udp", "icmp", "l2", "ip"); "" for application protocols.
// uninspectedApp reports whether an app_proto names a protocol the
// gateway recognises but does not inspect (Net.App).
func uninspectedApp(name string) bool {
	switch name {
	case "s7comm", "enip", "iec104":
		return true
	}
	return false
}

func transportOf(proto string) bool {
	switch proto {
	case "tcp", "udp", "icmp", "icmpv6", "ip", "l2":
		return true
	}
	return false
}

// ipProto is e's transport protocol number: Net.IPProto, or what Proto
// implies where it is unambiguous (modbus and opcua run over TCP here).
func (e *Event) ipProto() uint8 {
	if e.Net.IPProto != 0 {
		return e.Net.IPProto
	}
	switch e.Proto {
	case "tcp", "modbus", "opcua":
		return ProtoTCP
	case "udp":
		return ProtoUDP
	case "icmp":
		if e.Src.Addr().Is6() && !e.Src.Addr().Is4In6() {
			return ProtoICMPv6
		}
		return ProtoICMP
	}
	return 0
}

// Tuple returns the flow tuple of e (Src, Dst, transport; ICMP type and
// code in the port fields), and false when e has no IP endpoints.
func (e *Event) Tuple() (FlowTuple, bool) {
	if !e.Src.IsValid() || !e.Dst.IsValid() {
		return FlowTuple{}, false
	}
	t := FlowTuple{Src: e.Src.Addr(), Dst: e.Dst.Addr(), Proto: e.ipProto(), SrcPort: e.Src.Port(), DstPort: e.Dst.Port()}
	if t.Proto == ProtoICMP || t.Proto == ProtoICMPv6 {
		t.SrcPort, t.DstPort = uint16(e.Net.ICMPType), uint16(e.Net.ICMPCode)
	}
	return t, t.Proto != 0
}

// AppendJSON appends e as one JSON object without a trailing newline, in
// the record schema (keys in a fixed order, protocol fields sorted by key,
// with names added beside the numbers). It allocates; it is meant for the
// exporter side, not the datapath.
func (e *Event) AppendJSON(dst []byte) []byte {
	j := jsonEvent{
		EventType: e.Type, Verdict: e.Verdict, Action: e.Action, Reason: e.Reason, Conduit: e.Conduit,
		Rule: e.Rule, Mode: e.Mode, SrcZone: e.FromZone, DestZone: e.ToZone, Severity: e.Severity.String(),
		Message: e.Message, Seq: e.Seq, BootID: e.BootID, PcapFile: e.PcapFile, Frame: e.Frame, AfterReset: e.AfterReset,
		Count: e.Count, Step: e.Step, Version: e.Version, File: e.File, Line: e.Line, Port: e.Port,
	}
	if !e.Time.IsZero() {
		j.Timestamp = e.Time.UTC().Format(JSONTimeLayout)
	}
	if e.TimeQuality != (TimeQuality{}) {
		j.TimeQuality = &jsonTimeQuality{e.TimeQuality.TZKnown, e.TimeQuality.IsSynced, e.TimeQuality.SyncAccuracy}
	}
	if e.Src.IsValid() {
		j.SrcIP, j.SrcPort = e.Src.Addr().String(), e.Src.Port()
	}
	if e.Dst.IsValid() {
		j.DestIP, j.DestPort = e.Dst.Addr().String(), e.Dst.Port()
	}
	proto := e.ipProto()
	if e.Src.IsValid() || e.Dst.IsValid() {
		j.Proto = protoName(proto)
	}
	if j.Proto != "" && (proto == ProtoICMP || proto == ProtoICMPv6) {
		it, ic := e.Net.ICMPType, e.Net.ICMPCode
		j.ICMPType, j.ICMPCode = &it, &ic
	}
	if t, ok := e.Tuple(); ok {
		j.FlowID, j.CommunityID = flowIDs(t)
	}
	if !transportOf(e.Proto) {
		j.AppProto = e.Proto
	} else if e.Proto == "tcp" || e.Proto == "udp" {
		j.AppProto = e.Net.App
	}
	if e.Net.HasMAC || e.Net.EtherType != 0 {
		j.Ether = &jsonEther{EtherType: e.Net.EtherType}
		if e.Net.HasMAC {
			j.Ether.SrcMAC = net.HardwareAddr(e.Net.SrcMAC[:]).String()
			j.Ether.DestMAC = net.HardwareAddr(e.Net.DstMAC[:]).String()
		}
	}
	if len(e.Fields) > 0 {
		switch e.Proto {
		case "modbus":
			j.Modbus = protocolObject(e.Proto, e.Fields)
		case "dnp3":
			j.DNP3 = protocolObject(e.Proto, e.Fields)
		case "opcua":
			j.OPCUA = protocolObject(e.Proto, e.Fields)
		default:
			j.Fields = e.Fields
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&j); err != nil {
		// Only the protocol fields can fail (a value JSON cannot
		// represent): keep the event and say what was lost rather than
		// dropping it.
		j.Modbus, j.DNP3, j.OPCUA = nil, nil, nil
		j.Fields = map[string]any{"fields_error": err.Error()}
		buf.Reset()
		_ = enc.Encode(&j)
	}
	return append(dst, bytes.TrimRight(buf.Bytes(), "\n")...)
}

// ProtocolObject returns the protocol object a record of an event with
// this application protocol ("modbus", "dnp3", "opcua") and these fields
// carries: a new map with the specification's names added beside the
// numbers, as AppendJSON writes it. gateway/txlog names a response's
// fields with it.
func ProtocolObject(proto string, fields map[string]any) map[string]any {
	return protocolObject(proto, fields)
}

// protocolObject is the protocol object of the record: the dissect
// fields, with the specification's names beside the numbers (Modbus and
// DNP3 "function" beside "fc", OPC UA "service" name with "service_id",
// DNP3 objects as "g12v1").
func protocolObject(proto string, f map[string]any) map[string]any {
	m := make(map[string]any, len(f)+1)
	for k, v := range f {
		m[k] = v
	}
	fc, hasFC := intValue(f["fc"])
	switch proto {
	case "modbus":
		if hasFC && fc >= 0 && fc <= 255 {
			m["function"] = modbus.FunctionName(uint8(fc))
		}
	case "dnp3":
		if hasFC && fc >= 0 && fc <= 255 {
			m["function"] = dnp3.FunctionCode(fc).String()
		}
		if objs, ok := objectNames(f["objects"]); ok {
			m["objects"] = objs
		}
	case "opcua":
		if id, ok := intValue(f["service"]); ok && id >= 0 && id <= math.MaxUint32 {
			m["service_id"] = id
			delete(m, "service")
			if s, resp, ok := opcua.ServiceByTypeID(uint32(id)); ok && s.String() != "" {
				name := s.String()
				if resp {
					name += "_response"
				}
				m["service"] = name
			}
		}
	}
	return m
}

// intValue reads an integer Fields value (an int from the engine, a
// json.Number from a decoded record).
func intValue(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case json.Number:
		n, err := x.Int64()
		return n, err == nil
	}
	return 0, false
}

// objectNames renders a DNP3 object list as "gGvV" names; the list may
// hold dnp3.Object values (from the engine), {"group","variation"} maps or
// names already (from a decoded record).
func objectNames(v any) ([]string, bool) {
	out := []string{}
	name := func(g, vv int64) string { return "g" + strconv.FormatInt(g, 10) + "v" + strconv.FormatInt(vv, 10) }
	switch x := v.(type) {
	case []dnp3.Object:
		for _, o := range x {
			out = append(out, name(int64(o.Group), int64(o.Variation)))
		}
		return out, true
	case []any:
		for _, o := range x {
			switch y := o.(type) {
			case string:
				out = append(out, y)
			case map[string]any:
				g, ok1 := intValue(y["group"])
				vv, ok2 := intValue(y["variation"])
				if !ok1 || !ok2 {
					return nil, false
				}
				out = append(out, name(g, vv))
			default:
				return nil, false
			}
		}
		return out, true
	}
	return nil, false
}

// UnmarshalJSONEvent parses one object written by AppendJSON (or by an
// earlier version, see jsonEvent) into e. Numbers in protocol fields come
// back as json.Number so that they print exactly as they were written. On
// error e is left zero. Input is untrusted (a spool record or a JSON-lines
// file): it never panics, and data after the object is an error.
func UnmarshalJSONEvent(b []byte, e *Event) error {
	*e = Event{}
	ev, err := unmarshalJSONEvent(b)
	if err != nil {
		return err
	}
	*e = ev
	return nil
}

func unmarshalJSONEvent(b []byte) (Event, error) {
	var j struct {
		jsonEvent
		LegacyFields map[string]any `json:"fields,omitempty"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&j); err != nil {
		return Event{}, fmt.Errorf("events: decode json: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Event{}, fmt.Errorf("events: decode json: data after the object")
	}
	sev, err := ParseSeverity(j.Severity)
	if err != nil {
		return Event{}, err
	}
	e := Event{
		Seq: j.Seq, BootID: j.BootID, Severity: sev, Type: first(j.EventType, j.LegacyType), Message: j.Message,
		Mode: j.Mode, Verdict: j.Verdict, Action: j.Action, Conduit: j.Conduit, Rule: j.Rule, Reason: j.Reason,
		FromZone: first(j.SrcZone, j.LegacyFromZone), ToZone: first(j.DestZone, j.LegacyToZone),
		Proto: j.AppProto, PcapFile: j.PcapFile, Frame: max(j.Frame, j.LegacyFrame), AfterReset: j.AfterReset, Count: j.Count,
		Step: j.Step, Version: j.Version, File: j.File, Line: j.Line, Port: j.Port,
	}
	switch {
	case j.Modbus != nil:
		e.Fields = j.Modbus
	case j.DNP3 != nil:
		e.Fields = j.DNP3
	case j.OPCUA != nil:
		e.Fields = j.OPCUA
	default:
		e.Fields = j.LegacyFields
	}
	if ts := first(j.Timestamp, j.LegacyTime); ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return Event{}, fmt.Errorf("events: decode json: timestamp: %w", err)
		}
		if y := t.UTC().Year(); y < 0 || y > 9999 {
			// RFC 3339 (and so AppendJSON's output) has four-digit years.
			return Event{}, fmt.Errorf("events: decode json: timestamp %q out of range", ts)
		}
		e.Time = t
	}
	if j.TimeQuality != nil {
		e.TimeQuality = TimeQuality{j.TimeQuality.TZKnown, j.TimeQuality.IsSynced, j.TimeQuality.SyncAccuracyUS}
	}
	if j.SrcIP != "" {
		a, err := netip.ParseAddr(j.SrcIP)
		if err != nil {
			return Event{}, fmt.Errorf("events: decode json: src_ip: %w", err)
		}
		e.Src = netip.AddrPortFrom(a, j.SrcPort)
	} else if j.LegacySrc != "" {
		if e.Src, err = netip.ParseAddrPort(j.LegacySrc); err != nil {
			return Event{}, fmt.Errorf("events: decode json: src: %w", err)
		}
	}
	if j.DestIP != "" {
		a, err := netip.ParseAddr(j.DestIP)
		if err != nil {
			return Event{}, fmt.Errorf("events: decode json: dest_ip: %w", err)
		}
		e.Dst = netip.AddrPortFrom(a, j.DestPort)
	} else if j.LegacyDst != "" {
		if e.Dst, err = netip.ParseAddrPort(j.LegacyDst); err != nil {
			return Event{}, fmt.Errorf("events: decode json: dst: %w", err)
		}
	}
	switch {
	case j.LegacyType != "" && j.EventType == "":
		// An earlier version's record: proto was the application
		// protocol, and there was no transport.
		e.Proto = j.Proto
	case j.Proto != "":
		if e.Net.IPProto, err = parseProtoName(j.Proto); err != nil {
			return Event{}, err
		}
	}
	if j.ICMPType != nil {
		e.Net.ICMPType = *j.ICMPType
	}
	if j.ICMPCode != nil {
		e.Net.ICMPCode = *j.ICMPCode
	}
	if j.Ether != nil {
		e.Net.EtherType = j.Ether.EtherType
		if j.Ether.SrcMAC != "" || j.Ether.DestMAC != "" {
			s, err1 := net.ParseMAC(j.Ether.SrcMAC)
			d, err2 := net.ParseMAC(j.Ether.DestMAC)
			if err1 != nil || err2 != nil || len(s) != 6 || len(d) != 6 {
				return Event{}, fmt.Errorf("events: decode json: ether: bad MAC address")
			}
			e.Net.HasMAC = true
			copy(e.Net.SrcMAC[:], s)
			copy(e.Net.DstMAC[:], d)
		}
	}
	if uninspectedApp(e.Proto) && (e.Net.IPProto == ProtoTCP || e.Net.IPProto == ProtoUDP) {
		// A protocol recognised on a flow a plain tcp:/udp: rule judged.
		e.Net.App, e.Proto = e.Proto, ""
	}
	if e.Proto == "" {
		// No application protocol: the transport, or the L2 frame.
		switch {
		case e.Net.IPProto == ProtoTCP:
			e.Proto = "tcp"
		case e.Net.IPProto == ProtoUDP:
			e.Proto = "udp"
		case e.Net.IPProto == ProtoICMP || e.Net.IPProto == ProtoICMPv6:
			e.Proto = "icmp"
		case e.Net.IPProto != 0:
			e.Proto = "ip"
		case j.Ether != nil && !e.Src.IsValid():
			e.Proto = "l2"
		}
	}
	return e, nil
}

func first[T ~string](a, b T) T {
	if a != "" {
		return a
	}
	return b
}

// Schema is the JSON Schema (draft 2020-12) of the record AppendJSON
// writes: gateway/events/schema.json, for editors and SIEM pipelines.
//
//go:embed schema.json
var Schema []byte
