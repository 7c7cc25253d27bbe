package daemon

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// rssFileKB returns the process's resident file-backed pages (RssFile).
func rssFileKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(ln, "RssFile:") {
			kb, err := strconv.Atoi(strings.Fields(ln)[1])
			if err != nil {
				t.Fatal(err)
			}
			return kb
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestDropStartPages: the executable's read-only mappings leave the
// resident set and the code keeps running (the next touch maps a page
// again from the page cache).
func TestDropStartPages(t *testing.T) {
	before := rssFileKB(t)
	n, err := dropStartPages()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFileKB(t)
	st, err := os.Stat("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 || int64(n) > st.Size()+1<<20 {
		t.Errorf("dropped %d bytes of mappings, want (0, size of the executable %d]", n, st.Size())
	}
	t.Logf("RssFile %d KiB before, %d KiB after dropping %d bytes of mappings", before, after, n)
	if after >= before {
		t.Errorf("RssFile %d KiB after dropping, want less than %d KiB", after, before)
	}
	// Code and read-only data fault back in: run something that touches
	// much of both.
	var sb strings.Builder
	for i := range 1000 {
		sb.WriteString(strconv.Quote(strings.Repeat("é", i%7)))
	}
	if sb.Len() == 0 {
		t.Fatal("nothing written")
	}
}
