//go:build !linux

package replay

// mapHuge returns nil where replay does not map memory itself: the
// callers allocate on the Go heap.
func mapHuge(int) []byte { return nil }

func unmapHuge([]byte) {}
