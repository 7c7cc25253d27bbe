// Package replay runs packet captures through the gateway's inspection
// engine (gateway.Engine, the very code that sits on the wire) with an
// in-memory port pair, and reports what the policy would have done: each
// verdict per frame and PDU, a summary per conduit, reason and rule, the
// rules never hit, the top denied flows, and optionally allowed.pcap,
// denied.pcap, report.json and a self-contained report.html.
//
// How frames reach the engine:
//   - Several captures (pcap or pcapng) are merged in timestamp order
//     (ties keep file order).
//   - Frames of link types other than Ethernet (BSD loopback, Linux cooked
//     capture, raw IP) get a synthetic Ethernet header; the engine's
//     datapath only ever sees Ethernet.
//   - The ingress side of each frame comes from the policy's zone mapping
//     (zone port + networks, and assets' zones): a frame whose source lies
//     in a south zone enters on the south port. One capture holding both
//     directions therefore replays as the bridge would see it.
//   - A capture that begins in the middle of a TCP connection lacks the
//     handshake the gateway would have seen had it been in place when the
//     connection opened. Unless Options.StrictMidstream is set, the harness
//     picks such a connection up at the first data segment of its client
//     and synthesises SYN, SYN-ACK, ACK with the sequence numbers of that
//     segment just before it; the frames of the connection before that
//     point are skipped and counted (Report.SkippedMidstream). It also
//     tells the engine (Engine.MarkPickedUp) that the connection was picked
//     up, so that the first responses, which may answer requests sent
//     before the capture began, are not denied as responses without
//     request.
//   - A capture is not the wire: it may lose frames, and merged captures
//     may put an ACK before the segment it acknowledges. Unless
//     StrictMidstream is set, a pre-pass (gaps.go) finds holes no later
//     frame fills and tells the engine at the first frame past each
//     (Engine.CaptureGap: the parser resynchronises at the next PDU, the
//     rest of a PDU whose start was lost passes uninspected and is
//     counted), and feeds a pure ACK right after the segment it
//     acknowledges when that follows within a few frames. A hole a later
//     frame fills is out-of-order delivery and is left to the engine, and
//     so is a hole that frames the engine itself drops explain (an IP
//     fragment of TCP between the same hosts before it: the wire gateway
//     never delivered those bytes either; Report.EngineDropHoles).
//     Report.CaptureHoles, Reordered and CaptureSkipped count the repairs.
//
// With StrictMidstream the engine sees the capture as is (in enforce mode
// it refuses mid-stream connections and whatever follows a hole, as on the
// wire).
//
// What-if (Options.WhatIf, on in `otgw replay`): an enforcing gateway
// resets or blocks a connection at its first denied PDU and never judges
// what follows, so its events alone understate what a policy refuses. A
// second engine, with the same policy in monitor mode everywhere
// (rules.Ruleset.WithMode), judges every frame as captured; its refusals
// that the enforcing engine never made are reported with the policy's
// reason and AfterReset (after_reset in the record), and Report.WhatIf
// counts what the policy refuses, per conduit and function, apart from
// the traffic the resets cut (whatif.go). Where the pre-scan proves it
// exact, that engine judges a flow's frames only once the enforcing
// engine has shown enforcement on it, fed the flow's earlier frames
// first; until then it would only repeat the enforcing engine's allows
// (lazy.go).
//
// The report's timeline (Report.Timeline, report.json and report.html)
// holds the deny and alert events up to Options.MaxTimeline entries; the
// frames of a connection the gateway had closed (reason closed: after its
// reset, every later frame) are one entry per connection, standing for
// their count (timeline.go). Options.OnEvent (`otgw replay --json`) gets
// every event.
//
// On several cores (Options.Workers, default GOMAXPROCS) the flows are
// sharded over that many engines, each on its own goroutine, a flow's
// frames always on the same one and in capture order; the reading
// goroutine reports each frame's outcome in capture order, and counts the
// rate detectors' matches (which span connections) itself, in frame order
// (shard.go). Events, report and pcaps are the same bytes whatever the
// number of engines.
//
// Verdicts come from the engine's OnVerdict hook; whether a frame crossed
// comes from what the engine sent through the in-memory Tx. Nothing in this
// package evaluates a policy itself.
//
// A Runner is used by one goroutine.
package replay
