package dissect_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/simulate/dissect"
)

// refJSON is the encoding/json rendering AppendJSON replaced; AppendJSON
// must write the same bytes.
func refJSON(p *dissect.PDU) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"frame":`)
	b.WriteString(strconv.Itoa(p.Frame))
	b.WriteString(`,"time":`)
	b.WriteString(strconv.Quote(p.Time.UTC().Format(time.RFC3339Nano)))
	fmt.Fprintf(&b, `,"src":%q,"dst":%q,"proto":%q,"dir":%q`, p.Src.String(), p.Dst.String(), p.Proto.String(), p.Dir.String())
	for _, kv := range p.Fields {
		v, err := json.Marshal(kv.Value)
		if err != nil {
			return nil, err
		}
		b.WriteString(`,`)
		b.WriteString(strconv.Quote(kv.Key))
		b.WriteString(`:`)
		b.Write(v)
	}
	if p.Anomaly != "" {
		b.WriteString(`,"anomaly":`)
		b.WriteString(strconv.Quote(p.Anomaly))
	}
	b.WriteString("}")
	return b.Bytes(), nil
}

// corpus returns the scenario captures and ../shared/pcaps.
func corpus(t *testing.T) []string {
	t.Helper()
	root := testenv.ModuleRoot(t)
	var paths []string
	for _, glob := range []string{
		filepath.Join(root, "simulate", "scenarios", "*", "input.pcap"),
		filepath.Join(testenv.Pcaps(t), "*.pcap*"),
	} {
		m, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, m...)
	}
	if len(paths) == 0 {
		t.Fatal("no captures found")
	}
	return paths
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	pdus := 0
	for _, path := range corpus(t) {
		_, err := dissect.Run(path, dissect.Options{}, func(p *dissect.PDU) error {
			pdus++
			// AppendJSON renders straight from the session; the
			// reference marshals the Record the same session fills.
			got, err := p.AppendJSON(nil)
			if err != nil {
				return err
			}
			p.Load()
			want, err := refJSON(p)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, want) {
				return fmt.Errorf("frame %d:\n got %s\nwant %s", p.Frame, got, want)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(path), err)
		}
	}
	if pdus < 1000 {
		t.Errorf("only %d PDUs compared", pdus)
	}
}

func TestAppendJSONOddValues(t *testing.T) {
	src := netip.MustParseAddrPort("[fe80::1%eth0]:502")
	tests := []struct {
		name string
		p    dissect.PDU
	}{
		{"escaped strings", dissect.PDU{Src: src, Record: protocols.Record{Anomaly: "a\"<b>&\x01é",
			Fields: []protocols.KV{{Key: "k\n", Value: "v<\"\\>&\x7f é"}}}}},
		{"invalid addresses", dissect.PDU{Frame: 3}},
		{"nil and empty objects", dissect.PDU{Record: protocols.Record{Fields: []protocols.KV{
			{Key: "a", Value: []dnp3.Object(nil)}, {Key: "b", Value: []dnp3.Object{}},
			{Key: "c", Value: []dnp3.Object{{Group: -1, Variation: 300}}}}}}},
		{"other types", dissect.PDU{Record: protocols.Record{Fields: []protocols.KV{
			{Key: "f", Value: 1.5}, {Key: "u64", Value: uint64(1 << 63)}, {Key: "neg", Value: -7},
			{Key: "u8", Value: uint8(255)}, {Key: "u16", Value: uint16(65535)}, {Key: "u32", Value: uint32(1 << 31)},
			{Key: "t", Value: true}, {Key: "nil", Value: nil}, {Key: "fc", Value: dnp3.FuncRead},
			{Key: "lf", Value: dnp3.LinkFunc(4)}, {Key: "lf?", Value: dnp3.LinkFunc(200)},
			{Key: "list", Value: []string{"x", "<"}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := refJSON(&tt.p)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tt.p.AppendJSON(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestAppendJSONAllocs(t *testing.T) {
	p := dissect.PDU{Frame: 7, Time: time.Unix(1, 5), Src: netip.MustParseAddrPort("192.0.2.1:40000"),
		Dst: netip.MustParseAddrPort("192.0.2.2:20000"), Proto: protocols.ProtoDNP3,
		Record: protocols.Record{Dir: protocols.Request, Fields: []protocols.KV{
			{Key: "link_src", Value: uint16(1)}, {Key: "link_fc", Value: dnp3.LinkUnconfirmedUserData},
			{Key: "fc", Value: dnp3.FuncRead}, {Key: "objects", Value: []dnp3.Object{{Group: 60, Variation: 1}}},
			{Key: "seq", Value: uint8(1)}, {Key: "tid", Value: 9}}}}
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf, _ = p.AppendJSON(buf[:0]) }); n != 0 {
		t.Errorf("AppendJSON: %v allocs, want 0", n)
	}
	// Rendered by the session that decoded it, as dissect prints it.
	s := dnp3.NewSession(protocols.Config{})
	apdu := dnp3.AppendAllHeader(dnp3.AppendRequestHeader(nil, 1, dnp3.FuncRead), 60, 1)
	if s.Decode(protocols.Request, dnp3.AppendLinkFrames(nil, dnp3.CtrlDIR|dnp3.CtrlPRM|0x04, 10, 1, apdu)) != protocols.UnitPDU {
		t.Fatal("the request did not decode")
	}
	sp := dissect.WithSession(p, s)
	if n := testing.AllocsPerRun(100, func() { buf, _ = sp.AppendJSON(buf[:0]) }); n != 0 {
		t.Errorf("AppendJSON from the session: %v allocs, want 0", n)
	}
	if got := string(buf); !strings.Contains(got, `"link_fc":"unconfirmed_user_data","fc":1,"objects":[{"group":60,"variation":1}],"seq":1}`) {
		t.Errorf("AppendJSON from the session = %s", got)
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	p := dissect.PDU{Frame: 7, Time: time.Unix(1, 5), Src: netip.MustParseAddrPort("192.0.2.1:40000"),
		Dst: netip.MustParseAddrPort("192.0.2.2:502"), Proto: protocols.ProtoModbus,
		Record: protocols.Record{Dir: protocols.Request, Fields: []protocols.KV{
			{Key: "tid", Value: 9}, {Key: "unit", Value: 1}, {Key: "fc", Value: 3}, {Key: "addr", Value: 0}, {Key: "qty", Value: 10}}}}
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			refJSON(&p)
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf, _ = p.AppendJSON(buf[:0])
		}
	})
	// The same line rendered by the Modbus session that decoded the
	// request (what otgw dissect --json does per PDU).
	var s modbus.Session
	s.Decode(protocols.Request, modbus.AppendADU(nil, 9, 1, modbus.AppendAddrQty(nil, 3, 0, 10)))
	sp := dissect.WithSession(p, &s)
	b.Run("session", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf, _ = sp.AppendJSON(buf[:0])
		}
	})
}
