//go:build race

package replay

// raceEnabled: the race detector allocates on its own (sync.Pool keeps
// nothing under it), so allocation counts mean nothing.
const raceEnabled = true
