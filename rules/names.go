package rules

// Name tables for policy files. They live in this one file so that switching
// to the parser packages' exported lookups (protocols/modbus, protocols/dnp3,
// protocols/opcua) touches nothing else.

// modbusFunc is a Modbus function code that a policy may name in `function:`
// (Modbus Application Protocol v1.1b3 section 6). Table accesses (FC 1-6, 15,
// 16, 22, 23) are not listed: they are allowed with read:/write: and an
// address range, never as a bare function.
type modbusFunc struct {
	name   string
	code   uint8
	hasSub bool // FC 8 sub-function, FC 43 MEI type
}

var modbusFuncs = []modbusFunc{
	{"read_exception_status", 7, false},
	{"diagnostics", 8, true},
	{"get_comm_event_counter", 11, false},
	{"get_comm_event_log", 12, false},
	{"report_server_id", 17, false},
	{"read_file_record", 20, false},
	{"write_file_record", 21, false},
	{"read_fifo_queue", 24, false},
	{"encapsulated_interface_transport", 43, true},
}

// modbusSubNames are named code/sub-code pairs.
var modbusSubNames = []struct {
	name      string
	code, sub uint16
}{
	{"return_query_data", 8, 0},
	{"restart_communications", 8, 1},
	{"return_diagnostic_register", 8, 2},
	{"force_listen_only_mode", 8, 4},
	{"clear_counters", 8, 10},
	{"canopen_general_reference", 43, 13},
	{"read_device_identification", 43, 14},
}

// modbusTableFuncs are the function codes that access a data table; naming
// them in `function:` is an error that points at read:/write:.
var modbusTableFuncs = map[uint8]string{
	1: "read_coils", 2: "read_discrete_inputs", 3: "read_holding_registers",
	4: "read_input_registers", 5: "write_single_coil", 6: "write_single_register",
	15: "write_multiple_coils", 16: "write_multiple_registers",
	22: "mask_write_register", 23: "read_write_multiple_registers",
}

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

// dnp3Funcs maps IEEE 1815-2012 Table 4-1 function codes to policy names.
var dnp3Funcs = []struct {
	name string
	code uint8
}{
	{"confirm", 0}, {"read", 1}, {"write", 2}, {"select", 3}, {"operate", 4},
	{"direct_operate", 5}, {"direct_operate_nr", 6}, {"immediate_freeze", 7},
	{"immediate_freeze_nr", 8}, {"freeze_clear", 9}, {"freeze_clear_nr", 10},
	{"freeze_at_time", 11}, {"freeze_at_time_nr", 12}, {"cold_restart", 13},
	{"warm_restart", 14}, {"initialize_data", 15}, {"initialize_application", 16},
	{"start_application", 17}, {"stop_application", 18}, {"save_configuration", 19},
	{"enable_unsolicited", 20}, {"disable_unsolicited", 21}, {"assign_class", 22},
	{"delay_measure", 23}, {"record_current_time", 24}, {"open_file", 25},
	{"close_file", 26}, {"delete_file", 27}, {"get_file_info", 28},
	{"authenticate_file", 29}, {"abort_file", 30}, {"activate_config", 31},
	// Secure Authentication (IEEE 1815-2012 clause 7): named so a policy can
	// allow, and so require, the challenge/response exchange.
	{"authenticate_req", 32}, {"auth_req_no_ack", 33},
	{"response", 129}, {"unsolicited_response", 130}, {"authenticate_resp", 131},
}

// dnp3Groups names object groups (IEEE 1815-2012 Annex A).
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

// opcuaServices maps OPC 10000-4 service names to the numeric NodeId of the
// request's binary encoding (OPC 10000-6 section 5.2.2.9; NodeIds.csv).
var opcuaServices = []struct {
	name string
	id   uint32
}{
	{"find_servers", 422}, {"find_servers_on_network", 12208}, {"get_endpoints", 428},
	{"register_server", 437}, {"register_server2", 12211},
	{"open_secure_channel", 446}, {"close_secure_channel", 452},
	{"create_session", 461}, {"activate_session", 467}, {"close_session", 473},
	{"cancel", 479}, {"add_nodes", 488}, {"add_references", 494}, {"delete_nodes", 500},
	{"delete_references", 506}, {"browse", 527}, {"browse_next", 533},
	{"translate_browse_paths_to_node_ids", 554}, {"register_nodes", 560},
	{"unregister_nodes", 566}, {"query_first", 615}, {"query_next", 621},
	{"read", 631}, {"history_read", 664}, {"write", 673}, {"history_update", 700},
	{"call", 712}, {"create_monitored_items", 751}, {"modify_monitored_items", 763},
	{"set_monitoring_mode", 769}, {"set_triggering", 775}, {"delete_monitored_items", 781},
	{"create_subscription", 787}, {"modify_subscription", 793},
	{"set_publishing_mode", 799}, {"publish", 826}, {"republish", 832},
	{"transfer_subscriptions", 841}, {"delete_subscriptions", 847},
}

// Service type ids with node lists (OPC 10000-4 sections 5.10.4, 5.11.2).
const (
	opcuaWrite uint32 = 673
	opcuaCall  uint32 = 712
)

// opcuaImplied are the session-management services implied by any opcua
// rule (DESIGN.md): a client cannot do anything without them.
var opcuaImplied = []uint32{422, 428, 446, 452, 461, 467, 473}

// opcuaPolicies are the security policy short names (OPC 10000-7), the last
// path element of the policy URI.
var opcuaPolicies = []string{
	"None", "Basic128Rsa15", "Basic256", "Basic256Sha256",
	"Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss",
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
