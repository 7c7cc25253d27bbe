package gateway

// The tolerate invariant, as a property of the whole engine: a tolerated
// anomaly may let a PDU through unread only where the rule does not
// restrict what was unread.
//
// A policy may tolerate a parser anomaly (per rule or per conduit) so that
// PDUs carrying it are not denied as malformed. An anomaly can also mean
// the parser could not read the very fields a rule restricts (Modbus
// addresses, sub-functions and written values, DNP3 function codes and
// object headers, OPC UA service type ids and the NodeIds of Write and
// Call); if such a field defaulted to "empty" the rule's check would pass
// and a forbidden action cross. The tests below generate, from a fixed
// seed, thousands of requests that a restrictive rule must refuse, mutate
// each so that the parser reports an anomaly (truncation at every byte
// offset, byte counts and lengths that disagree, bad qualifiers, ranges,
// NodeId encodings and array lengths, chunk limits, interleaved chunks),
// and send it on a fresh connection through the engine under a policy
// that tolerates every anomaly of the protocol, once at rule level and
// once at conduit level. A mutated request that carries an anomaly must
// not cross whole: either its restricted fields were read, and they are
// forbidden, or they were not, and the rule cannot allow what it did not
// read. Controls check that tolerating still lets through anomalous
// requests whose restricted fields were read and allowed.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strings"
	"testing"

	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/capture"
)

// tolerateSeed seeds every generator below; change it to explore.
const tolerateSeed = 0x7011e7a7e

// tolMut is one generated case: a request the policy refuses, mutated.
type tolMut struct {
	desc    string // generator and mutation, for the failure message
	payload []byte // the bytes the client sends (one or more PDUs)
}

// tolJudged is one PDU of the client the engine judged.
type tolJudged struct {
	anomaly string
	action  rules.Action
	reason  rules.Reason
}

// tolRig drives an engine with one policy through fresh connections.
type tolRig struct {
	*rig
	t      *testing.T
	mk     func() *rules.Ruleset
	srv    capture.Endpoint
	setup  [][2][]byte // OPC UA: client/server exchanges before the case
	conns  int
	judged []tolJudged
}

func newTolRig(t *testing.T, mk func() *rules.Ruleset, srv capture.Endpoint, setup [][2][]byte) *tolRig {
	tr := &tolRig{t: t, mk: mk, srv: srv, setup: setup}
	tr.fresh()
	return tr
}

// fresh starts a new engine (the flow table is bounded).
func (tr *tolRig) fresh() {
	tr.rig = newRig(tr.t, tr.mk(), func(c *Config) {
		c.OnVerdict = func(d *Decision) {
			// Only the client sends during a case: every PDU judged is
			// one of its, whatever direction its own header claims.
			if d.PDU != nil {
				tr.judged = append(tr.judged, tolJudged{d.PDU.Anomaly.String(), d.Verdict.Action, d.Verdict.Reason})
			}
		}
	})
}

// run sends payload from the client on a new connection and returns how
// many of its bytes reached the server and the request PDUs judged.
func (tr *tolRig) run(payload []byte) (int, []tolJudged) {
	tr.conns++
	if tr.conns%8000 == 0 {
		tr.fresh()
	}
	port := uint16(1024 + tr.conns%60000)
	f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netip.AddrPortFrom(hmiEP.Addr.Addr(), port)}, tr.srv)
	tr.handshake(f)
	for i, s := range tr.setup {
		for k, b := range s {
			if b == nil {
				continue
			}
			fr := f.Send(k == 0, b)
			in, out := North, South
			if k == 1 {
				in, out = South, North
			}
			got := tr.handle(in, fr)
			if len(got) != 1 || got[0].out != out {
				tr.t.Fatalf("setup step %d: got %s", i, describe(got))
			}
		}
	}
	tr.judged = tr.judged[:0]
	got := tr.client(f.Send(true, payload))
	crossed := 0
	for _, s := range got {
		if s.out == South {
			var p seg
			if err := p.pkt.Decode(s.frame, packet.LinkEthernet); err == nil {
				crossed += len(p.pkt.Payload)
			}
		}
	}
	return crossed, append([]tolJudged(nil), tr.judged...)
}

// tolReport counts cases by the anomaly the parser reported.
type tolReport struct {
	cases, anomalous, wellFormed int
	byAnomaly, bypassBy          map[string]int
	bypasses                     []string
}

func (rep *tolReport) String() string {
	var names []string
	for n := range rep.byAnomaly {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, " %s=%d", n, rep.byAnomaly[n])
	}
	if len(rep.bypasses) > 0 {
		fmt.Fprintf(&b, "; %d bypasses by anomaly: %v", len(rep.bypasses), rep.bypassBy)
	}
	return fmt.Sprintf("%d cases, %d anomalous, %d well formed after mutation; by anomaly:%s", rep.cases, rep.anomalous, rep.wellFormed, b.String())
}

