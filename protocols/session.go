package protocols

// Unit says what a Session made of the bytes it was given (Session.Decode).
type Unit uint8

// Units.
const (
	// UnitPDU: one application PDU, decoded (possibly with an anomaly):
	// the engine judges it.
	UnitPDU Unit = iota
	// UnitMalformed: bytes of the protocol that do not make a PDU a rule
	// could judge (a corrupt DNP3 link frame, a transport segment out of
	// sequence): the engine judges them as malformed, Anomaly names why.
	UnitMalformed
	// UnitPartial: a well-formed piece of a PDU that later bytes complete
	// (a DNP3 link frame whose fragment continues) or that carries none
	// (a DNP3 link-layer service frame): nothing to judge yet. Offline
	// tools still report it.
	UnitPartial
)

// Role is the part a decoded unit plays in a request/response exchange
// (Session.Exchange).
type Role uint8

// Roles.
const (
	// RoleNone: the unit is neither a request awaiting a response nor the
	// response to one the session saw.
	RoleNone Role = iota
	// RoleRequest: a request that awaits a response once it passes.
	RoleRequest
	// RoleResponse: the response to an earlier request.
	RoleResponse
)

// Session is the inspection state of one flow (a TCP connection or a UDP
// flow, both directions) for one protocol: framing, resynchronisation,
// decoding, request/response pairing and the rendering of the last
// decoded unit's fields. The inline engine (gateway) and `otgw dissect`
// (simulate/dissect) both hold one per flow, made by the protocol's Spec.
//
// The engine drives it step by step (Next, Decode, then Commit with its
// verdict), because it must hold or forward bytes between framing and
// judging; offline tools call Feed, which frames the stream, resynchronises
// after losses and takes every PDU as allowed. Steady-state use allocates
// nothing (Feed's caller and a Sink may). A Session is not safe for
// concurrent use.
type Session interface {
	// Proto is the session's protocol (its Spec's), by which rules find
	// the rule section that reads it.
	Proto() Proto
	// Next frames the PDU at the start of b, sent in direction dir: n > 0
	// is its length; n == 0 means more bytes are needed (need of them
	// when need > 0, unknown when need <= 0); err means b does not start
	// with a PDU of the protocol (FramingAnomaly names it).
	Next(dir Dir, b []byte) (n, need int, err error)
	// FramingAnomaly is the anomaly of an error of Next, in the
	// protocol's vocabulary.
	FramingAnomaly(err error) Anomaly
	// Plausible reports whether a framed PDU decodes without anomaly, so
	// that resynchronising after a capture hole does not take the tail of
	// a lost PDU for one. It changes no state.
	Plausible(dir Dir, b []byte) bool
	// Decode decodes one framed PDU (as Next delimited it) and pairs a
	// response with the requests awaiting one. Dir, Anomaly and Fields
	// then describe it until the next Decode.
	Decode(dir Dir, b []byte) Unit
	// Commit records the fate of the PDU Decode just returned: passed,
	// it crossed (allowed, or alerted in monitor mode); allowed, the
	// verdict allowed it outright. Requests that passed await responses;
	// a tolerated pairing anomaly (allowed) consumes the request the
	// response answers instead.
	Commit(passed, allowed bool)
	// Dir is the direction of the last decoded unit: the one given to
	// Decode, or what the PDU itself says (the DNP3 DIR bit).
	Dir() Dir
	// Anomaly is the last decoded unit's anomaly (AnomalyNone when
	// none), pairing anomalies included.
	Anomaly() Anomaly
	// Paired reports whether the last decoded response answers a request
	// (or, on a picked-up flow, may answer one sent before the pickup).
	Paired() bool
	// Exchange reports the part the last decoded unit plays in a
	// request/response exchange and its key, which the request and the
	// response that answers it share: RoleRequest for a request that
	// awaits a response once it passes (Commit), RoleResponse for the
	// response to a request the session saw pass. A response whose
	// pairing anomaly a rule may tolerate (Modbus tid_mismatch, DNP3
	// seq_mismatch) names the request it answers when Commit allows it.
	// Everything else is RoleNone: malformed and partial units, requests
	// that get no answer (a DNP3 CONFIRM), unsolicited responses, later
	// fragments of a multi-fragment response, and responses that pair
	// with nothing the session saw (Paired may still hold on a picked-up
	// flow). Keys are the session's own (a request counter, the DNP3
	// application sequence number): meaningful only within the session,
	// between its resets. It is the pairing of record for tools that
	// join requests to responses (gateway/txlog), so that no other
	// package re-derives it.
	Exchange() (Role, uint64)
	// Fields renders the fields of the last decoded unit, in order (see
	// the protocol package for its keys). It is the one renderer of a
	// PDU: `otgw dissect` prints it, the engine's events carry it.
	Fields(w Sink)
	// Gap tells the session that bytes of direction dir were lost or
	// skipped: the partial unit of that direction is dropped and framing
	// starts again.
	Gap(dir Dir)
	// PickUp tells the session that the flow was joined after it
	// started: until a response pairs with a request seen, a response
	// that pairs with nothing is taken as the answer to a request sent
	// before, not as an anomaly.
	PickUp()
	// Reset returns the session to its state when new, keeping its
	// buffers, so that it can follow another flow.
	Reset()
	// Size is the memory the session holds, in bytes, for memory caps.
	Size() int
	// Feed drives the session over the next in-order bytes of direction
	// dir for offline tools: the payload of a reassembled TCP segment, or
	// one UDP datagram. gap reports bytes lost before b (a capture that
	// starts mid-stream, a hole). It calls emit once per unit that b
	// completes and once per run of bytes that cannot be framed (Anomaly
	// set), in order; Dir, Anomaly and Fields describe it during emit.
	// Every PDU is committed as allowed.
	Feed(dir Dir, b []byte, gap bool, emit func())
}

