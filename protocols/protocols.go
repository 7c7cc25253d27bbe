package protocols

// Proto names an inspected industrial protocol.
type Proto uint8

// Inspected protocols. The zero value is ProtoNone.
const (
	ProtoNone Proto = iota
	ProtoModbus
	ProtoDNP3
	ProtoOPCUA
)

// String returns the name used in dissect output and policies.
func (p Proto) String() string {
	switch p {
	case ProtoModbus:
		return "modbus"
	case ProtoDNP3:
		return "dnp3"
	case ProtoOPCUA:
		return "opcua"
	}
	return "none"
}

// Dir is the direction of a PDU relative to the session roles: a Request
// travels from the initiator (client, master) to the responder (server,
// outstation), a Response the other way. The zero value is DirUnknown.
type Dir uint8

// Directions.
const (
	DirUnknown Dir = iota
	Request
	Response
)

// String returns "request", "response" or "unknown".
func (d Dir) String() string {
	switch d {
	case Request:
		return "request"
	case Response:
		return "response"
	}
	return "unknown"
}

// Reverse returns the opposite direction.
func (d Dir) Reverse() Dir {
	switch d {
	case Request:
		return Response
	case Response:
		return Request
	}
	return DirUnknown
}

// KV is one named field of a Record, in output order.
type KV struct {
	Key   string
	Value any
}

// Record describes one application PDU for offline tools. Fields hold the
// protocol-specific fields named in DESIGN.md ("otgw dissect"), in the order
// they are printed; the caller adds frame, time, src, dst and proto.
type Record struct {
	Dir     Dir
	Fields  []KV
	Anomaly string // empty when the PDU is well formed
}

// Get returns the value of the named field and whether it is present.
func (r *Record) Get(key string) (any, bool) {
	for _, kv := range r.Fields {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// Conn follows one connection (TCP) or one UDP flow, both directions, for
// offline tools. Implementations are not safe for concurrent use.
type Conn interface {
	// Feed gives the next in-order bytes of one direction: the payload of a
	// TCP segment after reassembly, or one UDP datagram. gap reports that
	// bytes were lost before b (capture started mid-stream, or a hole in the
	// capture), so the framer must resynchronise. emit is called once per
	// application PDU that b completes, in order; the Record must not be
	// retained by the Conn after emit returns.
	Feed(dir Dir, b []byte, gap bool, emit func(Record))
}