// checkInvariant runs every case through tr and asserts the invariant:
// a case whose requests carried an anomaly never crosses whole.
func checkInvariant(t *testing.T, tr *tolRig, cases []tolMut) *tolReport {
	t.Helper()
	rep := &tolReport{byAnomaly: map[string]int{}, bypassBy: map[string]int{}}
	for _, c := range cases {
		crossed, judged := tr.run(c.payload)
		rep.cases++
		anomaly := ""
		for _, j := range judged {
			if j.anomaly != "" {
				anomaly = j.anomaly
				break
			}
		}
		if anomaly == "" {
			rep.wellFormed++
			continue
		}
		rep.anomalous++
		rep.byAnomaly[anomaly]++
		if crossed == len(c.payload) {
			rep.bypassBy[anomaly]++
			rep.bypasses = append(rep.bypasses, fmt.Sprintf("%s: anomaly %s tolerated, all %d bytes crossed (%x)", c.desc, anomaly, len(c.payload), c.payload))
		}
	}
	shown := map[string]int{}
	for _, b := range rep.bypasses {
		// The first three of each anomaly.
		a := b[strings.Index(b, ": anomaly ")+10:]
		a = a[:strings.IndexByte(a, ' ')]
		if shown[a]++; shown[a] <= 3 {
			t.Errorf("bypass: %s", b)
		}
	}
	t.Logf("%s", rep)
	return rep
}

// wantAnomalies fails unless every name in want was reported by some case.
func wantAnomalies(t *testing.T, rep *tolReport, want ...string) {
	t.Helper()
	for _, w := range want {
		if rep.byAnomaly[w] == 0 {
			t.Errorf("no generated case made the parser report %s", w)
		}
	}
}

// anomalyList returns the names of a parser's anomalies that a policy may
// tolerate (rules.Tolerable: not those of bytes that cannot be framed,
// which are denied whatever the policy says).
func anomalyList(proto protocols.Proto, name func(i int) (string, bool)) string {
	var out []string
	for i := 1; i < 256; i++ {
		if n, ok := name(i); ok && rules.Tolerable(proto, n) == "" {
			out = append(out, n)
		}
	}
	return strings.Join(out, ", ")
}

// tolPolicy wraps a rule body (YAML at 6 spaces) in a conduit, with the
// tolerate list on the rule (level "rule") or on the conduit.
func tolPolicy(t *testing.T, level, from, to, proto, tolerate, body string) *rules.Ruleset {
	t.Helper()
	c := "  - name: tol\n    from: " + from + "\n    to: " + to + "\n"
	if level == "conduit" {
		c += "    tolerate: [" + tolerate + "]\n"
	}
	c += "    rules:\n      - " + proto + ":\n"
	if level == "rule" {
		c += "          tolerate: [" + tolerate + "]\n"
	}
	c += body
	return policy(t, "enforce", "reset", "", c)
}

// ---- Modbus ----

const tolModbusRule = `          units: [1]
          allow:
            - read: holding 0-99
            - read: coils 0-15
            - write: holding 0-9
            - write: holding 40-49
              values: 0-1000
            - write: coils 0-7
            - function: 8/0
            - function: 43/14
`

