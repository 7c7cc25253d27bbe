//go:build linux

package replay

import "syscall"

// mapHuge maps n bytes of zeroed anonymous memory, outside the Go heap,
// advised as transparent huge pages: touching fresh memory costs a page
// fault per 2 MiB instead of per 4 KiB where the kernel grants them (on
// the VM replay was measured on, 4 KiB faults cost ~3 ms per MiB). It
// returns nil when it cannot map them; unmapHuge gives them back.
func mapHuge(n int) []byte {
	if n <= 0 {
		return nil
	}
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil
	}
	_ = syscall.Madvise(b, madvHugePage) // a kernel without THP: 4 KiB pages
	return b
}

// madvHugePage is MADV_HUGEPAGE (syscall has no name for it).
const madvHugePage = 14

func unmapHuge(b []byte) {
	if b != nil {
		_ = syscall.Munmap(b)
	}
}
