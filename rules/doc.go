// Package rules owns the policy: the YAML file a plant's security engineer
// writes (DESIGN.md, "The policy file (YAML, version 1)"), its checks, the
// compiled Ruleset the datapath consults, and hot reload.
//
// Vocabulary and model follow IEC 62443-3-2: zones (a bridge port and/or
// networks, optional VLANs), assets (named hosts with ip/mac in a zone) and
// conduits from an initiator to a responder, each with a mode (monitor or
// enforce) and a deny action (drop, reset, reply). Everything is denied by
// default: L2 ethertypes, L3/L4 flows, and every PDU of an inspected
// protocol. Protocol rules follow the specifications: Modbus Application
// Protocol v1.1b3 (tables, function codes, FC 8 sub-functions, FC 43 MEI
// types), IEEE 1815-2012 DNP3 (link addresses, function codes, object
// groups/variations, unsolicited responses, Secure Authentication function
// codes 32, 33, 131), OPC 10000-4/6 (security mode and policy of OPN,
// service request type ids, NodeIds of Write and Call).
//
// Pipeline: Load/Parse (YAML to plain-data Policy, unknown keys are errors
// with "did you mean") → Compile (every problem reported with FILE:LINE:COL;
// an immutable Ruleset indexed by address, zone and conduit bitsets) →
// Ruleset.EvaluateFlow (first packet of a flow) and Ruleset.Evaluate (each
// PDU), which allocate nothing. Marshal writes a Policy back to YAML for
// rules/learn. Watcher reloads the file on change or SIGHUP and swaps the
// Ruleset atomically only when the new file compiles.
//
// Semantics worth knowing: conduits are tried in file order; the first rule
// that allows decides, otherwise the first applicable rule's reason does.
// Responses ride the allowed flow and are allowed only when the gateway
// paired them with a request (DNP3 unsolicited responses only where
// allowed). Parser anomalies deny unless the rule or conduit tolerates the
// named anomaly. OPC UA SignAndEncrypt bodies are opaque: only the channel's
// mode and policy are judged there.
package rules
