// Package pcaptest writes captures for tests.
package pcaptest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/otgw/otgw/simulate/capture"
)

// Write writes frames as the pcap file name in t's temporary directory
// and returns its path.
func Write(t testing.TB, name string, frames [][]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	WriteFile(t, path, frames)
	return path
}

// WriteFile writes frames as the pcap file path.
func WriteFile(t testing.TB, path string, frames [][]byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := capture.NewWriter(f)
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	for _, fr := range frames {
		if err := w.WriteFrame(fr); err != nil {
			f.Close()
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
