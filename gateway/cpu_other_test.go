//go:build !linux

package gateway

import "testing"

// cpuPerFrame runs loop (thread CPU time is measured on Linux only).
func cpuPerFrame(_ *testing.B, _ int, loop func()) { loop() }
