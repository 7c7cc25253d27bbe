package gateway

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

// threadCPU returns the CPU time (user + system) the calling OS thread has
// used.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_THREAD, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuPerFrame runs loop on one locked OS thread and reports its CPU time
// per frame ("cpu-ns/frame"): unlike ns/op, it does not grow when other
// processes share the machine's cores, so before/after comparisons hold on
// a busy host.
func cpuPerFrame(b *testing.B, frames int, loop func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c0 := threadCPU()
	loop()
	b.ReportMetric(float64(threadCPU()-c0)/float64(frames*b.N), "cpu-ns/frame")
}
