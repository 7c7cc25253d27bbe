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
//
// Adding a fourth protocol means: a new protocols/<p> package with its
// parser, its Session (whose Proto it registered with protocols.Register)
// and its Spec; its rule section in rules (rules.RegisterSection from the
// section's file); and one line in protocols/registry. Nothing here or in
// rules' shared files changes (rules/sectiontest proves it).
//
// Packages under protocols import nothing else of ours
// (internal/archtest).
package protocols
