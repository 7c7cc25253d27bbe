// Package echo7 is a made-up fourth inspected protocol for tests: with it
// the tests prove that adding a protocol takes a parser package, its rule
// section and one registration line, and nothing else changes (no switch
// in the engine, rules' shared files or the dissector).
//
// Its files stand for the three places a real protocol touches:
//
//   - echo7.go is what protocols/echo7 would hold: the parser, its
//     Session (a protocols.Session, and a protocols.Replier) and its Spec;
//     it registers its name and anomalies with protocols.Register and
//     imports nothing of ours but protocols;
//   - section.go is what rules/echo7.go would hold: the rule section,
//     registered with rules.RegisterSection;
//   - register.go is the one registration line that protocols/registry
//     would hold in its list (registry.Register, from outside the tree).
//
// Importing the package registers all three. It is test support: no
// product package imports it.
//
// The protocol: 3-byte PDUs [function, flags, check] over TCP port 7007,
// where flags bit 0 marks a response, bit 1 a refusal (a reply the
// gateway sends to a denied request) and check is function XOR flags XOR
// 0x5A. Functions 1 to 9 exist.
package echo7