// mbForbidden returns the PDU (function code and data) of a request the
// Modbus rule above refuses: its start address, unit, function,
// sub-function or one written value is forbidden, so that no change of
// the quantity or byte count can make it allowed.
func mbForbidden(r *rand.Rand) (unit uint8, pdu []byte, desc string) {
	unit = 1
	badAddr := func(qty int) uint16 { // a start address no write or read allows
		for {
			a := 10 + r.IntN(65536-10-qty)
			if (a < 40 || a > 49) && a >= 16 {
				return uint16(a)
			}
		}
	}
	vals := func(n int, lo, hi int) []uint16 {
		v := make([]uint16, n)
		for i := range v {
			v[i] = uint16(lo + r.IntN(hi-lo+1))
		}
		return v
	}
	switch k := r.IntN(14); k {
	case 0:
		q := 1 + r.IntN(125)
		a := 100 + r.IntN(65536-100-q)
		return unit, modbus.AppendAddrQty(nil, 3, uint16(a), uint16(q)), fmt.Sprintf("fc3 addr %d qty %d", a, q)
	case 1:
		q := 1 + r.IntN(2000)
		a := 16 + r.IntN(65536-16-q)
		return unit, modbus.AppendAddrQty(nil, 1, uint16(a), uint16(q)), fmt.Sprintf("fc1 addr %d qty %d", a, q)
	case 2:
		fc := []uint8{2, 4}[r.IntN(2)]
		return unit, modbus.AppendAddrQty(nil, fc, uint16(r.IntN(100)), uint16(1+r.IntN(10))), fmt.Sprintf("fc%d (no rule)", fc)
	case 3:
		a := badAddr(1)
		return unit, modbus.AppendWriteSingleRegister(nil, a, uint16(r.IntN(65536))), fmt.Sprintf("fc6 addr %d", a)
	case 4:
		a := 40 + r.IntN(10)
		v := 1001 + r.IntN(64535)
		return unit, modbus.AppendWriteSingleRegister(nil, uint16(a), uint16(v)), fmt.Sprintf("fc6 addr %d value %d", a, v)
	case 5:
		a := 8 + r.IntN(65528)
		return unit, modbus.AppendWriteSingleCoil(nil, uint16(a), r.IntN(2) == 0), fmt.Sprintf("fc5 addr %d", a)
	case 6:
		q := 1 + r.IntN(100)
		a := 8 + r.IntN(65536-8-q)
		bits := make([]bool, q)
		for i := range bits {
			bits[i] = r.IntN(2) == 0
		}
		return unit, modbus.AppendWriteMultipleCoils(nil, uint16(a), bits), fmt.Sprintf("fc15 addr %d qty %d", a, q)
	case 7:
		q := 1 + r.IntN(40)
		a := badAddr(q)
		return unit, modbus.AppendWriteMultipleRegisters(nil, a, vals(q, 0, 1000)), fmt.Sprintf("fc16 addr %d qty %d", a, q)
	case 8:
		a := 40 + r.IntN(10)
		q := 1 + r.IntN(50-a)
		v := vals(q, 0, 1000)
		bad := r.IntN(q)
		v[bad] = uint16(1001 + r.IntN(64535))
		return unit, modbus.AppendWriteMultipleRegisters(nil, uint16(a), v), fmt.Sprintf("fc16 addr %d qty %d value[%d]=%d", a, q, bad, v[bad])
	case 9:
		a := uint16(40 + r.IntN(10)) // values restricted there: a mask write's are unknown
		if r.IntN(2) == 0 {
			a = badAddr(1)
		}
		return unit, modbus.AppendMaskWriteRegister(nil, a, uint16(r.IntN(65536)), uint16(r.IntN(65536))), fmt.Sprintf("fc22 addr %d", a)
	case 10:
		wq := 1 + r.IntN(10)
		if r.IntN(2) == 0 {
			ra := 100 + r.IntN(1000)
			return unit, modbus.AppendReadWriteMultipleRegisters(nil, uint16(ra), uint16(1+r.IntN(20)), 0, vals(wq, 0, 65535)), fmt.Sprintf("fc23 read addr %d", ra)
		}
		if r.IntN(2) == 0 {
			wa := 40 + r.IntN(10)
			wq = 1 + r.IntN(50-wa)
			v := vals(wq, 0, 1000)
			bad := r.IntN(wq)
			v[bad] = uint16(1001 + r.IntN(64535))
			return unit, modbus.AppendReadWriteMultipleRegisters(nil, 0, uint16(1+r.IntN(20)), uint16(wa), v), fmt.Sprintf("fc23 write addr %d qty %d value[%d]=%d", wa, wq, bad, v[bad])
		}
		wa := badAddr(wq)
		return unit, modbus.AppendReadWriteMultipleRegisters(nil, 0, uint16(1+r.IntN(20)), wa, vals(wq, 0, 1000)), fmt.Sprintf("fc23 write addr %d", wa)
	case 11:
		sub := []uint16{1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20}[r.IntN(14)]
		return unit, modbus.AppendDiagnostics(nil, sub, []uint16{0}), fmt.Sprintf("fc8 sub %d", sub)
	case 12:
		if r.IntN(2) == 0 {
			return unit, modbus.AppendPDU(nil, 43, uint8(13), []byte{byte(r.IntN(256)), byte(r.IntN(256))}), "fc43 mei 13"
		}
		fc := []uint8{7, 11, 12, 17, 24}[r.IntN(5)]
		if fc == 24 {
			return unit, modbus.AppendPDU(nil, fc, uint16(r.IntN(100))), "fc24 (no rule)"
		}
		return unit, modbus.AppendPDU(nil, fc), fmt.Sprintf("fc%d (no rule)", fc)
	default:
		return 2, modbus.AppendAddrQty(nil, 3, uint16(r.IntN(90)), uint16(1+r.IntN(10))), "unit 2"
	}
}

// mbMutations returns mutations of pdu that make the Modbus parser report
// an anomaly: truncation at every offset, extra bytes, byte counts and
// quantities that disagree, bad coil values and sub-functions.
func mbMutations(r *rand.Rand, pdu []byte) []struct {
	name string
	pdu  []byte
} {
	type m = struct {
		name string
		pdu  []byte
	}
	var out []m
	for k := 1; k < len(pdu); k++ {
		out = append(out, m{fmt.Sprintf("truncated to %d bytes", k), bytes.Clone(pdu[:k])})
	}
	extra := append(bytes.Clone(pdu), make([]byte, 1+r.IntN(4))...)
	for i := len(pdu); i < len(extra); i++ {
		extra[i] = byte(r.IntN(256))
	}
	out = append(out, m{"extra bytes", extra})
	fc := pdu[0]
	set16 := func(off int, v uint16) []byte {
		b := bytes.Clone(pdu)
		if off+2 <= len(b) {
			binary.BigEndian.PutUint16(b[off:], v)
		}
		return b
	}
	bcOff := map[uint8]int{15: 5, 16: 5, 23: 9}
	if off, ok := bcOff[fc]; ok && off < len(pdu) {
		b := bytes.Clone(pdu)
		b[off] = byte(int(b[off]) + 1 + r.IntN(255))
		out = append(out, m{"byte count changed", b})
		qOff := 3
		if fc == 23 {
			qOff = 7
		}
		out = append(out, m{"quantity 0", set16(qOff, 0)})
		out = append(out, m{"quantity changed", set16(qOff, uint16(r.IntN(65536)))})
		out = append(out, m{"quantity below the data", set16(qOff, uint16(max(0, int(binary.BigEndian.Uint16(pdu[qOff:]))-1-r.IntN(3))))})
	}
	switch fc {
	case 1, 2, 3, 4:
		out = append(out, m{"quantity 0", set16(3, 0)})
		out = append(out, m{"quantity too large", set16(3, uint16(2001+r.IntN(60000)))})
		out = append(out, m{"address wraps", set16(1, uint16(65535-r.IntN(3)))})
	case 5:
		out = append(out, m{"bad coil value", set16(3, uint16(1+r.IntN(0xFEFF)))})
	case 8:
		out = append(out, m{"reserved sub-function", set16(1, []uint16{5, 6, 7, 8, 9, 19, 21, 0x1234}[r.IntN(8)])})
		out = append(out, m{"bad diagnostic data", set16(3, uint16(1+r.IntN(65535)))})
	case 43:
		b := bytes.Clone(pdu)
		b[1] = byte([]int{0, 1, 12, 15, 255}[r.IntN(5)])
		out = append(out, m{"unknown MEI type", b})
	}
	return out
}

