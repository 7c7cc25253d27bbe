// Package protocols holds what the industrial protocol parsers
// (protocols/modbus, protocols/dnp3, protocols/opcua) share, and the one
// per-flow layer that both the inline engine (gateway) and `otgw dissect`
// (simulate/dissect) drive:
//
//   - Session: one per flow and protocol. It owns framing, resynchronisation,
//     decoding, request/response pairing and the rendering of a PDU's
//     fields (Session.Fields into a Sink). The engine steps it (Next,
//     Decode, Commit with its verdict) because it holds and forwards bytes
//     between framing and judging; offline tools call Feed. Policy stays out:
//     the session decodes and pairs, rules decides. Pairing lives only
//     here: Paired answers the rules, Exchange names the request a
//     response answers for tools that join them (gateway/txlog).
//   - Sink: the field writer. simulate/dissect writes JSON bytes with it, the
//     engine an event's field map, Record a list of key/values: the same
//     rendering code for all three.
//   - Spec: a protocol described once (Proto, name, well-known ports,
//     transports, content detector, session constructor).
//     protocols/registry lists the Specs; the engine and dissect get their
//     sessions, ports and detectors there.
//
// Adding a fourth protocol means: a new protocols/<p> package with its
// parser, its Session and its Spec; its Proto constant and name here; its
// rule section in rules (with its rules.PDU adapter, a case of
// rules.PDU.Set); and one line in protocols/registry.
//
// Packages under protocols import nothing else of ours
// (internal/archtest).
package protocols
