package gateway

import "sync/atomic"

// DropReason says why the engine did not forward a frame (or a part of a
// segment). Every drop increments exactly one counter keyed by its reason.
// Names (String) are stable: they appear on the status endpoint and in
// Prometheus labels.
type DropReason uint8

// Drop reasons.
const (
	DropNone           DropReason = iota
	DropDecode                    // frame could not be decoded (truncated or bad L2/L3/L4 header)
	DropL2Policy                  // non-IP ethertype not allowed by the l2 list
	DropFragment                  // IP fragment (to an inspected port, or any fragment the flow rules deny)
	DropFlowDenied                // L3/L4 flow refused by the ruleset
	DropNoFlow                    // TCP segment of an unknown connection (mid-stream pickup in enforce mode)
	DropTableFull                 // flow table full of established flows: new flow refused
	DropMemoryCap                 // inspection buffers would exceed the memory cap: a new flow (or a connection's first data) refused
	DropBadTCP                    // impossible flag combination, or data before the handshake completed
	DropOutOfWindow               // sequence or acknowledgement number outside the receiver's window
	DropOutOfOrder                // segment beyond a hole: the sender retransmits it once the hole is filled
	DropRetransmission            // retransmission that cannot be verified against inspected bytes (older than the history)
	DropEvasion                   // evasion attempt: retransmission overlapping inspected bytes with different content, urgent data
	DropPDUDenied                 // application PDU refused by the ruleset
	DropMalformed                 // bytes on an inspected port that cannot be framed as the protocol
	DropBlocked                   // data of a direction blocked after a `drop` verdict (retransmissions of the denied PDU)
	DropClosed                    // segment of a connection the gateway reset
	DropPDUTooLarge               // a PDU larger than the hold buffer of its protocol
	DropNoBuffer                  // crafted frame (RST, reply) not sent: buffer pool empty
	DropLoop                      // invalid ingress port (programming error in a harness)
	DropNoPolicy                  // no ruleset loaded: fail closed
	DropHalfOpen                  // SYN from a client with as many half-open connections as its limit (syn_flood)
	numDropReasons
)

var dropNames = [numDropReasons]string{
	"none", "decode", "l2_policy", "fragment", "flow_denied", "no_flow", "table_full",
	"memory_cap", "bad_tcp", "out_of_window", "out_of_order", "retransmission", "evasion",
	"pdu_denied", "malformed", "blocked", "closed", "pdu_too_large", "no_buffer", "loop", "no_policy",
	"half_open_limit",
}

// String returns the stable snake_case name of the reason.
func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// DropReasons returns every reason except DropNone, in counter order.
func DropReasons() []DropReason {
	out := make([]DropReason, 0, numDropReasons-1)
	for r := DropNone + 1; r < numDropReasons; r++ {
		out = append(out, r)
	}
	return out
}

// counters are the engine's statistics. Every field is an atomic so that
// both ingress goroutines update them without a lock; atomic.Uint64 is
// 64-bit aligned on 32-bit ARM as well.
type counters struct {
	rxFrames  [2]atomic.Uint64 // by ingress port
	rxBytes   [2]atomic.Uint64
	txFrames  [2]atomic.Uint64 // forwarded, by egress port
	txBytes   [2]atomic.Uint64
	injected  [2]atomic.Uint64 // crafted frames (RST, replies), by egress port
	truncated atomic.Uint64    // segments rewritten to their allowed prefix
	drops     [numDropReasons]atomic.Uint64

	pdus        atomic.Uint64
	pduAllowed  atomic.Uint64
	pduDenied   atomic.Uint64
	pduAlerted  atomic.Uint64
	flowDenied  atomic.Uint64
	flowAlerted atomic.Uint64
	resets      atomic.Uint64 // connections reset by a verdict
	replies     atomic.Uint64 // protocol-native error replies sent

	flowsCreated  atomic.Uint64
	flowsEvicted  atomic.Uint64 // evicted to make room, any class
	estEvicted    atomic.Uint64 // of which established allowed flows
	flowsExpired  atomic.Uint64
	flowsRevalid  atomic.Uint64 // flows re-judged after a ruleset swap
	flowsRevoked  atomic.Uint64 // flows a new ruleset no longer allows
	eventsEmitted atomic.Uint64
	detections    atomic.Uint64 // rate detections that reached their threshold
	captureSkips  atomic.Uint64 // replay: segments skipped resynchronising after a capture hole
	heldSegments  atomic.Uint64 // segments whose last PDU was held (its bytes not forwarded yet)
	heldReleased  atomic.Uint64 // held PDUs judged, allowed and forwarded from the hold
}