func modbusAnomalyName(i int) (string, bool) {
	n := modbus.Anomaly(i).String()
	a, ok := modbus.ParseAnomaly(n)
	return n, ok && int(a) == i
}

func TestTolerateModbusNeverAllowsUnreadFields(t *testing.T) {
	tol := anomalyList(protocols.ProtoModbus, modbusAnomalyName)
	r := rand.New(rand.NewPCG(tolerateSeed, 1))
	var cases []tolMut
	for len(cases) < 3000 {
		unit, pdu, desc := mbForbidden(r)
		for _, mu := range mbMutations(r, pdu) {
			cases = append(cases, tolMut{desc + ", " + mu.name, modbus.AppendRequest(nil, uint16(len(cases)), unit, mu.pdu)})
		}
	}
	for _, level := range []string{"rule", "conduit"} {
		t.Run(level, func(t *testing.T) {
			tr := newTolRig(t, func() *rules.Ruleset { return tolPolicy(t, level, "hmi", "plc", "modbus", tol, tolModbusRule) }, plcEP, nil)
			rep := checkInvariant(t, tr, cases)
			wantAnomalies(t, rep, "truncated", "pdu_length", "byte_count_mismatch", "quantity_out_of_range",
				"address_out_of_range", "bad_coil_value", "unknown_sub_function", "diag_data_invalid")
		})
	}
}

// ---- DNP3 ----

const tolDNP3Rule = `          allow:
            - unsolicited: true
            - function: read
              objects: [g1, g30, g60]
            - function: [select, operate]
              objects: [g12v1]
            - function: write
              objects: [g80v1]
            - function: confirm
            - function: 99
              objects: [g1]
`

// dnHeader is one encoded object header (with its data) of a fragment.
type dnHeader struct {
	b       []byte
	rangeAt int // offset of a 1-octet start-stop range (start, stop), or -1
}

// dnAllowedRead returns an object header a read may carry.
func dnAllowedRead(r *rand.Rand) dnHeader {
	switch r.IntN(4) {
	case 0:
		return dnHeader{dnp3.AppendAllHeader(nil, 60, uint8(1+r.IntN(4))), -1}
	case 1:
		return dnHeader{dnp3.AppendAllHeader(nil, 1, uint8(1+r.IntN(2))), -1}
	case 2:
		lo := r.IntN(100)
		return dnHeader{[]byte{30, uint8(1 + r.IntN(6)), dnp3.RangeStartStop8, byte(lo), byte(lo + r.IntN(50))}, 3}
	}
	return dnHeader{dnp3.AppendCountHeader(nil, 30, uint8(1+r.IntN(6)), uint8(1+r.IntN(20))), -1}
}

// dnForbiddenRead returns an object header the read rule refuses.
func dnForbiddenRead(r *rand.Rand) dnHeader {
	g := []uint8{20, 21, 40, 10, 3, 110, 50, 34}[r.IntN(8)]
	if r.IntN(2) == 0 {
		return dnHeader{dnp3.AppendAllHeader(nil, g, uint8(1+r.IntN(2))), -1}
	}
	lo := r.IntN(100)
	return dnHeader{[]byte{g, 1, dnp3.RangeStartStop8, byte(lo), byte(lo + r.IntN(50))}, 3}
}

func crob(r *rand.Rand) []byte {
	return dnp3.AppendCROBObject(nil, uint16(r.IntN(64)), dnp3.CROB{Code: dnp3.CROBLatchOn, Count: 1})
}

func aout(r *rand.Rand) []byte {
	v := r.Uint32()
	i := r.IntN(64)
	return []byte{41, 1, 0x28, 1, 0, byte(i), byte(i >> 8), byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24), 0}
}

// dnForbidden returns a request fragment the DNP3 rule refuses: a
// forbidden function, or a forbidden object header among allowed ones.
func dnForbidden(r *rand.Rand) (fc dnp3.FunctionCode, hs []dnHeader, desc string) {
	insert := func(hs []dnHeader, h dnHeader) ([]dnHeader, int) {
		i := r.IntN(len(hs) + 1)
		return append(hs[:i], append([]dnHeader{h}, hs[i:]...)...), i
	}
	switch r.IntN(6) {
	case 0, 1:
		n := r.IntN(4)
		for range n {
			hs = append(hs, dnAllowedRead(r))
		}
		hs, i := insert(hs, dnForbiddenRead(r))
		return dnp3.FuncRead, hs, fmt.Sprintf("read, forbidden header %d of %d (g%d)", i, len(hs), hs[i].b[0])
	case 2:
		fc = []dnp3.FunctionCode{dnp3.FuncSelect, dnp3.FuncOperate}[r.IntN(2)]
		for range r.IntN(3) {
			hs = append(hs, dnHeader{crob(r), -1})
		}
		hs, i := insert(hs, dnHeader{aout(r), -1})
		return fc, hs, fmt.Sprintf("%v, g41v1 at header %d of %d", fc, i, len(hs))
	case 3:
		hs = []dnHeader{{[]byte{80, 1, dnp3.RangeStartStop8, 7, 7, 0}, 3}}
		t := []byte{50, 1, dnp3.RangeCount8, 1, 1, 2, 3, 4, 5, 6}
		hs, i := insert(hs, dnHeader{t, -1})
		return dnp3.FuncWrite, hs, fmt.Sprintf("write, g50v1 at header %d", i)
	case 4:
		fc = []dnp3.FunctionCode{dnp3.FuncDirectOperate, dnp3.FuncColdRestart, dnp3.FuncWarmRestart, dnp3.FuncDisableUnsolicited, dnp3.FuncStopAppl}[r.IntN(5)]
		if fc == dnp3.FuncDirectOperate {
			hs = []dnHeader{{crob(r), -1}}
		}
		return fc, hs, fmt.Sprintf("%v (no rule)", fc)
	}
	// Function 99 has no meaning in IEEE 1815-2012; the rule allows it
	// with g1 only, so its objects must be read to be allowed.
	hs = []dnHeader{{dnp3.AppendAllHeader(nil, 1, 2), -1}}
	hs, i := insert(hs, dnHeader{aout(r), -1})
	return 99, hs, fmt.Sprintf("fc 99, g41v1 at header %d", i)
}

