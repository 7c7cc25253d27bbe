package events

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// UnmarshalJSONEvent rejects what AppendJSON cannot have written, leaving
// the event zero.
func TestUnmarshalJSONEventRejects(t *testing.T) {
	tests := []struct {
		name, in string
	}{
		{"empty", ""},
		{"not an object", "[1,2]"},
		{"trailing data", `{"seq":1,"severity":"info","type":"start"} {"seq":2}`},
		{"trailing garbage", `{"seq":1,"severity":"info","type":"start"}x`},
		{"unknown severity", `{"seq":1,"severity":"loud","type":"start"}`},
		{"missing severity", `{"seq":1,"type":"start"}`},
		{"negative seq", `{"seq":-1,"severity":"info","type":"start"}`},
		{"bad time", `{"seq":1,"severity":"info","type":"start","time":"yesterday"}`},
		{"time before year 0 in UTC", `{"seq":1,"severity":"info","type":"start","time":"0000-01-01T00:00:00+01:00"}`},
		{"bad src", `{"seq":1,"severity":"info","type":"start","src":"192.0.2.1"}`},
		{"bad dst", `{"seq":1,"severity":"info","type":"start","dst":"[::1]:99999"}`},
		{"wrong type", `{"seq":"1","severity":"info","type":"start"}`},
	}
	for _, tc := range tests {
		e := Event{Seq: 99, Message: "stale"}
		err := UnmarshalJSONEvent([]byte(tc.in), &e)
		if got, want := err != nil, true; got != want {
			t.Errorf("%s: error = %v, want an error", tc.name, err)
		}
		if !reflect.DeepEqual(e, Event{}) {
			t.Errorf("%s: event %+v after an error, want zero", tc.name, e)
		}
	}
}

// FuzzUnmarshalJSONEvent seeds: testdata/json/*.json, one event per file
// (a deny with escapes, a minimal start, a gap, a dnp3 alert with IPv6,
// zone, max seq, offset time with ns and an out-of-range number, an update
// with non-ASCII and control characters). Invariants: no panic; an error
// leaves the event zero; a decoded event re-encodes to JSON that decodes
// again and re-encodes to the same bytes (AppendJSON is a fixed point).
func FuzzUnmarshalJSONEvent(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "json", "*.json"))
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seeds in testdata/json: %v", err)
	}
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		if err := UnmarshalJSONEvent(b, &e); err != nil {
			if !reflect.DeepEqual(e, Event{}) {
				t.Fatalf("error %v but event %+v", err, e)
			}
			return
		}
		a := e.AppendJSON(nil)
		var e2 Event
		if err := UnmarshalJSONEvent(a, &e2); err != nil {
			t.Fatalf("re-encoded event does not decode: %v\n%s", err, a)
		}
		if a2 := e2.AppendJSON(nil); !bytes.Equal(a, a2) {
			t.Fatalf("not a fixed point:\n%s\n%s", a, a2)
		}
	})
}