func (c *counters) drop(r DropReason) { c.drops[r].Add(1) }

// Counters is a snapshot of the engine's statistics for the status endpoint
// and Prometheus. Arrays indexed by port use PortID; Drops is indexed by
// DropReason. The zero value is an empty snapshot.
type Counters struct {
	RxFrames, RxBytes [2]uint64
	TxFrames, TxBytes [2]uint64
	Injected          [2]uint64
	Truncated         uint64
	Drops             [numDropReasons]uint64

	PDUs, PDUsAllowed, PDUsDenied, PDUsAlerted uint64
	FlowsDenied, FlowsAlerted                  uint64
	Resets, Replies                            uint64

	FlowsActive, FlowsEstablished    int
	FlowsCreated, FlowsExpired       uint64
	FlowsEvicted, EstablishedEvicted uint64
	FlowsRevalidated, FlowsRevoked   uint64
	MemoryBytes, MemoryCap           int64
	EventsEmitted                    uint64
	Detections                       uint64 // rate-detection alerts (rules.Detector)
	// CaptureSkips counts segments of a replayed capture skipped while the
	// parser resynchronised after a hole the capture lost (CaptureGap);
	// always 0 on the wire.
	CaptureSkips uint64
	// HeldSegments counts segments ending in an incomplete PDU whose
	// bytes were held; HeldReleased the held PDUs that were then allowed
	// and forwarded in crafted segments.
	HeldSegments, HeldReleased uint64
}

// Dropped returns the total of all drop counters.
func (c Counters) Dropped() uint64 {
	var n uint64
	for _, v := range c.Drops {
		n += v
	}
	return n
}

// DropsByName returns the non-zero drop counters by reason name (allocates;
// for the control plane).
func (c Counters) DropsByName() map[string]uint64 {
	m := make(map[string]uint64)
	for r, v := range c.Drops {
		if v != 0 {
			m[DropReason(r).String()] = v
		}
	}
	return m
}

func (c *counters) snapshot(out *Counters) {
	for i := range 2 {
		out.RxFrames[i] = c.rxFrames[i].Load()
		out.RxBytes[i] = c.rxBytes[i].Load()
		out.TxFrames[i] = c.txFrames[i].Load()
		out.TxBytes[i] = c.txBytes[i].Load()
		out.Injected[i] = c.injected[i].Load()
	}
	out.Truncated = c.truncated.Load()
	for i := range c.drops {
		out.Drops[i] = c.drops[i].Load()
	}
	out.PDUs = c.pdus.Load()
	out.PDUsAllowed = c.pduAllowed.Load()
	out.PDUsDenied = c.pduDenied.Load()
	out.PDUsAlerted = c.pduAlerted.Load()
	out.FlowsDenied = c.flowDenied.Load()
	out.FlowsAlerted = c.flowAlerted.Load()
	out.Resets = c.resets.Load()
	out.Replies = c.replies.Load()
	out.FlowsCreated = c.flowsCreated.Load()
	out.FlowsExpired = c.flowsExpired.Load()
	out.FlowsEvicted = c.flowsEvicted.Load()
	out.EstablishedEvicted = c.estEvicted.Load()
	out.FlowsRevalidated = c.flowsRevalid.Load()
	out.FlowsRevoked = c.flowsRevoked.Load()
	out.EventsEmitted = c.eventsEmitted.Load()
	out.Detections = c.detections.Load()
	out.CaptureSkips = c.captureSkips.Load()
	out.HeldSegments = c.heldSegments.Load()
	out.HeldReleased = c.heldReleased.Load()
}