func dnFragment(seq uint8, fc dnp3.FunctionCode, hs []dnHeader) (frag []byte, offs []int) {
	frag = dnp3.AppendRequestHeader(nil, seq, fc)
	for _, h := range hs {
		offs = append(offs, len(frag))
		frag = append(frag, h.b...)
	}
	return frag, offs
}

// dnMutations returns mutated fragments: truncated at every offset, a bad
// qualifier, range or unknown object in each header, more headers than
// the parser keeps, octets after a function without objects.
func dnMutations(r *rand.Rand, fc dnp3.FunctionCode, hs []dnHeader) []tolMut {
	frag, offs := dnFragment(uint8(r.IntN(16)), fc, hs)
	var out []tolMut
	for k := 0; k < len(frag); k++ {
		out = append(out, tolMut{fmt.Sprintf("truncated to %d octets", k), bytes.Clone(frag[:k])})
	}
	for i, off := range offs {
		b := bytes.Clone(frag)
		b[off+2] = []byte{0x80 | b[off+2], 0x70 | b[off+2]&0x0F, b[off+2]&0xF0 | 0x0A, b[off+2]&0xF0 | byte(0x0C+r.IntN(4)), 0x16}[r.IntN(5)]
		out = append(out, tolMut{fmt.Sprintf("bad qualifier in header %d", i), b})
		if hs[i].rangeAt >= 0 {
			b := bytes.Clone(frag)
			p := off + hs[i].rangeAt
			b[p], b[p+1] = 0xFF, byte(r.IntN(255))
			out = append(out, tolMut{fmt.Sprintf("start above stop in header %d", i), b})
		}
		b = bytes.Clone(frag)
		b[off], b[off+1] = []byte{99, 7, 0}[r.IntN(3)], byte(1+r.IntN(9))
		out = append(out, tolMut{fmt.Sprintf("unknown object in header %d", i), b})
	}
	many := dnp3.AppendRequestHeader(nil, 0, fc)
	for range dnp3.MaxObjects {
		many = dnp3.AppendAllHeader(many, 60, 1)
	}
	out = append(out, tolMut{"too many headers first", append(many, frag[2:]...)})
	if len(hs) == 0 {
		out = append(out, tolMut{"octets after a function without objects", append(bytes.Clone(frag), 41, 1, 0x06)})
	}
	b := bytes.Clone(frag)
	b[1] = byte([]int{22, 50, 99, 127, 200}[r.IntN(5)])
	out = append(out, tolMut{"unknown function code", b})
	return out
}

// dnFrames frames a fragment from master 1 to outstation 10: as usual,
// or with the link and transport layers mutated.
func dnFrames(r *rand.Rand, frag []byte) (name string, b []byte) {
	switch r.IntN(12) {
	case 0: // a data CRC that does not match
		b = dnp3.AppendLinkFrames(nil, dnp3.CtrlMasterData, 10, 1, frag)
		if len(b) > dnp3.HeaderLen+2 {
			b[dnp3.HeaderLen] ^= 0x5A
			return "data crc", b
		}
	case 1: // a segment without FIR first
		seg := append([]byte{dnp3.TransportFIN | 3}, frag...)
		return "no FIR", dnp3.AppendLinkFrame(nil, dnp3.CtrlMasterData, 10, 1, seg)
	case 3: // sent toward the outstation as if from one (DIR clear), UNS set
		if len(frag) > 0 {
			b := bytes.Clone(frag)
			b[0] |= dnp3.AppUNS
			return "DIR clear, UNS set", dnp3.AppendLinkFrames(nil, dnp3.CtrlOutstationData, 10, 1, b)
		}
	case 2: // the fragment split, a segment lost
		if len(frag) > 4 {
			h := len(frag) / 2
			b = dnp3.AppendLinkFrame(nil, dnp3.CtrlMasterData, 10, 1, append([]byte{dnp3.TransportFIR}, frag[:h]...))
			return "transport seq", dnp3.AppendLinkFrame(b, dnp3.CtrlMasterData, 10, 1, append([]byte{dnp3.TransportFIN | 2}, frag[h:]...))
		}
	}
	return "", dnp3.AppendLinkFrames(nil, dnp3.CtrlMasterData, 10, 1, frag)
}

