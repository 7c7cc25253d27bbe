package protocols_test

import (
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
)

// parserAnomaly is one parser enum seen through its String and Tagged.
type parserAnomaly struct {
	proto  protocols.Proto
	name   func(code int) string // the parser enum's String
	tagged func(code int) protocols.Anomaly
	known  func(code int) bool // the parser names code (its own ByName round-trips)
}

var parsers = []parserAnomaly{
	{protocols.ProtoModbus,
		func(c int) string { return modbus.Anomaly(c).String() },
		func(c int) protocols.Anomaly { return modbus.Anomaly(c).Tagged() },
		func(c int) bool { a, ok := modbus.ParseAnomaly(modbus.Anomaly(c).String()); return ok && int(a) == c }},
	{protocols.ProtoDNP3,
		func(c int) string { return dnp3.Anomaly(c).String() },
		func(c int) protocols.Anomaly { return dnp3.Anomaly(c).Tagged() },
		func(c int) bool { a, ok := dnp3.AnomalyByName(dnp3.Anomaly(c).String()); return ok && int(a) == c }},
	{protocols.ProtoOPCUA,
		func(c int) string { return opcua.Anomaly(c).String() },
		func(c int) protocols.Anomaly { return opcua.Anomaly(c).Tagged() },
		func(c int) bool { a, ok := opcua.AnomalyByName(opcua.Anomaly(c).String()); return ok && int(a) == c }},
}

// TestAnomalyNamesAreTheParsers: a typed anomaly renders exactly as the
// parser's own enum (so events, dissect lines and reports keep their
// text), keeps its protocol and code, and is found by that name; the
// parsers' "none" is AnomalyNone, rendered "".
func TestAnomalyNamesAreTheParsers(t *testing.T) {
	for _, p := range parsers {
		if a := p.tagged(0); a != protocols.AnomalyNone || a.String() != "" {
			t.Errorf("%v: none tags as %#x %q, want AnomalyNone \"\"", p.proto, uint16(a), a)
		}
		n := 0
		for c := 1; c < 0xFD; c++ {
			if !p.known(c) {
				continue
			}
			n++
			a := p.tagged(c)
			if a.String() != p.name(c) || a.Proto() != p.proto || int(a.Code()) != c {
				t.Errorf("%v code %d: %q of %v code %d, want %q", p.proto, c, a, a.Proto(), a.Code(), p.name(c))
			}
			if b, ok := protocols.AnomalyByName(p.proto, p.name(c)); !ok || b != a {
				t.Errorf("AnomalyByName(%v, %q) = %v %v, want %v", p.proto, p.name(c), b, ok, a)
			}
		}
		if names := protocols.AnomalyNames(p.proto); len(names) != n || n < 10 {
			t.Errorf("%v: %d names listed, the parser names %d", p.proto, len(names), n)
		}
	}
	if a, ok := protocols.AnomalyByName(protocols.ProtoDNP3, "crc"); !ok || a != dnp3.AnomalyDataCRC.Tagged() {
		t.Errorf("dnp3 alias crc = %v %v, want data_crc", a, ok)
	}
	// The same name in two protocols is two anomalies.
	mt, _ := protocols.AnomalyByName(protocols.ProtoModbus, "truncated")
	ut, _ := protocols.AnomalyByName(protocols.ProtoOPCUA, "truncated")
	if mt == ut || mt.String() != ut.String() {
		t.Errorf("modbus truncated %#x, opcua truncated %#x: want two values, one name", uint16(mt), uint16(ut))
	}
	for _, bad := range []string{"", "none", "malformed", "message_too_large_x", "crc"} {
		if a, ok := protocols.AnomalyByName(protocols.ProtoModbus, bad); ok {
			t.Errorf("modbus anomaly %q = %v, want none", bad, a)
		}
	}
}

// TestAnomalyReservedCodes: the codes every protocol has render their
// fixed names and are not policy names.
func TestAnomalyReservedCodes(t *testing.T) {
	for code, want := range map[uint8]string{protocols.CodeTruncated: "truncated", protocols.CodeTooLarge: "message_too_large", protocols.CodeMalformed: "malformed"} {
		for _, p := range []protocols.Proto{protocols.ProtoModbus, protocols.ProtoDNP3, protocols.ProtoOPCUA} {
			if a := protocols.NewAnomaly(p, code); a.String() != want || a.Proto() != p {
				t.Errorf("%v code %#x: %q, want %q", p, code, a, want)
			}
		}
	}
	// The engine's conditions take the parser's own anomaly of the name
	// where there is one.
	for _, tc := range []struct {
		proto protocols.Proto
		code  uint8
		want  protocols.Anomaly
	}{
		{protocols.ProtoOPCUA, protocols.CodeTooLarge, opcua.AnomalyMessageTooLarge.Tagged()},
		{protocols.ProtoModbus, protocols.CodeTruncated, modbus.AnomalyTruncated.Tagged()},
		{protocols.ProtoDNP3, protocols.CodeTruncated, protocols.NewAnomaly(protocols.ProtoDNP3, protocols.CodeTruncated)},
		{protocols.ProtoModbus, protocols.CodeTooLarge, protocols.NewAnomaly(protocols.ProtoModbus, protocols.CodeTooLarge)},
	} {
		if got := protocols.CommonAnomaly(tc.proto, tc.code); got != tc.want {
			t.Errorf("CommonAnomaly(%v, %#x) = %#x, want %#x", tc.proto, tc.code, uint16(got), uint16(tc.want))
		}
	}
	if s := protocols.NewAnomaly(protocols.ProtoModbus, 200).String(); s != "anomaly_200" {
		t.Errorf("unnamed code: %q", s)
	}
}

// TestAnomalyAllocatesNothing: converting and naming an anomaly (the hot
// path converts; events name) allocate nothing.
func TestAnomalyAllocatesNothing(t *testing.T) {
	var sink int
	if allocs := testing.AllocsPerRun(100, func() {
		a := modbus.AnomalyTIDMismatch.Tagged()
		b := dnp3.AnomalySeqMismatch.Tagged()
		c := opcua.AnomalyBadNodeID.Tagged()
		sink += len(a.String()) + len(b.String()) + len(c.String())
	}); allocs != 0 {
		t.Errorf("Tagged and String allocate %v times per run, want 0", allocs)
	}
	_ = sink
}

// TestRegister: a protocol not built in gets a fresh number and its
// names; names and built-in numbers cannot be registered twice.
func TestRegister(t *testing.T) {
	// Registered at test time, before any reader: this test binary only.
	p := protocols.Register(protocols.ProtoNone, "test_proto", protocols.Vocabulary{Anomalies: []string{"", "odd"}})
	if p <= protocols.ProtoOPCUA || p.String() != "test_proto" || protocols.NewAnomaly(p, 1).String() != "odd" {
		t.Fatalf("registered %d %q", p, p)
	}
	for name, f := range map[string]func(){
		"same name":     func() { protocols.Register(protocols.ProtoNone, "test_proto", protocols.Vocabulary{}) },
		"built-in name": func() { protocols.Register(protocols.ProtoNone, "modbus", protocols.Vocabulary{}) },
		"built-in twice": func() {
			protocols.Register(protocols.ProtoModbus, "modbus", protocols.Vocabulary{Anomalies: []string{""}})
		},
		"wrong built-in": func() { protocols.Register(protocols.ProtoDNP3, "other", protocols.Vocabulary{}) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: Register did not panic", name)
				}
			}()
			f()
		}()
	}
}
