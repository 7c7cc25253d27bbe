package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBoardCommand(t *testing.T) {
	root := t.TempDir()
	dt := filepath.Join(root, "proc/device-tree")
	os.MkdirAll(dt, 0o755)
	os.WriteFile(filepath.Join(dt, "compatible"), []byte("fsl,ls1021a-iot\x00fsl,ls1021a\x00"), 0o644)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"list", []string{"board", "list"}, 0, "nanopi-r4s"},
		{"list json", []string{"board", "--json", "list"}, 0, `"Name": "ls1021a-iot"`},
		{"detect fake tree", []string{"board", "detect", "--root", root}, 0, "ls1021a-iot\n"},
		{"detect nothing", []string{"board", "detect", "--root", t.TempDir()}, 1, ""},
		{"no verb", []string{"board"}, 2, ""},
		{"bad verb", []string{"board", "explode"}, 2, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.wantCode {
				t.Fatalf("exit = %d, want %d; stderr: %s", code, tc.wantCode, errb.String())
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Errorf("stdout = %q, want it to contain %q", out.String(), tc.wantOut)
			}
		})
	}
}