// dnCases returns at least n mutated DNP3 requests that the rule above
// refuses, each in link frames.
func dnCases(r *rand.Rand, n int) []tolMut {
	var cases []tolMut
	for len(cases) < n {
		fc, hs, desc := dnForbidden(r)
		for _, mu := range dnMutations(r, fc, hs) {
			name, b := dnFrames(r, mu.payload)
			cases = append(cases, tolMut{desc + ", " + mu.desc + " " + name, b})
		}
	}
	return cases
}

func dnp3AnomalyName(i int) (string, bool) {
	n := dnp3.Anomaly(i).String()
	a, ok := dnp3.AnomalyByName(n)
	return n, ok && int(a) == i
}

func TestTolerateDNP3NeverAllowsUnreadFields(t *testing.T) {
	tol := anomalyList(protocols.ProtoDNP3, dnp3AnomalyName)
	cases := dnCases(rand.New(rand.NewPCG(tolerateSeed, 2)), 3000)
	for _, level := range []string{"rule", "conduit"} {
		t.Run(level, func(t *testing.T) {
			tr := newTolRig(t, func() *rules.Ruleset { return tolPolicy(t, level, "hmi", "rtu", "dnp3", tol, tolDNP3Rule) }, rtuEP, nil)
			rep := checkInvariant(t, tr, cases)
			wantAnomalies(t, rep, "truncated_header", "unknown_function", "bad_qualifier", "bad_range", "unknown_object",
				"truncated_object", "too_many_objects", "unexpected_data", "data_crc", "fragment_without_fir", "transport_seq", "wrong_direction")
		})
	}
}

// ---- OPC UA ----

const tolOPCUARule = `          min_security_mode: none
          allow:
            - service: [read, browse]
            - service: write
              nodes: ["ns=2;s=Line1.Setpoint"]
            - service: call
              nodes: ["ns=2;s=Line1.Reset"]
`

var (
	uaAllowedNode   = opcua.StringID(2, "Line1.Setpoint")
	uaAllowedMethod = opcua.StringID(2, "Line1.Reset")
)

func uaForbiddenNode(r *rand.Rand) opcua.NodeID {
	switch r.IntN(3) {
	case 0:
		return opcua.Numeric(uint16(r.IntN(4)), uint32(r.IntN(100000)))
	case 1:
		return opcua.StringID(2, fmt.Sprintf("Line%d.Forbidden%d", r.IntN(9), r.IntN(1000)))
	}
	return opcua.StringID(2, "Line1.Setpoin"+string(rune('a'+r.IntN(26))))
}

// uaForbidden returns a request body the OPC UA rule refuses, and the
// offsets of its NodeIds (for mutations).
func uaForbidden(r *rand.Rand) (body []byte, nodeAt []int, countAt int, desc string) {
	h := uint32(1 + r.IntN(1000))
	switch r.IntN(5) {
	case 0, 1:
		n := 1 + r.IntN(6)
		bad := r.IntN(n)
		vals := make([]opcua.WriteValue, n)
		for i := range vals {
			vals[i] = opcua.WriteValue{Node: uaAllowedNode, Value: float64(r.IntN(100))}
			if i == bad {
				vals[i].Node = uaForbiddenNode(r)
			}
		}
		for i := range vals {
			nodeAt = append(nodeAt, len(opcua.AppendWriteRequest(nil, h, vals[:i]...)))
		}
		return opcua.AppendWriteRequest(nil, h, vals...), nodeAt, len(opcua.AppendRequest(nil, opcua.ServiceWrite, h)),
			fmt.Sprintf("write %d values, forbidden node at %d", n, bad)
	case 2, 3:
		n := 1 + r.IntN(4)
		bad := r.IntN(n)
		calls := make([]opcua.CallMethod, n)
		for i := range calls {
			calls[i] = opcua.CallMethod{Object: opcua.StringID(2, "Line1"), Method: uaAllowedMethod, Args: []float64{1}}
			if i == bad {
				calls[i].Method = uaForbiddenNode(r)
			}
		}
		for i := range calls {
			at := len(opcua.AppendCallRequest(nil, h, calls[:i]...))
			nodeAt = append(nodeAt, at, at+len(opcua.AppendNodeID(nil, calls[i].Object)))
		}
		return opcua.AppendCallRequest(nil, h, calls...), nodeAt, len(opcua.AppendRequest(nil, opcua.ServiceCall, h)),
			fmt.Sprintf("call %d methods, forbidden method at %d", n, bad)
	}
	s := []opcua.Service{opcua.ServiceDeleteNodes, opcua.ServiceAddNodes, opcua.ServiceHistoryUpdate, opcua.ServiceCreateSession}[r.IntN(4)]
	body = opcua.AppendRequest(nil, s, h)
	countAt = len(body)
	body = binary.LittleEndian.AppendUint32(body, 1)
	nodeAt = []int{len(body)}
	body = opcua.AppendNodeID(body, uaForbiddenNode(r))
	return body, nodeAt, countAt, fmt.Sprintf("service %v", s)
}

// uaSetup is the exchange before each case: HEL, an ACK that limits the
// client's messages to 2 KiB in at most 6 chunks of 1 KiB, OPN.
func uaSetup() [][2][]byte {
	hello := opcua.Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536, EndpointURL: "opc.tcp://192.0.2.30:4840"}
	ack := hello
	ack.ReceiveBufferSize, ack.MaxMessageSize, ack.MaxChunkCount = 1024, 2048, 6
	return [][2][]byte{
		{opcua.AppendHello(nil, hello), opcua.AppendAcknowledge(nil, ack)},
		{opcua.AppendOpenRequest(nil, opcua.SecureHeader{SequenceNumber: 1, RequestID: 1}, opcua.ModeNone),
			opcua.AppendOpenResponse(nil, opcua.SecureHeader{ChannelID: 7, SequenceNumber: 1, RequestID: 1}, 1)},
	}
}

