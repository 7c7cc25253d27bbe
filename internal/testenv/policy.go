package testenv

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// UnitsPolicy returns a policy whose one modbus rule has the units list
// units, and the line that list is on.
func UnitsPolicy(units string) (src string, line int) {
	head := `version: 1
name: limits
zones:
  north: { port: north, networks: [192.0.2.128/25] }
  south: { port: south, networks: [192.0.2.0/25] }
conduits:
  - name: c
    from: north
    to: south
    rules:
      - modbus:
          units: `
	return head + units + "\n", strings.Count(head, "\n") + 1
}

// HugePolicy writes dir/big.yaml, a policy whose modbus units list (line
// 12) has entries entries "1, " (so a file of N bytes holds about N/3
// entries; 100 MB for 33 M entries), and returns its path.
func HugePolicy(t testing.TB, dir string, entries int) string {
	t.Helper()
	var b bytes.Buffer
	src, _ := UnitsPolicy("[")
	b.WriteString(strings.TrimSuffix(src, "\n"))
	chunk := bytes.Repeat([]byte("1, "), 1<<16)
	for range entries >> 16 {
		b.Write(chunk)
	}
	b.Write(chunk[:3*(entries&(1<<16-1))])
	b.WriteString("1]\n")
	path := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// AllocSlack is what Allocated may count besides fn's own allocations:
// other goroutines of the test binary and, under -race, the detector's
// shadow bookkeeping (CI's race pass measured 1.5 KiB over a bare bound).
const AllocSlack = 256 << 10

// Allocated returns the bytes fn allocates (runtime.MemStats.TotalAlloc,
// after a GC); compare with a bound plus AllocSlack.
func Allocated(fn func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}
