package protocols

import "strconv"

// Anomaly is a parser anomaly of any inspected protocol: the protocol in
// the high byte, the code of the parser's own anomaly enum in the low
// byte. It is comparable and allocation-free: sessions report it
// (Session.Anomaly, FramingAnomaly), rules match tolerate lists against
// it and verdicts carry it; its name (String) is needed only at the edges
// (policies, events, dissect output). The zero value AnomalyNone means
// well formed; a parser's own "none" converts to it (NewAnomaly).
type Anomaly uint16

// AnomalyNone is the absence of an anomaly.
const AnomalyNone Anomaly = 0

// Codes every protocol has, at the top of the code range, which no
// vocabulary uses: what the engine or a session reports whatever the
// parser. Policies cannot name them (a vocabulary may have an anomaly of
// the same name, e.g. OPC UA message_too_large, under its own code).
const (
	// CodeTruncated: a datagram ends inside a PDU ("truncated").
	CodeTruncated uint8 = 0xFD + iota
	// CodeTooLarge: a PDU larger than the engine may hold
	// ("message_too_large").
	CodeTooLarge
	// CodeMalformed: bytes the vocabulary has no name for ("malformed").
	CodeMalformed

	firstReserved = CodeTruncated
)

// reservedNames are the names of the codes from firstReserved.
var reservedNames = [...]string{"truncated", "message_too_large", "malformed"}

// NewAnomaly returns the anomaly code of protocol p, AnomalyNone for
// code 0. Parsers wrap it in a method of their enum (modbus.Anomaly.Tagged).
func NewAnomaly(p Proto, code uint8) Anomaly {
	if code == 0 {
		return AnomalyNone
	}
	return Anomaly(p)<<8 | Anomaly(code)
}

// CommonAnomaly returns protocol p's anomaly for a condition the engine
// finds whatever the parser (code CodeTruncated, CodeTooLarge or
// CodeMalformed): the parser's own anomaly of that name when its
// vocabulary has one (OPC UA message_too_large, Modbus truncated), so
// that a policy tolerating it tolerates both alike, else the code
// itself. It allocates nothing (off the per-PDU path: a PDU too large
// to hold, a datagram that ends inside one).
func CommonAnomaly(p Proto, code uint8) Anomaly {
	a := NewAnomaly(p, code)
	if code < firstReserved {
		return a
	}
	if b, ok := AnomalyByName(p, a.String()); ok {
		return b
	}
	return a
}

// Proto returns the protocol whose parser reports a.
func (a Anomaly) Proto() Proto { return Proto(a >> 8) }

// Code returns a's code in its protocol's anomaly enum.
func (a Anomaly) Code() uint8 { return uint8(a) }

// String returns the anomaly's name in its protocol's vocabulary (the
// parser enum's String: "tid_mismatch", "link_crc"), "" for AnomalyNone,
// the names above for the codes every protocol has, and "anomaly_N" for
// a code the vocabulary does not name. It does not allocate for named anomalies.
func (a Anomaly) String() string {
	if a == AnomalyNone {
		return ""
	}
	c := a.Code()
	if c >= firstReserved {
		return reservedNames[c-firstReserved]
	}
	if p := a.Proto(); p < MaxProtos {
		if n := protoTable[p].vocab.Anomalies; int(c) < len(n) && n[c] != "" {
			return n[c]
		}
	}
	return "anomaly_" + strconv.Itoa(int(c))
}

// AnomalyByName returns the anomaly of protocol p that a policy names
// name (its name or an alias), and whether there is one.
func AnomalyByName(p Proto, name string) (Anomaly, bool) {
	if p >= MaxProtos || name == "" {
		return AnomalyNone, false
	}
	v := &protoTable[p].vocab
	for c := 1; c < len(v.Anomalies) && c < int(firstReserved); c++ {
		if v.Anomalies[c] == name {
			return NewAnomaly(p, uint8(c)), true
		}
	}
	if c, ok := v.Aliases[name]; ok && c != 0 && c < firstReserved {
		return NewAnomaly(p, c), true
	}
	return AnomalyNone, false
}

// AnomalyNames returns the names of protocol p's anomalies in code order
// (allocates; for policy checks and schemas).
func AnomalyNames(p Proto) []string {
	if p >= MaxProtos {
		return nil
	}
	var out []string
	for c, n := range protoTable[p].vocab.Anomalies {
		if c > 0 && c < int(firstReserved) && n != "" {
			out = append(out, n)
		}
	}
	return out
}
