//go:build !race

package txlog_test

const raceEnabled = false
