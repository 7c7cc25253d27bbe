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

// Record describes one application PDU for offline tools: its direction,
// its fields as Session.Fields renders them (Record is a Sink) and its
// anomaly ("" when well formed). Values are int, string, []string or
// []Object.
type Record struct {
	Dir     Dir
	Fields  []KV
	Anomaly string
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

// NewRecord renders the last unit s decoded as a Record (allocates).
func NewRecord(s Session) Record {
	r := Record{Dir: s.Dir(), Anomaly: s.Anomaly()}
	s.Fields(&r)
	return r
}

// Int implements Sink.
func (r *Record) Int(key string, v int) { r.Fields = append(r.Fields, KV{key, v}) }

// Str implements Sink.
func (r *Record) Str(key, v string) { r.Fields = append(r.Fields, KV{key, v}) }

// Bytes implements Sink.
func (r *Record) Bytes(key string, v []byte) { r.Fields = append(r.Fields, KV{key, string(v)}) }

// IntList implements Sink.
func (r *Record) IntList(key string, v []int) {
	r.Fields = append(r.Fields, KV{key, append([]int(nil), v...)})
}

// BoolList implements Sink.
func (r *Record) BoolList(key string, v []bool) {
	r.Fields = append(r.Fields, KV{key, append([]bool(nil), v...)})
}

// StrList implements Sink.
func (r *Record) StrList(key string, v List) { r.Fields = append(r.Fields, KV{key, Strings(v)}) }

// Objects implements Sink.
func (r *Record) Objects(key string, v []Object) {
	r.Fields = append(r.Fields, KV{key, append(make([]Object, 0, len(v)), v...)})
}

// Strings returns the items of l as strings (allocates).
func Strings(l List) []string {
	out := make([]string, l.Len())
	var buf []byte
	for i := range out {
		buf = l.AppendItem(buf[:0], i)
		out[i] = string(buf)
	}
	return out
}