// Replier is implemented by a Session whose protocol can answer a request
// itself: the engine sends the answer to a request that the policy
// denies with action reply (a Modbus exception, a DNP3 response with IIN2
// set, an OPC UA ERR), and resets the connection otherwise.
type Replier interface {
	// AppendDenyReply appends to dst the protocol's own answer to the
	// request the session last decoded, refused for why, and reports
	// whether there is one (none to a DNP3 broadcast or CONFIRM, nor on
	// an OPC UA channel that signs or encrypts: that answer would need
	// the keys). It must not allocate when dst has room (the engine
	// gives 128 bytes).
	AppendDenyReply(dst []byte, why Refusal) ([]byte, bool)
}

// Refusal is why the engine denies a request, in the terms a protocol's
// own reply can carry (Replier).
type Refusal struct {
	// Cause is what the policy refused.
	Cause Cause
	// Reason is the policy's name for it, as events carry it
	// ("function_not_allowed"), for replies that carry text.
	Reason string
}

// Cause is what a policy refused in a request, for the protocol to pick
// its reply's code. The zero value CauseOther is any refusal without a
// more precise code (a unit or link address not allowed, a response to
// nothing, ...).
type Cause uint8

// Causes.
const (
	CauseOther          Cause = iota
	CauseFunction             // the function (code, service) is not allowed
	CauseAddress              // an address or range is not allowed
	CauseValue                // a written value is not allowed
	CauseObject               // an object (DNP3 group/variation) is not allowed
	CauseService              // an OPC UA service is not allowed
	CauseNode                 // an OPC UA node is not allowed
	CauseSecurityPolicy       // the channel's security policy is not allowed
	CauseSecurityMode         // the channel's security mode is too low
	CauseMalformed            // the request is malformed
)

// Sink receives the fields of one PDU in order (Session.Fields). The JSON
// writer of `otgw dissect --json`, the map of the engine's events and the
// Record of offline tools implement it, so that all three come from the
// same rendering code. Keys are constant strings.
type Sink interface {
	Int(key string, v int)
	Str(key, v string)
	// Bytes is a string field given as bytes (not retained).
	Bytes(key string, v []byte)
	IntList(key string, v []int)
	BoolList(key string, v []bool)
	// StrList is a list of strings; List renders its items.
	StrList(key string, v List)
	// Objects is a list of object headers (group, variation).
	Objects(key string, v []Object)
}

// List is a list of strings rendered on demand, so that a Sink that writes
// bytes needs no string per item.
type List interface {
	Len() int
	// AppendItem appends the text of item i to dst.
	AppendItem(dst []byte, i int) []byte
}

// Object names one object header by group and variation (DNP3 object
// headers, IEEE 1815-2012 clause 4.2.2.7).
type Object struct {
	Group     int `json:"group"`
	Variation int `json:"variation"`
}

// Config parameterises a new Session.
type Config struct {
	// Datagram: the flow is UDP, every Feed/Decode holds whole PDUs and
	// nothing carries over to the next datagram.
	Datagram bool
	// Budget, when set, is asked before the session buffers bytes beyond
	// its fixed state (delta < 0 gives them back) and may refuse; the
	// session then reports the PDU as too large instead of growing.
	Budget func(delta int64) bool
	// Associations bounds the separate conversations (e.g. DNP3 link
	// address pairs) a session reassembles at once; 0 means the
	// protocol's default.
	Associations int
}

// Transport is a set of transports a protocol is inspected on.
type Transport uint8

// Transports.
const (
	TCP Transport = 1 << iota
	UDP
)

// Spec describes one inspected protocol, once, for every tool: the engine,
// `otgw dissect`, `otgw learn`. Each protocol package exports its Spec;
// protocols/registry lists them.
type Spec struct {
	Proto Proto
	Name  string // as in policies and output: "modbus"
	// Ports are the well-known server ports.
	Ports []uint16
	// Transports are those the protocol is inspected on.
	Transports Transport
	// Sniff, when set, recognises the protocol by the first bytes one
	// side sent and tells whether the sender is the client (Request) or
	// the server (Response), DirUnknown when the bytes do not say. It must
	// not allocate.
	Sniff func(b []byte) (Dir, bool)
	// New returns a session for one flow.
	New func(Config) Session
}

// String returns "none", "request" or "response".
func (r Role) String() string {
	switch r {
	case RoleRequest:
		return "request"
	case RoleResponse:
		return "response"
	}
	return "none"
}
