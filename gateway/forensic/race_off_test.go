//go:build !race

package forensic_test

const raceEnabled = false
