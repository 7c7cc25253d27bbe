package events

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
)

// Every record shape, and every record the fuzz seeds re-encode to,
// validates against schema.json.
func TestRecordsMatchSchema(t *testing.T) {
	s := testenv.CompileSchema(t, Schema)
	for name, e := range sampleEvents() {
		if err := testenv.ValidateJSON(s, e.AppendJSON(nil)); err != nil {
			t.Errorf("%s: %v\n%s", name, err, e.AppendJSON(nil))
		}
	}
	seeds, _ := filepath.Glob(filepath.Join("testdata", "json", "*.json"))
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var e Event
		if err := UnmarshalJSONEvent(b, &e); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if strings.Contains(p, "dnp3-ipv6-offset") {
			continue // its fields hold 1e400, which no schema integer is
		}
		if err := testenv.ValidateJSON(s, e.AppendJSON(nil)); err != nil {
			t.Errorf("%s re-encoded: %v\n%s", p, err, e.AppendJSON(nil))
		}
	}
}

// The schema is strict enough to catch the old shapes and broken values.
func TestSchemaRejects(t *testing.T) {
	s := testenv.CompileSchema(t, Schema)
	good := string(sampleEvents()["modbus-deny"].AppendJSON(nil))
	for _, tc := range []struct{ name, rec string }{
		{"old key frame", strings.Replace(good, `"seq":1`, `"seq":1,"frame":4`, 1)},
		{"old combined src", strings.Replace(good, `"seq":1`, `"seq":1,"src":"192.0.2.130:40001"`, 1)},
		{"timestamp without microseconds", strings.Replace(good, `08:00:00.005000Z`, `08:00:00.005Z`, 1)},
		{"proto as application", strings.Replace(good, `"proto":"TCP"`, `"proto":"modbus"`, 1)},
		{"fc without function name", strings.Replace(good, `"function":"write_single_register",`, ``, 1)},
		{"deny without reason", strings.Replace(good, `"reason":"function_not_allowed",`, ``, 1)},
		{"bad community id", strings.Replace(good, `"community_id":"1:`, `"community_id":"2:`, 1)},
		{"after_reset false", strings.Replace(good, `"seq":1`, `"seq":1,"after_reset":false`, 1)},
		{"after_reset with an action", strings.Replace(good, `"seq":1`, `"seq":1,"pcap_cnt":4,"after_reset":true`, 1)},
		{"invalid AddrPort", strings.Replace(good, `"src_ip":"192.0.2.130"`, `"src_ip":"invalid AddrPort","src":"invalid AddrPort"`, 1)},
	} {
		if err := testenv.ValidateJSON(s, []byte(tc.rec)); err == nil {
			t.Errorf("%s: schema accepted %s", tc.name, tc.rec)
		}
	}
}
