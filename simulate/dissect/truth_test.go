package dissect_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/simulate/dissect"
)

// knownDisagreements lists, per capture, how many tshark PDUs dissect does
// not reproduce and how many PDUs dissect reports that tshark has no row
// for. Each case is explained, with the spec section, in the protocol
// package's own truth test (protocols/*/truth_test.go), which checks the
// rows one by one; this test checks that the dissect command — port
// classification, direction, the three parsers together — agrees with
// tshark everywhere else.
var knownDisagreements = map[string]struct {
	missing, extra int
	why            string
}{
	// Two non-Modbus byte runs on port 502 (an MBAP length of 0x8804, and
	// three bytes past an ADU's announced end): MB v1.1b3 §4.1 / MB TCP §3.1.3.
	"modbus_digitalbond_test_data_part1.pcap": {0, 2, "non_modbus records tshark does not show"},
	// tshark itemises no objects for FC 18 and FC 22 (IEEE 1815 §4.4.x).
	"dnp3_digitalbond_test_data_part1.pcap": {4, 4, "tshark lists no objects for Stop Application; bad_start frames"},
	"dnp3_iti_assign_class.pcap":            {1, 1, "tshark lists no objects for Assign Class"},
	// Secure Authentication g120 objects and FC 131 IIN (IEEE 1815 §7).
	"dnp3_iti_auth_control_challenge_response.pcap": {2, 2, "tshark lists no g120 objects"},
	// tshark never completes fragments whose transport sequence wraps 63→0
	// (IEEE 1815 §8.2.3.3) and calls one Response a Confirm.
	"dnp3_icsnpp_dnp3_example.pcap": {1, 5, "tshark never completes 4 wrapped fragments; calls one Response a Confirm"},
	// A response completed only by retransmissions that tshark marks spurious.
	"opcua_cisagov_opcua_with-gap_with-handshake.pcapng": {0, 1, "CreateSessionResponse tshark never reassembles"},
}

func key(proto string, frame int, fields ...string) string {
	return fmt.Sprintf("%s|%d|%s", proto, frame, strings.Join(fields, "|"))
}

// truthKeys reads a truth CSV and returns one key per application PDU.
func truthKeys(t *testing.T, path string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, r := range testenv.ReadTruth(t, path, "") {
		get := func(c string) string { return r[c] }
		frame := r.Int("frame")
		switch get("protocol") {
		case "modbus":
			out[key("modbus", frame, get("mb_trans_id"), get("mb_unit_id"), get("mb_func_code"), get("mb_exception_code"))]++
		case "dnp3":
			if get("dnp3_al_func") == "" {
				continue // link-only or non-final transport segment
			}
			var gv []string
			for _, o := range strings.Split(get("dnp3_objects"), ";") {
				if o = strings.TrimSpace(o); o != "" {
					gv = append(gv, strings.Fields(o)[0])
				}
			}
			out[key("dnp3", frame, get("dnp3_al_func"), strings.Join(gv, ","))]++
		case "opcua":
			pol := get("ua_security_policy")
			if i := strings.LastIndexByte(pol, '#'); i >= 0 {
				pol = pol[i+1:]
			}
			out[key("opcua", frame, get("ua_msg_type"), get("ua_service_id"), pol)]++
		}
	}
	return out
}

func pduKey(p *dissect.PDU) (string, bool) {
	str := func(k string) string {
		v, ok := p.Get(k)
		if !ok {
			return ""
		}
		// As in the JSON output: named enums print as their numbers.
		b, _ := json.Marshal(v)
		return strings.Trim(string(b), `"`)
	}
	switch p.Proto {
	case protocols.ProtoModbus:
		fc, _ := p.Get("fc")
		n, _ := fc.(int)
		return key("modbus", p.Frame, str("tid"), str("unit"), fmt.Sprint(n&0x7f), str("exception")), true
	case protocols.ProtoDNP3:
		if _, ok := p.Get("fc"); !ok {
			return "", false
		}
		var gv []string
		if objs, ok := p.Get("objects"); ok {
			for _, o := range objs.([]dnp3.Object) {
				gv = append(gv, fmt.Sprintf("g%dv%d", o.Group, o.Variation))
			}
		}
		return key("dnp3", p.Frame, str("fc"), strings.Join(gv, ",")), true
	case protocols.ProtoOPCUA:
		return key("opcua", p.Frame, str("msg_type"), str("service"), str("security_policy")), true
	}
	return "", false
}

// TestDissectAgreesWithTshark runs the dissect engine on every capture in
// ../shared/pcaps and compares each application PDU with tshark's: Modbus
// (frame, transaction id, unit, function code, exception), DNP3 (frame,
// application function code, object group/variation list), OPC UA (frame,
// message type, service type id, security policy).
func TestDissectAgreesWithTshark(t *testing.T) {
	dir := testenv.Pcaps(t)
	files, _ := filepath.Glob(filepath.Join(dir, "*.pcap*"))
	total, agreed := 0, 0
	for _, path := range files {
		name := filepath.Base(path)
		truthPath := strings.TrimSuffix(strings.TrimSuffix(path, ".pcapng"), ".pcap") + ".truth.csv"
		want := truthKeys(t, truthPath)
		got := map[string]int{}
		opts := dissect.Options{}
		if name == "dnp3_zeek_dnp3_read_p20001.pcap" {
			opts.Ports = dissect.DefaultPorts()
			opts.Ports[20001] = protocols.ProtoDNP3 // tshark needed -d tcp.port==20001,dnp3 too
		}
		if _, err := dissect.Run(path, opts, func(p *dissect.PDU) error {
			if k, ok := pduKey(p); ok {
				got[k]++
			}
			return nil
		}); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		missing, extra := diff(want, got), diff(got, want)
		n := 0
		for _, c := range want {
			n += c
		}
		total += n
		agreed += n - len(missing)
		k := knownDisagreements[name]
		if len(missing) != k.missing || len(extra) != k.extra {
			t.Errorf("%s: %d tshark PDUs not reproduced, %d extra (want %d, %d: %s)\nmissing: %v\nextra: %v",
				name, len(missing), len(extra), k.missing, k.extra, k.why, first(missing), first(extra))
		}
	}
	t.Logf("dissect agrees with tshark on %d of %d application PDUs in %d captures", agreed, total, len(files))
	if len(files) < 80 {
		t.Errorf("only %d captures found in %s", len(files), dir)
	}
}

func diff(a, b map[string]int) []string {
	var out []string
	for k, n := range a {
		for i := b[k]; i < n; i++ {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func first(s []string) []string {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}
