package daemon

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// dropStartPages unmaps from the process the pages of its own executable
// that are mapped read-only (text, rodata, pclntab), so that what stays
// resident is what the running gateway touches again, not everything
// package initialisation and start-up touched (with the kernel's
// fault-around, about 80% of a Go binary's 15 MB). The pages stay in the
// page cache: the next touch maps them again (a minor fault), with the
// same contents, as the mappings are private and never written. It
// returns the bytes of mappings it dropped.
func dropStartPages() (int, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	total := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		// start-end perms offset dev inode path
		if len(fs) < 6 || fs[5] != exe || strings.Contains(fs[1], "w") || !strings.HasSuffix(fs[1], "p") {
			continue
		}
		lo, hi, ok := strings.Cut(fs[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED); e != 0 {
			return total, e
		}
		total += int(end - start)
	}
	return total, sc.Err()
}
