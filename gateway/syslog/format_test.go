package syslog

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/events"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func goldenEvents() []struct {
	name string
	e    *events.Event
} {
	deny := testEvent(81234)
	deny.Message = "Blocked Modbus write multiple registers"
	escapes := testEvent(2)
	escapes.Conduit = `c|"x"]\y=z`
	escapes.Message = "pipe | equals = backslash \\ quote \" bracket ] LF\nCR\rend"
	escapes.Fields = map[string]any{"bad key=]\"": "v", "seq": "collides", "objects": []any{map[string]any{"group": 12, "variation": 1}}}
	utf := testEvent(3)
	utf.Message = "Schreibzugriff verweigert: Ventil Ü-7"
	utf.TimeQuality = events.TimeQuality{TZKnown: true}
	minimal := &events.Event{Type: events.TypeStart, Severity: events.SevInfo}
	long := testEvent(5)
	long.Message = strings.Repeat("long message ", 200)
	long.Reason = strings.Repeat("r", 400)
	reload := &events.Event{Seq: 2147483648, BootID: "b", Time: time.Date(2025, 1, 15, 10, 0, 0, 0, time.FixedZone("CET", 3600)),
		Severity: events.SevNotice, Type: events.TypePolicyReload, File: "/etc/otgw/policy.yaml", Version: "7", Message: "policy reloaded"}
	agg := testEvent(6)
	agg.Type, agg.Count = events.TypeAggregated, 9999
	agg.Src = netip.MustParseAddrPort("[2001:db8::1]:40000")
	return []struct {
		name string
		e    *events.Event
	}{
		{"deny", deny}, {"escapes", escapes}, {"utf8", utf}, {"minimal", minimal},
		{"truncated", long}, {"reload", reload}, {"aggregated", agg},
	}
}

// goldenFormatter is the formatter of the golden files: sysUpTime counts
// from 10:00 UTC on the golden day for boot "7a1c...".
func goldenFormatter(f Format, pen uint32) Formatter {
	boot := time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)
	return Formatter{Format: f, Facility: DefaultFacility, Hostname: "gw-01.plant.example", AppName: "otgw",
		ProcID: "2417", EnterpriseID: pen, Software: "otgw", SWVersion: "0.1.0", MaxBytes: 2048,
		OriginIPs: []string{"192.0.2.1", "2001:db8::1"},
		Uptime: func(e *events.Event) (time.Duration, bool) {
			return e.Time.Sub(boot), e.BootID == "7a1c2b9e-0d4f-4e55-9b8a-3f0e6c2d1a00"
		}}
}

// The default RFC 5424 form needs no enterprise number: registered SD-IDs
// only (origin, meta, timeQuality), the event as ASCII JSON in MSG.
func TestFormatRFC5424WithoutPEN(t *testing.T) {
	for _, ge := range goldenEvents() {
		t.Run(ge.name, func(t *testing.T) {
			fm := goldenFormatter(FormatRFC5424, 0)
			got := append(fm.Append(nil, ge.e), '\n')
			path := filepath.Join("testdata", "rfc5424-nopen-"+ge.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s:\ngot  %q\nwant %q", path, got, want)
			}
			if bytes.Contains(got, []byte("[otgw@")) {
				t.Errorf("private SD element without a PEN: %q", got)
			}
			for i, c := range got {
				if c >= 0x80 {
					t.Fatalf("byte %d is not ASCII (0x%02x): MSG must need no BOM", i, c)
				}
			}
			msg := got[:len(got)-1]
			{
				// MSG is the last field: the JSON object after the SD.
				k := bytes.Index(msg, []byte(" {\""))
				if k < 0 {
					t.Fatalf("no JSON MSG in %q", msg)
				}
				var back events.Event
				if err := events.UnmarshalJSONEvent(msg[k+1:], &back); err != nil {
					t.Fatalf("MSG does not parse back: %v", err)
				}
				if !strings.HasPrefix(ge.e.Message, back.Message) || back.Type != ge.e.Type || back.Seq != ge.e.Seq {
					t.Errorf("MSG round trip: got %+v", back)
				}
			}
		})
	}
}

// S01/S12/S13: byte-exact output of every format, refreshed with -update.
func TestFormatGolden(t *testing.T) {
	for _, f := range []Format{FormatRFC5424, FormatCEF, FormatLEEF, FormatJSON} {
		for _, ge := range goldenEvents() {
			t.Run(f.String()+"/"+ge.name, func(t *testing.T) {
				fm := goldenFormatter(f, testPEN)
				got := append(fm.Append(nil, ge.e), '\n')
				path := filepath.Join("testdata", f.String()+"-"+ge.name+".golden")
				if *update {
					if err := os.WriteFile(path, got, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test -update)", err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s:\ngot  %q\nwant %q", path, got, want)
				}
				if len(got)-1 > fm.MaxBytes {
					t.Errorf("message is %d bytes, cap %d", len(got)-1, fm.MaxBytes)
				}
			})
		}
	}
}

func TestFormatRules(t *testing.T) {
	fm := Formatter{EnterpriseID: testPEN, Hostname: strings.Repeat("h", 300), AppName: strings.Repeat("a", 60),
		ProcID: "bad proc id", Facility: 23}
	e := testEvent(1)
	e.Severity = events.SevDebug
	e.Fields = map[string]any{strings.Repeat("k", 40): 1, "note": `a"b]c\d`}
	got := string(fm.Append(nil, e))
	hdr := strings.SplitN(got, " ", 7)
	tests := []struct {
		name string
		got  bool
	}{
		{"PRI 23*8+7", strings.HasPrefix(got, "<191>1 ")},
		{"HOSTNAME <= 255", len(hdr[2]) == maxHostname},
		{"APP-NAME <= 48", len(hdr[3]) == maxAppName},
		{"PROCID printable, no SP", hdr[4] == "bad_proc_id"},
		{"SD-NAME <= 32", strings.Contains(got, " "+strings.Repeat("k", 32)+`="1"`)},
		{"SD elements adjacent", strings.Contains(got, `"][meta sequenceId="1"][timeQuality`)},
		{"escapes", strings.Contains(got, `note="a\"b\]c\\d"`)},
	}
	for _, tc := range tests {
		if !tc.got {
			t.Errorf("%s: not satisfied by %q", tc.name, got)
		}
	}
	var nilSD Formatter
	if got, want := string(nilSD.Append(nil, &events.Event{Type: events.TypeStop})), `<0>1 - - - - STOP - {"event_type":"stop","severity":"emergency","seq":0}`; got != want {
		t.Errorf("all-NILVALUE message = %q, want %q", got, want)
	}
}

func TestSequenceIDWraps(t *testing.T) {
	fm := Formatter{}
	for _, tc := range []struct {
		name string
		seq  uint64
		want string
	}{
		{"first", 1, `sequenceId="1"`},
		{"max", 2147483647, `sequenceId="2147483647"`},
		{"wraps to 1", 2147483648, `sequenceId="1"`},
	} {
		got := string(fm.Append(nil, &events.Event{Seq: tc.seq, Type: events.TypeStart}))
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: got %q, want %s", tc.name, got, tc.want)
		}
	}
}
