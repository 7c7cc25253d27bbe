package rules

import (
	"sort"
	"strconv"
	"strings"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
)

// Names in policy files. The parser packages are the one source of truth
// for protocol vocabulary: function codes and their names
// (modbus.FunctionName, dnp3.FunctionByName, opcua.ServiceByName),
// anomalies (the Vocabulary each parser registers: protocols.AnomalyByName),
// OPC UA security policies and modes. This file keeps only what the parsers
// do not define: the Modbus table vocabulary (read/write holding, coils,
// discrete, input), FC 8/43 sub-function names, DNP3 object group names,
// ethertype and ICMP names.

// ---- Modbus ----

// Table is a Modbus data table (Modbus Application Protocol v1.1b3 section 4.3).
type Table uint8

// Tables. The zero value is TableNone.
const (
	TableNone Table = iota
	TableCoils
	TableDiscrete
	TableInput
	TableHolding
)

var tableNames = map[string]Table{
	"coils": TableCoils, "coil": TableCoils,
	"discrete": TableDiscrete, "discrete_inputs": TableDiscrete,
	"input": TableInput, "input_registers": TableInput,
	"holding": TableHolding, "holding_registers": TableHolding,
}

// String returns the policy name of the table.
func (t Table) String() string {
	switch t {
	case TableCoils:
		return "coils"
	case TableDiscrete:
		return "discrete"
	case TableInput:
		return "input"
	case TableHolding:
		return "holding"
	}
	return "none"
}

// modbusTable returns the table a public function code accesses (MAP
// section 6), TableNone for the others.
func modbusTable(fc uint8) Table {
	switch fc {
	case modbus.FuncReadCoils, modbus.FuncWriteSingleCoil, modbus.FuncWriteMultipleCoils:
		return TableCoils
	case modbus.FuncReadDiscreteInputs:
		return TableDiscrete
	case modbus.FuncReadInputRegisters:
		return TableInput
	case modbus.FuncReadHoldingRegisters, modbus.FuncWriteSingleRegister, modbus.FuncWriteMultipleRegisters,
		modbus.FuncMaskWriteRegister, modbus.FuncReadWriteMultipleRegisters:
		return TableHolding
	}
	return TableNone
}

// modbusSubNames are named function/sub-code pairs: FC 8 diagnostics
// sub-functions (MAP section 6.8.1) and FC 43 MEI types (section 6.19).
var modbusSubNames = []struct {
	name string
	fc   uint8
	sub  uint16
}{
	{"return_query_data", modbus.FuncDiagnostics, modbus.DiagReturnQueryData},
	{"restart_communications", modbus.FuncDiagnostics, modbus.DiagRestartComm},
	{"return_diagnostic_register", modbus.FuncDiagnostics, modbus.DiagReturnRegister},
	{"force_listen_only_mode", modbus.FuncDiagnostics, modbus.DiagForceListenOnly},
	{"clear_counters", modbus.FuncDiagnostics, modbus.DiagClearCounters},
	{"canopen_general_reference", modbus.FuncEncapsulatedInterface, uint16(modbus.MEICANopen)},
	{"read_device_identification", modbus.FuncEncapsulatedInterface, uint16(modbus.MEIReadDeviceID)},
}

// modbusFuncByName returns the public function code whose
// modbus.FunctionName is s.
func modbusFuncByName(s string) (uint8, bool) {
	for fc := uint8(1); fc < 128; fc++ {
		if modbus.IsPublic(fc) && modbus.FunctionName(fc) == s {
			return fc, true
		}
	}
	return 0, false
}

// modbusFuncNames lists every name `function:` accepts or points away from.
func modbusFuncNames() []string {
	var out []string
	for fc := uint8(1); fc < 128; fc++ {
		if modbus.IsPublic(fc) {
			out = append(out, modbus.FunctionName(fc))
		}
	}
	for _, f := range modbusSubNames {
		out = append(out, f.name)
	}
	out = append(out, modbus.FunctionName(modbus.FuncUMAS))
	sort.Strings(out)
	return out
}

// modbusAnomalies lists the Modbus parser's anomaly names, in code order.
func modbusAnomalies() []string { return protocols.AnomalyNames(protocols.ProtoModbus) }

// ---- DNP3 ----

