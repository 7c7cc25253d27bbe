package registry

import (
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
)

// TestSpecs: every registered protocol is described completely and once,
// and the registry hands out sessions only for the transports it names.
func TestSpecs(t *testing.T) {
	seen := map[protocols.Proto]bool{}
	for _, s := range All() {
		if s.Proto == protocols.ProtoNone || seen[s.Proto] {
			t.Fatalf("%s: Proto %v missing or registered twice", s.Name, s.Proto)
		}
		seen[s.Proto] = true
		if s.Name != s.Proto.String() || ByName(s.Name) != s || Lookup(s.Proto) != s {
			t.Errorf("%s: name %q, Proto.String %q: lookups disagree", s.Name, s.Name, s.Proto.String())
		}
		if len(s.Ports) == 0 || s.Transports == 0 || s.New == nil {
			t.Errorf("%s: ports %v, transports %v, constructor set %v", s.Name, s.Ports, s.Transports, s.New != nil)
		}
		for _, p := range s.Ports {
			if DefaultPorts()[p] != s.Proto {
				t.Errorf("%s: port %d not in DefaultPorts", s.Name, p)
			}
		}
		for _, tr := range []protocols.Transport{protocols.TCP, protocols.UDP} {
			got := New(s.Proto, tr, protocols.Config{})
			if (got != nil) != (s.Transports&tr != 0) {
				t.Errorf("%s: New on transport %v = %v, transports %v", s.Name, tr, got, s.Transports)
			}
			if got != nil && got.Size() <= 0 {
				t.Errorf("%s: session size %d", s.Name, got.Size())
			}
		}
	}
	if New(protocols.ProtoNone, protocols.TCP, protocols.Config{}) != nil || ByName("profinet") != nil {
		t.Error("an unregistered protocol got a session or a Spec")
	}
}

// TestSniff: content detection tries every protocol, and a detector
// claims only its own protocol's bytes.
func TestSniff(t *testing.T) {
	for _, tc := range []struct {
		name  string
		b     []byte
		proto protocols.Proto
		dir   protocols.Dir
	}{
		{"modbus read request", []byte{0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10}, protocols.ProtoModbus, protocols.Request},
		{"opcua hello", append([]byte("HELF"), 32, 0, 0, 0), protocols.ProtoOPCUA, protocols.Request},
		{"dnp3 read from master", dnp3.AppendLinkFrames(nil, dnp3.CtrlDIR|dnp3.CtrlPRM|0x04, 10, 1,
			dnp3.AppendAllHeader(dnp3.AppendRequestHeader(nil, 1, dnp3.FuncRead), 60, 1)), protocols.ProtoDNP3, protocols.Request},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.6\r\n"), protocols.ProtoNone, protocols.DirUnknown},
	} {
		p, d, ok := Sniff(tc.b)
		if p != tc.proto || d != tc.dir || ok != (tc.proto != protocols.ProtoNone) {
			t.Errorf("%s: Sniff = %v %v %v, want %v %v", tc.name, p, d, ok, tc.proto, tc.dir)
		}
	}
}
