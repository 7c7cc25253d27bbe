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
//   - Anomaly: a parser anomaly as a comparable uint16 (protocol in the
//     high byte, the parser enum's code in the low byte; zero is none).
//     Sessions report it (Anomaly, FramingAnomaly), rules match tolerate
//     lists and verdicts carry it without a string; String gives the
//     parser's name from the Vocabulary it registered, only where events,
//     dissect lines and policies need text. Each parser's enum converts
//     with Tagged, allocation-free.
//   - Register: a protocol package records its name and anomaly
//     Vocabulary once, at initialisation, and gets its Proto (the three
//     built-in protocols keep their constants; any other gets the next
//     number).
//   - Replier: a session that can answer a denied request itself (a
//     Modbus exception, a DNP3 response with IIN2 set, an OPC UA ERR)
//     implements it; the engine sends that answer for a deny with action
//     reply, given the refusal's Cause, and resets a connection whose
//     protocol has none.
//
// Adding a fourth protocol <p> means exactly three things, and nothing in
// this package, rules' shared files, the engine or the dissector changes:
//
//  1. a new package protocols/<p>: its parser, its Session (optionally a
//     Replier) and its Spec, with its name and anomaly Vocabulary
//     registered by one protocols.Register line;
//  2. its rule section, one file rules/<p>.go whose init calls
//     rules.RegisterSection (policy key, default port, transports, PDU
//     adapter, judge);
//  3. one registration line: &<p>.Spec in protocols/registry's list
//     (with its import; or, for a protocol defined outside the tree,
//     registry.Register(&Spec) from its own package).
//
// internal/echo7 is such a protocol, made up for tests: rules/sectiontest
// judges it by rules alone, gateway/fourthtest drives it through the
// engine and the dissector.
//
// Packages under protocols import nothing else of ours
// (internal/archtest).
package protocols