// dnp3FuncByName parses a function name (dnp3.FunctionCode.String names,
// IEEE 1815-2012 Table 4-1) or a code 0-255.
func dnp3FuncByName(s string) (uint8, bool) {
	if fc, ok := dnp3.FunctionByName(s); ok {
		return uint8(fc), true
	}
	x, err := strconv.Atoi(s)
	if err != nil || x < 0 || x > 255 {
		return 0, false
	}
	return uint8(x), true
}

// dnp3OldNames are spellings earlier versions of this package accepted;
// they now point at the parser's (IEEE 1815-2012 Table 4-1) names in
// errors instead of being accepted, so there is one vocabulary.
var dnp3OldNames = map[string]string{
	"immediate_freeze":       "immed_freeze",
	"immediate_freeze_nr":    "immed_freeze_nr",
	"initialize_application": "initialize_appl",
	"start_application":      "start_appl",
	"stop_application":       "stop_appl",
	"save_configuration":     "save_config",
}

func dnp3FuncNames() []string {
	var out []string
	for i := 0; i < 256; i++ {
		if fc := dnp3.FunctionCode(i); fc.Known() {
			out = append(out, fc.String())
		}
	}
	return out
}

// dnp3Critical reports whether a request function changes the outstation
// and so is subject to require_auth (IEEE 1815-2012 clause 7: the
// functions an outstation must treat as critical). Reading, confirming,
// delay measurement and the authentication functions themselves are not.
func dnp3Critical(fc uint8) bool {
	switch dnp3.FunctionCode(fc) {
	case dnp3.FuncConfirm, dnp3.FuncRead, dnp3.FuncDelayMeasure,
		dnp3.FuncAuthenticateReq, dnp3.FuncAuthReqNoAck:
		return false
	}
	return !dnp3.FunctionCode(fc).IsResponse()
}

// Secure Authentication function codes and g120 variations (IEEE 1815-2012
// clause 7, Annex A.45).
const (
	fcAuthReq      = uint8(dnp3.FuncAuthenticateReq)
	fcAuthReqNoAck = uint8(dnp3.FuncAuthReqNoAck)
	fcAuthResp     = uint8(dnp3.FuncAuthenticateResp)
	fcResponse     = uint8(dnp3.FuncResponse)
	fcUnsolicited  = uint8(dnp3.FuncUnsolicitedResp)

	gAuth             = 120
	vAuthChallenge    = 1 // outstation's challenge (FC 131)
	vAuthReply        = 2 // master's reply (FC 32)
	vAuthAggressive   = 3 // aggressive mode request, first object of a critical request
	vAuthKeyStatusReq = 4 // session key status request (FC 32)
	vAuthKeyStatus    = 5 // session key status, carries challenge data (FC 131)
	vAuthKeyChange    = 6 // session key change, answers a key status (FC 32)
	vAuthError        = 7 // authentication error (FC 131 or FC 33)
	vAuthMAC          = 9 // MAC, last object of an aggressive mode request
)

// dnp3Anomalies lists the DNP3 parser's anomaly names, in code order.
func dnp3Anomalies() []string { return protocols.AnomalyNames(protocols.ProtoDNP3) }

// dnp3Groups names object groups (IEEE 1815-2012 Annex A); the parser
// sizes objects but does not name groups.
var dnp3Groups = []struct {
	name  string
	group uint8
}{
	{"device_attributes", 0}, {"binary_input", 1}, {"binary_input_event", 2},
	{"double_bit_input", 3}, {"double_bit_input_event", 4}, {"binary_output", 10},
	{"binary_output_event", 11}, {"binary_command", 12}, {"binary_output_command_event", 13},
	{"counter", 20}, {"frozen_counter", 21}, {"counter_event", 22},
	{"frozen_counter_event", 23}, {"analog_input", 30}, {"frozen_analog_input", 31},
	{"analog_input_event", 32}, {"frozen_analog_input_event", 33},
	{"analog_input_deadband", 34}, {"analog_output_status", 40}, {"analog_output", 41},
	{"analog_output_event", 42}, {"analog_output_command_event", 43},
	{"time_and_date", 50}, {"common_time_of_occurrence", 51}, {"time_delay", 52},
	{"class_data", 60}, {"file_control", 70}, {"internal_indications", 80},
	{"data_set", 87}, {"octet_string", 110}, {"octet_string_event", 111},
	{"virtual_terminal_output", 112}, {"virtual_terminal_event", 113},
	{"authentication", 120}, {"security_statistic", 121}, {"security_statistic_event", 122},
}