// uaMutations returns chunk streams carrying mutated bodies.
func uaMutations(r *rand.Rand, body []byte, nodeAt []int, countAt int) []tolMut {
	hdr := opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 2, RequestID: 2}
	final := func(b []byte) []byte { return opcua.AppendMessage(nil, opcua.ChunkFinal, hdr, b) }
	var out []tolMut
	for k := 0; k < len(body); k++ {
		out = append(out, tolMut{fmt.Sprintf("body truncated to %d bytes", k), final(body[:k])})
	}
	for i, at := range nodeAt {
		b := bytes.Clone(body)
		b[at] = []byte{0x06, 0x07, 0x3F, 0x46, 0x83, 0xC3}[r.IntN(6)]
		out = append(out, tolMut{fmt.Sprintf("bad encoding of NodeId %d", i), final(b)})
		if body[at] == 0x03 { // a String NodeId: its length
			b := bytes.Clone(body)
			binary.LittleEndian.PutUint32(b[at+3:], []uint32{0xFFFFFFF0, 0x7FFFFFFF, uint32(len(body))}[r.IntN(3)])
			out = append(out, tolMut{fmt.Sprintf("string length of NodeId %d", i), final(b)})
		}
	}
	typeID := binary.LittleEndian.Uint16(body[2:])
	if isWrite, isCall := typeID == uint16(opcua.ServiceWrite.RequestTypeID()), typeID == uint16(opcua.ServiceCall.RequestTypeID()); isWrite || isCall {
		// The Variant of a value or argument (a Double: type byte, then 8
		// bytes, ending its element) with a reserved type.
		var ends []int
		step := 1
		if isCall {
			step = 2 // ObjectId, MethodId
		}
		for i := step; i < len(nodeAt); i += step {
			ends = append(ends, nodeAt[i])
		}
		ends = append(ends, len(body))
		b := bytes.Clone(body)
		b[ends[r.IntN(len(ends))]-9] = []byte{26, 0x3F, 0x40 | 11, 0x80}[r.IntN(4)]
		out = append(out, tolMut{"reserved Variant type", final(b)})
	}
	if countAt > 0 {
		b := bytes.Clone(body)
		binary.LittleEndian.PutUint32(b[countAt:], []uint32{0xFFFFFFFE, 0x10000, uint32(len(nodeAt) + 1 + r.IntN(40))}[r.IntN(3)])
		out = append(out, tolMut{"array length", final(b)})
	}
	// Chunked, beyond the negotiated message size or chunk count.
	big := body
	if countAt > 0 && bytes.Equal(body[:2], opcua.AppendNodeID(nil, opcua.Numeric(0, opcua.ServiceWrite.RequestTypeID()))[:2]) {
		big = bytes.Clone(body)
		n := binary.LittleEndian.Uint32(big[countAt:])
		for range 80 { // more WriteValues to the allowed node
			big = append(big, opcua.AppendWriteRequest(nil, 0, opcua.WriteValue{Node: uaAllowedNode})[countAt+4:]...)
			n++
		}
		binary.LittleEndian.PutUint32(big[countAt:], n)
	}
	out = append(out, tolMut{"in too many chunks", opcua.AppendChunks(nil, hdr, body, 1+len(body)/8)})
	if len(big) > 2048 {
		out = append(out, tolMut{"chunked over the message size", opcua.AppendChunks(nil, hdr, big, 600+r.IntN(300))})
	}
	// Interleaved: a Read's first chunk, then this message's chunks with
	// another request id, its first chunk cut inside the type id.
	read := opcua.AppendReadRequest(nil, 9, uaAllowedNode)
	rh := opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 2, RequestID: 50}
	il := opcua.AppendMessage(nil, opcua.ChunkIntermediate, rh, read[:20])
	h2 := hdr
	h2.SequenceNumber = 3
	cut := r.IntN(3)
	il = opcua.AppendMessage(il, opcua.ChunkIntermediate, h2, body[:cut])
	h2.SequenceNumber++
	il = opcua.AppendMessage(il, opcua.ChunkFinal, h2, body[cut:])
	out = append(out, tolMut{fmt.Sprintf("interleaved with a read, type id cut at %d", cut), il})
	il = opcua.AppendMessage(nil, opcua.ChunkIntermediate, rh, read[:20])
	out = append(out, tolMut{"interleaved with a read, single chunk", opcua.AppendMessage(il, opcua.ChunkFinal, h2, body)})
	// Type id unknown; another channel id; a chunk over the receive buffer.
	b := bytes.Clone(body)
	if b[0] == 0x01 {
		binary.LittleEndian.PutUint16(b[2:], uint16(9000+r.IntN(1000)))
		out = append(out, tolMut{"unknown type id", final(b)})
	}
	h3 := hdr
	h3.ChannelID = 8
	out = append(out, tolMut{"another channel id", opcua.AppendMessage(nil, opcua.ChunkFinal, h3, body)})
	if len(big) > 1024 {
		out = append(out, tolMut{"chunk over the receive buffer", final(big)})
	}
	return out
}

