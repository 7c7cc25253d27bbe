package dnp3

import (
	"testing"
)

// pduCases are the PDU types measured by the benchmarks and the
// allocation tests: link frame bytes and the fragment they carry.
func pduCases() []struct {
	name       string
	frame      []byte
	apdu       []byte
	fromMaster bool
} {
	crob := CROB{Code: CROBLatchOn, Count: 1, OnMs: 100}
	resp := AppendResponseHeader(nil, 1, FuncResponse, 0, false)
	resp = AppendRangeHeader(resp, 1, 2, 0, 15)
	resp = append(resp, make([]byte, 16)...)
	resp = AppendRangeHeader(resp, 30, 1, 0, 39)
	resp = append(resp, make([]byte, 200)...)
	events := AppendResponseHeader(nil, 2, FuncUnsolicitedResp, IINClass1, true)
	events = append(events, 2, 2, 0x28, 8, 0)
	for i := range 8 {
		events = append(events, byte(i), 0, 0x81, 1, 2, 3, 4, 5, 6)
	}
	cases := []struct {
		name       string
		frame      []byte
		apdu       []byte
		fromMaster bool
	}{
		{"read_class0123", nil, AppendReadClass0123(nil, 1), true},
		{"select_crob", nil, AppendCROB(nil, 2, FuncSelect, 5, crob), true},
		{"response_static", nil, resp, false},
		{"unsolicited_events", nil, events, false},
		{"confirm", nil, AppendConfirm(nil, 3, false), true},
	}
	for i := range cases {
		ctrl := CtrlOutstationData
		if cases[i].fromMaster {
			ctrl = CtrlMasterData
		}
		cases[i].frame = AppendLinkFrames(nil, ctrl, 10, 1, cases[i].apdu)
	}
	return cases
}

// linkOnly is a REQUEST_LINK_STATUS frame.
var linkOnly = AppendLinkFrame(nil, CtrlMasterLinkStatus, 10, 1, nil)

func TestAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation allocates")
	}
	for _, c := range pduCases() {
		t.Run(c.name, func(t *testing.T) {
			var f LinkFrame
			var r Reassembler
			var fr Fragment
			var fm Framer
			checks := []struct {
				name string
				fn   func()
			}{
				{"Framer.Next", func() { fm.Next(c.frame) }},
				{"LinkFrame.Decode", func() { f.Decode(c.frame) }},
				{"Reassembler.Add", func() {
					f.Decode(c.frame)
					r.Add(f.UserData())
				}},
				{"Fragment.Decode", func() { fr.Decode(c.apdu, c.fromMaster) }},
			}
			for _, ch := range checks {
				if got := testing.AllocsPerRun(100, ch.fn); got != 0 {
					t.Errorf("%s: %v allocations per run, want 0", ch.name, got)
				}
			}
		})
	}
	var fr Fragment
	bad := []byte{0xC0, 0x81, 0, 0, 99, 1, 0, 0, 0}
	if got := testing.AllocsPerRun(100, func() { fr.Decode(bad, false) }); got != 0 {
		t.Errorf("Fragment.Decode of an unknown object: %v allocations", got)
	}
}

func BenchmarkFramerNext(b *testing.B) {
	for _, c := range pduCases() {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.frame)))
			var fm Framer
			for b.Loop() {
				fm.Next(c.frame)
			}
		})
	}
}

func BenchmarkLinkFrameDecode(b *testing.B) {
	cases := pduCases()
	cases = append(cases, struct {
		name       string
		frame      []byte
		apdu       []byte
		fromMaster bool
	}{"link_only", linkOnly, nil, true})
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.frame)))
			var f LinkFrame
			for b.Loop() {
				f.Decode(c.frame)
			}
		})
	}
}

func BenchmarkReassembler(b *testing.B) {
	for _, c := range pduCases() {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var f LinkFrame
			var segs [][]byte
			for rest := c.frame; len(rest) > 0; {
				n, _, _ := Framer{}.Next(rest)
				f.Decode(rest[:n])
				segs = append(segs, append([]byte(nil), f.UserData()...))
				rest = rest[n:]
			}
			var r Reassembler
			for b.Loop() {
				for _, s := range segs {
					r.Add(s)
				}
			}
		})
	}
}

func BenchmarkFragmentDecode(b *testing.B) {
	for _, c := range pduCases() {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.apdu)))
			var fr Fragment
			for b.Loop() {
				fr.Decode(c.apdu, c.fromMaster)
			}
		})
	}
}
