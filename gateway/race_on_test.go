//go:build race

package gateway

// raceEnabled: under the race detector the heap figures (and the time)
// of the large memory tests mean nothing; they run smaller and check the
// engine's own accounting only.
const raceEnabled = true