func opcuaAnomalyName(i int) (string, bool) {
	n := opcua.Anomaly(i).String()
	a, ok := opcua.AnomalyByName(n)
	return n, ok && int(a) == i
}

func TestTolerateOPCUANeverAllowsUnreadFields(t *testing.T) {
	tol := anomalyList(protocols.ProtoOPCUA, opcuaAnomalyName)
	r := rand.New(rand.NewPCG(tolerateSeed, 3))
	var cases []tolMut
	for len(cases) < 3000 {
		body, nodeAt, countAt, desc := uaForbidden(r)
		for _, mu := range uaMutations(r, body, nodeAt, countAt) {
			cases = append(cases, tolMut{desc + ", " + mu.desc, mu.payload})
		}
	}
	for _, level := range []string{"rule", "conduit"} {
		t.Run(level, func(t *testing.T) {
			tr := newTolRig(t, func() *rules.Ruleset { return tolPolicy(t, level, "hmi", "ua", "opcua", tol, tolOPCUARule) }, uaEP, uaSetup())
			rep := checkInvariant(t, tr, cases)
			wantAnomalies(t, rep, "truncated", "bad_node_id", "abnormal_string_length", "abnormal_array_length",
				"too_many_chunks", "message_too_large", "interleaved_chunks", "unknown_service", "bad_channel_id", "invalid_message_size", "bad_encoding")
		})
	}
}

// TestTolerateStillAllowsWhatWasRead: the controls. Tolerating an anomaly
// keeps its meaning where the parser read every field the rule restricts,
// and they are allowed: such requests cross whole.
func TestTolerateStillAllowsWhatWasRead(t *testing.T) {
	mb := func(pdu []byte) []byte { return modbus.AppendRequest(nil, 1, 1, pdu) }
	dn := func(frag []byte) []byte { return dnp3.AppendLinkFrames(nil, dnp3.CtrlMasterData, 10, 1, frag) }
	ua := func(body []byte) []byte {
		return opcua.AppendMessage(nil, opcua.ChunkFinal, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 2, RequestID: 2}, body)
	}
	read := opcua.AppendReadRequest(nil, 1, uaAllowedNode, opcua.StringID(2, "Anything"))
	browse := opcua.AppendBrowseRequest(nil, 1, opcua.Numeric(0, 85))
	tests := []struct {
		proto, name, anomaly string
		payload              []byte
	}{
		{"modbus", "write holding 45 with a trailing byte", "pdu_length", mb(append(modbus.AppendWriteSingleRegister(nil, 45, 7), 0))},
		{"modbus", "read holding 10, quantity 0", "quantity_out_of_range", mb(modbus.AppendAddrQty(nil, 3, 10, 0))},
		{"modbus", "write coil 3 with value 0x1234", "bad_coil_value", mb(modbus.AppendPDU(nil, 5, uint16(3), uint16(0x1234)))},
		{"modbus", "diagnostics 8/0 with an odd byte", "pdu_length", mb(modbus.AppendPDU(nil, 8, uint16(0), []byte{1, 2, 3}))},
		{"modbus", "read device id with code 9", "device_id_invalid", mb(modbus.AppendReadDeviceID(nil, 9, 0))},
		{"modbus", "write holding 0-2, byte count 7 for 6 data bytes", "byte_count_mismatch", mb(modbus.AppendPDU(nil, 16, uint16(0), uint16(3), uint8(7), []uint16{1, 2, 3}))},
		{"dnp3", "read g30v99 (size unknown, no data) and g1v2", "unknown_object", dn(dnp3.AppendAllHeader(dnp3.AppendAllHeader(dnp3.AppendRequestHeader(nil, 1, dnp3.FuncRead), 30, 99), 1, 2))},
		{"opcua", "read, body cut in its request header", "truncated", ua(read[:12])},
		{"opcua", "browse, a bad authentication token NodeId", "bad_node_id", ua(append(append(browse[:4:4], 0x3F), browse[5:]...))},
	}
	rigs := map[string]*tolRig{}
	for _, level := range []string{"rule", "conduit"} {
		rigs["modbus"] = newTolRig(t, func() *rules.Ruleset {
			return tolPolicy(t, level, "hmi", "plc", "modbus", anomalyList(protocols.ProtoModbus, modbusAnomalyName), tolModbusRule)
		}, plcEP, nil)
		rigs["dnp3"] = newTolRig(t, func() *rules.Ruleset {
			return tolPolicy(t, level, "hmi", "rtu", "dnp3", anomalyList(protocols.ProtoDNP3, dnp3AnomalyName), tolDNP3Rule)
		}, rtuEP, nil)
		rigs["opcua"] = newTolRig(t, func() *rules.Ruleset {
			return tolPolicy(t, level, "hmi", "ua", "opcua", anomalyList(protocols.ProtoOPCUA, opcuaAnomalyName), tolOPCUARule)
		}, uaEP, uaSetup())
		for _, tc := range tests {
			t.Run(level+"/"+tc.proto+"/"+tc.name, func(t *testing.T) {
				crossed, judged := rigs[tc.proto].run(tc.payload)
				if len(judged) == 0 || judged[len(judged)-1].anomaly != tc.anomaly {
					t.Fatalf("judged %+v, want the anomaly %s", judged, tc.anomaly)
				}
				if crossed != len(tc.payload) {
					t.Fatalf("%d of %d bytes crossed (%+v), want all: the tolerated anomaly left nothing the rule restricts unread", crossed, len(tc.payload), judged)
				}
			})
		}
	}
}
