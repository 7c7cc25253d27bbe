package main

import (
	"testing"

	"github.com/otgw/otgw/gateway"
)

// TestRunMemoryLimitGrowsWithTheTable checks that otgw run's soft memory
// limit is the documented 88 MiB for the default table (and smaller ones)
// and grows by exactly the extra slots of a larger table.
func TestRunMemoryLimitGrowsWithTheTable(t *testing.T) {
	for _, n := range []int{0, 1024, gateway.DefaultMaxFlows} {
		if got := runMemoryLimitFor(n); got != runMemoryLimit {
			t.Errorf("max flows %d: limit %d, want %d", n, got, runMemoryLimit)
		}
	}
	n := 4 * gateway.DefaultMaxFlows
	want := int64(runMemoryLimit) + gateway.TableBytes(n) - gateway.TableBytes(gateway.DefaultMaxFlows)
	if got := runMemoryLimitFor(n); got != want || got <= runMemoryLimit {
		t.Errorf("max flows %d: limit %d, want %d", n, got, want)
	}
}