// dnp3KnownGroup reports whether g is a group defined by IEEE 1815-2012.
func dnp3KnownGroup(g int) bool {
	for _, e := range dnp3Groups {
		if int(e.group) == g {
			return true
		}
	}
	switch g {
	case 81, 82, 83, 85, 86, 88, 90, 91, 100, 101, 102:
		return true
	}
	return false
}

// ---- OPC UA ----

// opcuaServiceByName parses a service as policies write it (see
// opcua.ServiceByName; also "ReadRequest" and "i=631") and returns the
// numeric type id of its request.
func opcuaServiceByName(s string) (uint32, bool) {
	s = strings.TrimPrefix(s, "i=")
	if len(s) > len("request") && strings.EqualFold(s[len(s)-len("request"):], "request") {
		s = strings.TrimSuffix(s[:len(s)-len("request")], "_")
	}
	sv, ok := opcua.ServiceByName(s)
	if !ok || sv.RequestTypeID() == 0 {
		return 0, false
	}
	return sv.RequestTypeID(), true
}

// opcuaServices returns every service with a request, in the parser's order.
func opcuaServices() []opcua.Service {
	var out []opcua.Service
	for i := 1; i < 256; i++ {
		sv := opcua.Service(i)
		if sv.String() == "" {
			break
		}
		if sv.RequestTypeID() != 0 {
			out = append(out, sv)
		}
	}
	return out
}

func opcuaServiceNames() []string {
	var out []string
	for _, sv := range opcuaServices() {
		out = append(out, sv.String())
	}
	return out
}

// Service type ids with node lists (OPC 10000-4 sections 5.10.4, 5.11.2).
var (
	opcuaWrite = opcua.ServiceWrite.RequestTypeID()
	opcuaCall  = opcua.ServiceCall.RequestTypeID()
)

// opcuaImplied are the request type ids of the session-management services
// implied by any opcua rule (DESIGN.md; opcua.Service.SessionManagement).
var opcuaImplied = func() []uint32 {
	var out []uint32
	for _, sv := range opcuaServices() {
		if sv.SessionManagement() {
			out = append(out, sv.RequestTypeID())
		}
	}
	return out
}()

// opcuaPolicyNames are the security policy short names (OPC 10000-7).
func opcuaPolicyNames() []string {
	var out []string
	for i := 1; i < 256; i++ {
		n := opcua.SecurityPolicy(i).String()
		if n == "" {
			break
		}
		out = append(out, n)
	}
	return out
}

// opcuaAnomalies lists the OPC UA parser's anomaly names, in code order.
func opcuaAnomalies() []string { return protocols.AnomalyNames(protocols.ProtoOPCUA) }

// ---- other ----

// L2LLC is the l2 allow entry for IEEE 802.3 frames whose type/length
// field is a length (below 0x0600) and whose payload starts with an IEEE
// 802.2 LLC header: spanning tree BPDUs, CDP, NetBIOS over LLC. They have
// no ethertype to list, so one name allows them all.
const L2LLC = "llc"

// EtherTypeName returns the l2 allow entry that allows frames of ethertype
// et: its name in l2Names, L2LLC below 0x0600, else 0xNNNN.
func EtherTypeName(et uint16) string {
	if et < 0x0600 {
		return L2LLC
	}
	best := ""
	for n, v := range l2Names {
		if v == et && (best == "" || n < best) {
			best = n
		}
	}
	if best != "" {
		return best
	}
	return "0x" + strconv.FormatUint(uint64(et)|0x10000, 16)[1:]
}

// l2Names maps ethertype names to values (IEEE 802 numbers).
var l2Names = map[string]uint16{
	"arp": 0x0806, "lldp": 0x88cc, "rarp": 0x8035, "vlan": 0x8100,
	"profinet": 0x8892, "ethercat": 0x88a4, "goose": 0x88b8, "gse": 0x88b9,
	"sv": 0x88ba, "ptp": 0x88f7, "mrp": 0x88e3, "lacp": 0x8809, "hsr": 0x892f,
	"prp": 0x88fb, "powerlink": 0x88ab,
}

// icmpNames maps ICMP type names (RFC 792) to numbers.
var icmpNames = map[string]int{
	"echo_reply": 0, "destination_unreachable": 3, "echo_request": 8,
	"time_exceeded": 11, "parameter_problem": 12, "timestamp": 13, "timestamp_reply": 14,
}
