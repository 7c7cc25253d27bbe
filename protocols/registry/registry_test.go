package registry

import (
	"slices"
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

// TestRegister: a protocol added with Register is found by every lookup
// and tried after OPC UA and DNP3 and before Modbus; an incomplete Spec,
// a Spec whose name is not its Proto's, and a second registration of a
// Proto or a name panic.
func TestRegister(t *testing.T) {
	saved := slices.Clone(specs)
	t.Cleanup(func() { specs = saved })
	proto := protocols.Register(protocols.ProtoNone, "regtest", protocols.Vocabulary{})
	newSess := func(protocols.Config) protocols.Session {
		return New(protocols.ProtoModbus, protocols.TCP, protocols.Config{})
	}
	s := &protocols.Spec{Proto: proto, Name: "regtest", Ports: []uint16{7777}, Transports: protocols.TCP, New: newSess,
		Sniff: func(b []byte) (protocols.Dir, bool) { return protocols.Request, string(b) == "RT" }}
	if Register(s) != s {
		t.Fatal("Register did not return its Spec")
	}
	if got := Names(); !slices.Equal(got, []string{"opcua", "dnp3", "regtest", "modbus"}) {
		t.Fatalf("detection order %v, want opcua dnp3 regtest modbus", got)
	}
	if Lookup(proto) != s || ByName("regtest") != s || DefaultPorts()[7777] != proto {
		t.Fatal("a registered Spec is not found by Lookup, ByName or DefaultPorts")
	}
	if p, d, ok := Sniff([]byte("RT")); p != proto || d != protocols.Request || !ok {
		t.Fatalf("Sniff = %v %v %v, want regtest request", p, d, ok)
	}
	for _, tc := range []struct {
		name string
		s    *protocols.Spec
	}{
		{"nil", nil},
		{"no constructor", &protocols.Spec{Proto: proto, Name: "regtest"}},
		{"name not its Proto's", &protocols.Spec{Proto: proto, Name: "other", New: newSess}},
		{"Proto twice", &protocols.Spec{Proto: proto, Name: "regtest", New: newSess}},
		{"built-in twice", &protocols.Spec{Proto: protocols.ProtoModbus, Name: "modbus", New: newSess}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%s) did not panic", tc.name)
				}
			}()
			Register(tc.s)
		})
	}
	if len(specs) != len(saved)+1 {
		t.Fatalf("%d protocols after refused registrations, want %d", len(specs), len(saved)+1)
	}
}
