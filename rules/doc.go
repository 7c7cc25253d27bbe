// Package rules owns the policy: the YAML file a plant's security engineer
// writes (DESIGN.md, "The policy file (YAML, version 1)"), its checks, the
// compiled Ruleset the datapath consults, and hot reload.
//
// Vocabulary and model follow IEC 62443-3-2: zones (a bridge port and/or
// networks, optional VLANs), assets (named hosts with ip/mac in a zone) and
// conduits from an initiator to a responder, each with a mode (monitor or
// enforce) and a deny action (drop, reset, reply). Everything is denied by
// default: L2 ethertypes, L3/L4 flows, and every PDU of an inspected
// protocol. The l2 list names ethertypes (arp, lldp, ... or 0xNNNN from
// 0x0600); `llc` allows the IEEE 802.3 frames whose type field is a length
// (802.2 LLC: spanning tree BPDUs, CDP), which have no ethertype.
//
// Protocol rules follow the specifications: Modbus Application Protocol
// v1.1b3 (tables, function codes, FC 8 sub-functions, FC 43 MEI types; the
// vendor extension FC 90, Schneider UMAS, by its UMAS function code:
// `function: 90` allows every UMAS request, `function: 90/<sub>` (or
// `umas/<sub>`) one, where sub is a number (65 or 0x41) or a name of
// modbus.UMASFunctionName such as read_id, take_plc_reservation,
// upload_block, download_block, start_plc, stop_plc; an ADU one byte
// longer than the specification's 260, MBAP length 255, as UMAS sessions
// send, is the anomaly long_adu, allowed by `tolerate: [long_adu]`), IEEE
// 1815-2012 DNP3 (link addresses, function codes, object groups/variations,
// unsolicited responses, Secure Authentication function codes 32, 33, 131
// and group 120), OPC 10000-4/6 (security mode and policy of OPN, service
// request type ids, NodeIds of Write and Call).
//
// Rules read the parsers' own types: PDU.Set takes the protocols.Session
// that decoded a PDU and fills the PDU from its decoded ADU, fragment or
// message through the adapter its rule section registered for the
// session's Proto (modbus.go, dnp3.go, opcua.go here), with opcua.NodeID,
// opcua.SecurityMode and opcua.MessageType as the parser defines them; no
// mirror types. Anomalies are typed (protocols.Anomaly) from the session
// to the Verdict: a tolerate list compiles to a bitset per protocol, and
// the pairing (tid_mismatch, seq_mismatch) and unknown_function checks
// compare typed values; names appear only when a policy is read and a
// verdict is rendered. A protocol beyond the three built in brings its
// rule section in one file that calls RegisterSection (policy key =
// protocol name, with ports and tolerate; its adapter fills PDU.Other;
// its Judge decides), and nothing else here changes (rules/sectiontest).
//
// Pipeline: Load/Parse (YAML to plain-data Policy, unknown keys are errors
// with "did you mean") → Compile (every problem reported with FILE:LINE:COL;
// an immutable Ruleset indexed by address, zone and conduit bitsets) →
// Ruleset.EvaluateFlow (first packet of a flow) and Ruleset.Evaluate (each
// PDU), which allocate nothing. Marshal writes a Policy back to YAML for
// rules/learn. The package is pure: it reads no files of its own accord,
// handles no signals and emits no events; the daemon's Watcher
// (gateway/daemon) reloads the file on change or SIGHUP and swaps the
// Ruleset atomically only when the new file compiles.
//
// Semantics worth knowing: conduits are tried in file order; the first rule
// that allows decides, otherwise the first applicable rule's reason does.
// Responses ride the allowed flow and are allowed only when the gateway
// paired them with a request (DNP3 unsolicited responses only where
// allowed). Parser anomalies deny unless the rule or conduit tolerates the
// named anomaly. A tolerated anomaly lets a PDU through unread only where
// the rule does not restrict what was unread: a field the anomaly kept the
// parser from reading (a Modbus address, quantity or sub-function, the
// registers a write whose byte count disagrees may reach, a DNP3 function
// code or the object headers after the one that stopped the walk, an OPC
// UA service type id or the NodeIds of a Write or Call) is unknown, and a
// rule that restricts it refuses the PDU with its usual reason
// (address_out_of_range, value_out_of_range, function_not_allowed,
// object_not_allowed, service_not_allowed, node_not_allowed). OPC UA
// SignAndEncrypt bodies are opaque: only the channel's mode and policy are
// judged there. A channel whose OPN was not seen (opened before the gateway
// started, or a capture that starts mid-session) has an unknown mode, which
// meets the default minimum (None) and no higher one.
//
// Names: protocol vocabulary comes from the parser packages, the single
// source of truth: Modbus function names are modbus.FunctionName's, DNP3
// function names dnp3.FunctionCode.String's (IEEE 1815-2012 Table 4-1:
// immed_freeze, initialize_appl, save_config...), OPC UA services, security
// policies and modes those of opcua.ServiceByName, PolicyByName and
// ModeByName. A tolerate list may name only anomalies the parser of the
// rule's protocol reports (a conduit's list: of its rules' protocols);
// Compile reports others with FILE:LINE:COL and "did you mean". It may not
// name an anomaly of bytes that cannot be framed as the protocol at all
// (Modbus non_modbus, protocol_id, mbap_length; DNP3 link and transport
// layer anomalies such as bad_start, link_crc, data_crc,
// reassembly_overflow; OPC UA unknown_message_type, invalid_chunk_type):
// the gateway denies those bytes whatever a rule says, so Compile refuses
// such an entry instead of accepting a no-op (Tolerable). A PDU carries
// the OPC UA parser's own types (opcua.NodeID, MessageType, SecurityMode);
// policy NodeIds are read with opcua.ParseNodeID.
//
// # Limits
//
// Load (`otgw check`), and ReadPolicy then Parse (the daemon's reload),
// refuse a policy past these limits with FILE:LINE:COL, checked while it is
// read and scanned, before the YAML tree, the Policy or the Ruleset is
// built: at most MaxPolicyBytes (4 MiB; only that much of a longer file
// is read), MaxPolicyValues (200,000) YAML values, MaxListLen (10,000)
// entries in one list or mapping, MaxRanges (1,000) comma-separated
// ranges in one value and MaxPolicyDepth (64) levels of nesting. A 100 MB
// policy or a 10 M-entry units list is refused in about 0.05 s and 15 MB;
// the largest policy within the limits checks in about 0.6 s and 100 MB.
//
// # Rate detections
//
// Some answers a policy allows one by one betray a scan or a device in
// trouble by their number: Modbus exception 02 or 01 answers to one client
// (points-list or function-code scan), 05/06 from one server (busy), DNP3
// unsolicited responses from one outstation, responses with IIN2 object
// unknown / parameter error or no function code support to one master
// (../shared/SCENARIOS.md M11-M13, D2, D10, D11). Detector names them; the
// gateway counts them per subject address and raises one alert event
// ("detect:<name>") when Count fall within Window, then counts afresh one
// window later. Only responses that cross count: probes the gateway
// refuses itself are reported one by one as denies. Detections never deny.
// One detector is the gateway's own: syn_flood counts the SYNs it refuses
// because their client already has as many half-open connections as one
// address may (gateway package documentation). The policy's detections section
// overrides DefaultThresholds per detector (`name: off` or
// `name: {count: N, window: 30s}`); rules/learn raises a threshold that the
// learned capture already reaches.
//
// # DNP3 Secure Authentication (require_auth)
//
// IEEE 1815-2012 clause 7 (SAv5) has the outstation challenge every
// critical request: the master sends the request, the outstation answers
// with an authentication challenge (FC 131 AUTHENTICATE_RESP carrying
// g120v1), the master replies (FC 32 AUTHENTICATE_REQ carrying g120v2, an
// HMAC over the challenge and the request), and only then does the
// outstation execute the request and send its response (FC 129). In
// aggressive mode the master anticipates the challenge and sends the
// request framed by g120v3 ... g120v9 (MAC over the last challenge). Session
// keys are set with g120v4 (key status request, FC 32), g120v5 (key status,
// FC 131, carrying challenge data) and g120v6 (key change, FC 32); failures
// are reported with g120v7.
//
// The gateway holds no keys, so it cannot check a MAC; it checks that the
// exchange happens. A dnp3 rule with `require_auth: true` means, for the
// association the flow carries:
//
//   - Control functions are every request except confirm, read,
//     delay_measure and the authentication requests (write, select,
//     operate, direct_operate[_nr], freezes, cold/warm_restart,
//     initialize_*, start/stop_appl, save_config, (en|dis)able_unsolicited,
//     assign_class, record_current_time, file and config functions, and
//     undefined codes). They are judged by the allow list as usual, and
//     forwarded: the outstation must receive a critical request to
//     challenge it.
//   - The outstation's response to a control is allowed only when the
//     outstation's challenge for that request was answered by the master's
//     reply in between (or the request came in aggressive mode). A response
//     to a control that was never challenged, or whose challenge went
//     unanswered or ended in an authentication error, is denied with
//     auth_required: the outstation acted on an unauthenticated control
//     (SA disabled or bypassed). A new request starts a new exchange.
//   - A reply (g120v2) is allowed only while a challenge is open, a key
//     change (g120v6) only after a key status (g120v5); otherwise
//     auth_required.
//   - Aggressive-mode controls are allowed only after a challenge (g120v1 or
//     g120v5) has been answered on this association, since their MAC covers
//     it; otherwise auth_required. The g120 objects framing them are not
//     judged against the allow list, the others are.
//   - FC 32 and FC 33 requests and FC 131 responses are implied, may carry
//     only g120 objects (object_not_allowed otherwise), and an FC 131 is
//     allowed only while a request of the master awaits an answer.
//
// For the *_nr functions no response follows, so the gateway can see the
// exchange but not whether the outstation executed without it. Unsolicited
// responses are judged by `unsolicited: true` as without require_auth.
// The state is kept in Flow (per flow, zero value: a fresh association,
// no allocation) and advanced by Evaluate with every DNP3 PDU that crosses
// (allowed, or alerted in monitor mode), whichever rule decided; it
// survives reloads like the flow.
package rules
