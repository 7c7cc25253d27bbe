// Package gateway is the inspection engine of the inline gateway: the
// per-frame pipeline that the live bridge (`otgw run`, two NICs through
// hal.Port), offline replay (`otgw replay`) and live replay all share.
// It does no I/O: a harness reads frames, calls Engine.Handle and sends
// what the engine passes to its Tx. One engine, three harnesses: what
// replay says is what the wire does (DESIGN.md "Datapath decisions").
//
// # Pipeline
//
// For every frame Handle:
//
//  1. decodes L2/L3/L4 with gateway/packet (no allocation);
//  2. judges non-IP frames by the policy's l2 list (ARP, LLDP only when
//     allowed), and ICMP, other IP protocols and every IP fragment packet
//     by packet with rules.Ruleset.EvaluateFlow (fragments are always
//     denied: they could hide a PDU from the framer). An allowed ICMP or
//     ICMPv6 echo request also records its identifier and sequence number
//     in the flow table (an echo flow, keyed requester → responder and
//     identifier, with the UDP idle timeout), so that exactly one echo
//     reply per outstanding request (a window of the last 64 sequence
//     numbers) rides the request's flow the way a TCP or UDP response
//     does (RFC 792, RFC 4443 section 4). ICMP errors (destination
//     unreachable, packet too big, time exceeded, parameter problem,
//     source quench; never redirects) that quote a packet of an allowed
//     TCP, UDP or echo flow and are addressed to that packet's sender are
//     forwarded as related to it (RFC 4443 section 2.4); every other ICMP
//     message is judged on its own;
//  3. looks TCP and UDP up in the bounded flow table; the first packet of a
//     flow (a SYN, or the first datagram) is judged by EvaluateFlow and,
//     when allowed, creates the flow; when the rule that allowed it names
//     an inspected protocol (Verdict.Inspect) the flow takes a parser
//     (inspector) when its handshake completes or its first data arrives,
//     never while half-open (see Flow table). A
//     UDP flow is judged from its initiator; it is adopted in the reverse
//     direction only when the reversed datagram matches a conduit's DNP3
//     rule (an outstation's unsolicited response to its master: preferred
//     to an uninspected allowance, and to a DNP3 rule the other way when
//     the datagram's first frame has DIR clear), and is then inspected,
//     the direction of each frame taken from its DNP3 DIR bit; its
//     flow-level Decision names the master as Src. A UDP flow to or from port 502 or 20000 that only a plain udp
//     rule allows is refused (NamedModbusUDP "modbus_udp_not_inspected",
//     NamedDNP3UDP "dnp3_udp_not_inspected"): Modbus over UDP is not
//     inspected, and DNP3 over UDP only through a dnp3 rule;
//  4. runs TCP through the normaliser (RFC 9293 state from the handshake;
//     mid-stream pickup only for monitor-mode conduits): resets cross
//     only in the receiver's window and end the connection only at the
//     receiver's next expected sequence number (RFC 5961: elsewhere the
//     receiver answers with a challenge ACK and so keeps its state), data
//     on a SYN, data after the sender's FIN and a simultaneous open are
//     dropped, a first IP fragment too short for its transport header is
//     denied as a fragment (RFC 1858), data beyond the
//     receiver's window or acknowledging unsent bytes is dropped, segments
//     after a hole are dropped until the hole is filled (the sender
//     retransmits them), and a retransmission is compared byte for byte
//     with the inspected history (Config.HistoryBytes): different content
//     is an evasion attempt (Decision.EvasionName EvasionTCPOverlap,
//     "tcp_overlap_mismatch"; event reason ReasonEvasionTCPOverlap,
//     "evasion:tcp_overlap_mismatch", severity alert) and resets the
//     connection whatever the deny action (monitor mode: an alert). A
//     segment with URG set on an inspected conduit is dropped as
//     EvasionTCPUrgent ("evasion:tcp_urgent", severity alert, no reset):
//     a receiver without SO_OOBINLINE takes the urgent byte out of the
//     stream, so its application would read other bytes than the parser
//     judged (RFC 6093; the pointer may also mark a byte of a later
//     segment, so a URG pure ACK is dropped too);
//  5. frames new in-order bytes into PDUs through the flow's
//     protocols.Session (from protocols/registry: Modbus/TCP MBAP, DNP3
//     link frames with transport reassembly, OPC UA UA-TCP chunks through
//     opcua.Channel), which decodes each complete PDU and pairs responses
//     with requests; rules.PDU.Set reads the session into a rules.PDU
//     (the engine interprets no parser field for the policy), the engine
//     judges it with rules.Ruleset.Evaluate and tells the session the
//     verdict (Commit: only requests that crossed await answers) (a Modbus function code
//     that is neither public nor user-defined, such as FC 91, is
//     refused as function_not_allowed, not as malformed:unknown_function,
//     unless a rule lists it without tolerating the anomaly). No byte of a
//     PDU crosses before the whole PDU is judged and allowed (see Held
//     PDUs below);
//  6. acts on the verdict: allow forwards the frame unchanged; a deny
//     after allowed pipelined PDUs in the same segment forwards the segment
//     rewritten to its allowed prefix (IP length and checksums fixed) and
//     then applies the deny action: drop (and keep dropping that
//     direction's data from there, so retransmissions of the denied PDU
//     never cross), reset (RST|ACK to both ends, each at the sequence
//     number its receiver expects), or reply (the session's own answer,
//     protocols.Replier: a Modbus exception with the request's
//     transaction and unit id, a DNP3 response with IIN2
//     NO_FUNC_CODE_SUPPORT or OBJECT_UNKNOWN, an OPC UA ERR when the secure
//     channel is in mode None; then reset; DNP3 over UDP gets the reply
//     alone; a protocol without a reply is reset). Monitor mode forwards
//     everything and reports alerts.
//
// The engine names no protocol for inspection: it gets sessions from
// protocols/registry by the Proto the ruleset's flow verdict names, reads
// them through protocols.Session (and Replier), and leaves the PDU's
// meaning to rules. A fourth protocol therefore needs no change here (see
// protocols' doc for the three steps; gateway/fourthtest drives the
// made-up internal/echo7 through the engine). What is still per protocol
// in this package: DNP3's outstation-initiated connections (tcp.go). The
// rate detectors count what rules.PDU.Detections classifies (detect.go
// keeps only the counting table).
//
// # Held PDUs
//
// In enforce mode the bytes of an incomplete PDU are copied into the one
// hold buffer of their direction (charged to Config.MemoryCap) and are
// not forwarded: the segment that carries them crosses as a pure
// acknowledgement at the receiver's next expected sequence number (its
// ACK and window still reach the receiver; its payload and FIN do not),
// or truncated to the complete PDUs before the held one. When the
// segment that completes the PDU arrives and the PDU is allowed, the
// engine forwards the held bytes and the segment's judged bytes in
// segments it crafts from the completing segment's own headers (TCP
// options and timestamps included), starting at the receiver's next
// expected sequence number and at most as large as that segment's
// payload or the minimum MSS (536 bytes, IPv6 1220). A denied PDU's held
// bytes never cross; its resets and block point start where the PDU
// starts. The receiver thus acknowledges nothing of a PDU before it is
// judged, and if the held bytes are lost the sender retransmits them as
// it would have anyway.
//
// The sender gets no acknowledgement for held bytes. A PDU larger than
// maxUnsent (4096 bytes; only OPC UA chunks are) would not fit in a
// fresh connection's congestion window at the minimum MSS (RFC 6928: 10
// segments), so holding it would stall the connection: its prefix still
// crosses before it is judged, as the receiver's OPC UA stack acts only
// on complete chunks framed by the same MessageSize the engine reads. A
// sender that splits one small PDU over two writes without TCP_NODELAY
// holds the second part until the first is acknowledged (Nagle, RFC 896),
// which the engine withholds: that connection stalls. The Modbus, DNP3
// and OPC UA stacks the tests run (pymodbus, goburrow and simonvetter
// modbus, dnp3sim, gopcua) write a PDU at once.
//
// Every drop increments one counter keyed by DropReason; every deny and
// alert becomes an events.Event on the configured Sink (built only then:
// the allow path allocates nothing). OnVerdict lets offline replay and
// learning attribute each verdict to the frame being handled: it is called
// for every PDU verdict, every flow-level and L2 verdict (allowed ones
// included: the first packet of a TCP or UDP flow, a re-judged flow after
// a reload, each stateless ICMP or IP packet) and every normaliser drop;
// packets riding an existing flow without a PDU get no call. Events are
// emitted synchronously from Handle, so a replay Sink can stamp the frame
// number.
//
// Responses must pair with a request the engine saw (Modbus transaction
// id, DNP3 application sequence number with one count per repeated
// request, OPC UA request id). Offline replay, which synthesises the
// handshake of a connection its capture joins mid-stream, calls
// Engine.MarkPickedUp so that responses before the first paired one may
// answer requests sent before the capture; the live gateway never does.
//
// # Ownership
//
// The frame passed to Handle belongs to the caller again when Handle
// returns; Handle may rewrite it in place (truncation). Tx.Send must copy
// or consume what it is given before returning. Crafted frames come from a
// small bounded pool (Config.CraftBuffers); when it is empty the crafted
// frame is counted as DropNoBuffer instead of allocating or blocking.
// Parser state (one protocols.Session per inspected flow) lives in
// inspectors recycled through free lists and counted against
// Config.MemoryCap together with hold buffers and retransmission history.
// Event and report fields (Decision.Fields) are rendered by that session,
// the same code that prints `otgw dissect --json`.
//
// # Concurrency
//
// Handle is safe for concurrent use and is meant to be called by one
// goroutine per ingress port. The flow table's mutex guards the key map,
// the LRU lists and slot allocation, and is held only for a lookup or an
// insertion; each flow has its own mutex that guards its TCP, parser and
// verdict state, held while one packet of that flow is processed. The two
// directions of one connection therefore serialise on their flow, and
// different flows proceed in parallel. A goroutine finds a slot under the
// table lock, releases it, locks the flow and checks the slot's
// generation, which changes whenever a slot is recycled. The table side
// never blocks on the lock of a flow in use (eviction and expiry use
// TryLock), so the lock order table → flow cannot deadlock with the flow →
// table step that moves a flow between eviction classes.
//
// # Hot reload
//
// Config.Rules is read once per frame (daemon.Watcher.Ruleset, one atomic
// load). A flow remembers the Ruleset that judged it; on its first packet
// under a new one it is re-judged with EvaluateFlow, keeping its TCP and
// parser state (rules.Flow's cached conduit match is revalidated by the
// ruleset generation). A flow the new policy refuses is cut; PDUs are
// always judged by the current ruleset.
//
// # Flow table
//
// The table holds at most Config.MaxFlows flows in a fixed array with one
// LRU list per class. A new flow first reclaims expired flows, then
// evicts the least recently used half-open, closing, reset or unanswered
// flow, and an established allowed flow only when it has been idle for
// Config.EvictMinIdle; otherwise the new flow is refused (DropTableFull),
// so a SYN or datagram flood cannot push out the plant's sessions.
// Refused flows (policy deny) take no slot at all. The daemon calls
// Engine.Expire once a second, so expired flows and their memory come
// back without new traffic.
//
// A flow's lifecycle follows a receiving TCP stack, as the capture
// reassembler (simulate/capture) does: a flow idle past its timeout is
// over whether or not a sweep reclaimed it, and the next packet on its
// addresses starts a new flow (fresh verdict, inspector and sequence
// state); a half-closed connection (one FIN) lives as long as an open
// one. A SYN on an open connection crosses without changing it: the
// server answers with a challenge ACK (RFC 5961 section 4), the client
// that rebooted resets at the acknowledged number and its next SYN is a
// new flow; a server with no connection left answers with a SYN-ACK,
// and the flow starts again from that SYN (EVASION.md). Offline replay of
// captures merged out of time order also ends a flow whose clock runs
// back (Config.ClockBack).
//
// # Admission under a SYN flood
//
// A half-open connection (SYN seen, handshake not complete) costs a slot
// of the table (about 700 bytes with its map entry) and no inspection
// memory: the inspector is taken when the handshake completes, or at the
// first payload if the cap was full then (that payload is dropped as
// DropMemoryCap and crosses when retransmitted with memory free; never
// uninspected). Spoofed SYNs cannot complete a handshake, so they never
// reach the memory cap. Each client address may have at most
// MaxFlows/32 half-open connections (512 with the default table; at
// least 16, at most 4096), counted in a fixed 32 KiB count-min sketch
// keyed by address; a SYN over the limit is refused as DropHalfOpen
// ("half_open_limit" in /metrics) and counted for the syn_flood
// detection (rules.DetectSYNFlood: one detect:syn_flood alert per window
// and flooding address, default 10 refused SYNs in 10 s, set in the
// policy's detections section). Only allowed clients create flows at
// all, so a flood spoofing one allowed address holds at most 512 slots;
// other clients still connect, established sessions are never evicted
// for newcomers, and the flooding address connects again once its
// half-open flows expire (Config.TCPHandshake, 30 s).
//
// # Sizing a 512 MB board
//
// With the defaults (MaxFlows 16,384, MemoryCap 64 MiB) the gateway's own
// state is bounded by: the flow table, 16,384 slots of 624 bytes plus
// the key map, about 12 MiB, fixed at start; inspection state charged to
// the cap, 64 MiB: an inspector is 11 KB for Modbus, 15 KB for DNP3 (two
// reassembly slots per flow) and 14 KB for OPC UA at rest (4 KiB
// retransmission history and a 512 byte hold per direction, the parser's
// pairing state), so the cap holds about
// 5,900 inspected Modbus flows or 4,400 DNP3 / OPC UA flows at once (and
// fewer while OPC UA messages or held PDUs are being reassembled: those
// buffers are charged too); the rate detectors' 256 slots and the
// half-open sketch, under 128 KiB. Every table slot can hold an
// uninspected or half-open flow. The process stays under the cap plus the
// table plus the Go runtime and binary, plus the garbage of grown
// buffers between collections: the documented bound for `otgw run` is
// 160 MiB RSS (the live SYN flood test asserts it; measured 38 MB under
// 1,000,000 SYNs, and the Go heap at +41 MiB with the cap full of OPC UA
// reassembly, BENCHMARKS.md), well inside 512 MB; otgw run sets a soft
// memory limit of 88 MiB, the cap + 24 MiB (GOMEMLIMIT overrides it), so
// that garbage of grown buffers is collected before the bound. An OPC UA
// Write/Call body buffer is charged twice its capacity (the buffer and
// the garbage its growth left), so 100 connections of 15 MB Writes keep
// otgw run under the cap + 32 MiB (gateway/e2e TestOPCUAWritesLiveRSS). More
// inspected flows need a larger Config.MemoryCap, about 11-15 MiB per
// thousand (otgw run sets only the table size, --max-flows, today).
package gateway
