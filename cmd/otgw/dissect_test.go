package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDissectJSONFieldsInOrder checks the dissect JSON contract of
// DESIGN.md on the project's own generated captures: one object per PDU,
// common fields first in order, then the protocol's fields.
func TestDissectJSONFieldsInOrder(t *testing.T) {
	cases := []struct {
		file   string
		proto  string
		fields []string // in order, after frame,time,src,dst,proto,dir
	}{
		{"../../protocols/modbus/testdata/functions.pcap", "modbus", []string{"tid", "unit", "fc"}},
		{"../../protocols/dnp3/testdata/dnp3_functions.pcap", "dnp3", []string{"link_src", "link_dst"}},
		{"../../protocols/opcua/testdata/session.pcap", "opcua", []string{"msg_type", "chunk"}},
	}
	for _, tc := range cases {
		t.Run(tc.proto, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run([]string{"dissect", "--json", tc.file}, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) < 4 {
				t.Fatalf("got %d PDUs, want several", len(lines))
			}
			for i, l := range lines {
				dec := json.NewDecoder(strings.NewReader(l))
				var keys []string
				if _, err := dec.Token(); err != nil {
					t.Fatalf("line %d: %v", i+1, err)
				}
				for dec.More() {
					k, _ := dec.Token()
					keys = append(keys, k.(string))
					var v any
					if err := dec.Decode(&v); err != nil {
						t.Fatalf("line %d: %v", i+1, err)
					}
					if k == "proto" && v != tc.proto {
						t.Errorf("line %d: proto %v, want %s", i+1, v, tc.proto)
					}
				}
				want := append([]string{"frame", "time", "src", "dst", "proto", "dir"}, tc.fields...)
				if len(keys) < len(want) || strings.Join(keys[:len(want)], ",") != strings.Join(want, ",") {
					t.Errorf("line %d: keys %v, want prefix %v", i+1, keys, want)
				}
			}
		})
	}
}

func TestDissectTableAndErrors(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"dissect", "../../protocols/modbus/testdata/split.pcap"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "FRAME") || !strings.Contains(out.String(), "modbus") {
		t.Errorf("table output:\n%s", out.String())
	}
	bad := filepath.Join(t.TempDir(), "notes.pcap")
	os.WriteFile(bad, []byte("this is not a capture"), 0o644)
	out.Reset()
	errb.Reset()
	if code := run([]string{"dissect", bad}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "notes.pcap") {
		t.Errorf("bad file: exit %d, stderr %q; want 1 naming the file", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"dissect", "--port", "dnp3=notaport", bad}, &out, &errb); code != 2 {
		t.Errorf("bad --port: exit %d, want 2", code)
	}
}
