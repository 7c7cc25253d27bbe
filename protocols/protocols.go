package protocols

// Proto names an inspected industrial protocol. The built-in protocols
// have constants; any other gets its number from Register when its
// package initialises.
type Proto uint8

// Inspected protocols. The zero value is ProtoNone.
const (
	ProtoNone Proto = iota
	ProtoModbus
	ProtoDNP3
	ProtoOPCUA
	numBuiltin
)

// MaxProtos bounds the inspected protocols (ProtoNone included).
const MaxProtos = 16

// Vocabulary is a protocol's anomaly names: what its parser reports
// (Session.Anomaly, rendered by Anomaly.String) and what a policy's
// tolerate list may name.
type Vocabulary struct {
	// Anomalies holds the name of each anomaly code, by code; code 0
	// (none) has no name.
	Anomalies []string
	// Aliases are other spellings a policy may use (DNP3 "crc").
	Aliases map[string]uint8
}

// protoInfo is what Register recorded about one protocol.
type protoInfo struct {
	name  string
	vocab Vocabulary
}

// protoTable holds, by Proto, the registered protocols. It is written
// only while packages initialise (Register), read-only after.
var (
	protoTable = [MaxProtos]protoInfo{
		ProtoModbus: {name: "modbus"},
		ProtoDNP3:   {name: "dnp3"},
		ProtoOPCUA:  {name: "opcua"},
	}
	nextProto = numBuiltin
)

// Register records an inspected protocol's name (as in policies and
// output: "modbus") and anomaly vocabulary, and returns its Proto: p for
// a built-in protocol (ProtoModbus, ProtoDNP3, ProtoOPCUA), the next free
// number when p is ProtoNone. A protocol package calls it once, from a
// package-level variable or init, so that its Spec, its sessions'
// anomalies and the rule section that reads them share the number:
//
//	var proto = protocols.Register(protocols.ProtoNone, "foo", protocols.Vocabulary{Anomalies: names[:]})
//
// It panics (a programmer error) on a second registration of a name or
// of a built-in number, and past MaxProtos protocols.
func Register(p Proto, name string, v Vocabulary) Proto {
	for q := Proto(1); q < MaxProtos; q++ {
		if protoTable[q].name == name && q != p {
			panic("protocols: " + name + " registered twice")
		}
	}
	switch {
	case p == ProtoNone:
		if nextProto >= MaxProtos {
			panic("protocols: more than MaxProtos protocols")
		}
		p = nextProto
		nextProto++
	case p >= numBuiltin || protoTable[p].name != name:
		panic("protocols: " + name + " is not a built-in protocol")
	case protoTable[p].vocab.Anomalies != nil:
		panic("protocols: " + name + " registered twice")
	}
	protoTable[p] = protoInfo{name: name, vocab: v}
	return p
}

// String returns the name used in dissect output and policies ("none"
// for ProtoNone and unregistered numbers).
func (p Proto) String() string {
	if p < MaxProtos && protoTable[p].name != "" {
		return protoTable[p].name
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
// anomaly's name ("" when well formed). Values are int, string, []string
// or []Object.
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
	r := Record{Dir: s.Dir(), Anomaly: s.Anomaly().String()}
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
