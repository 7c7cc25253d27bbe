package rules

import (
	"os"
	"testing"

	"github.com/otgw/otgw/protocols"
)

func mustRead(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mustAnomaly is proto's anomaly named name; it panics when there is none.
func mustAnomaly(proto protocols.Proto, name string) protocols.Anomaly {
	a, ok := protocols.AnomalyByName(proto, name)
	if !ok {
		panic("no " + proto.String() + " anomaly " + name)
	}
	return a
}
