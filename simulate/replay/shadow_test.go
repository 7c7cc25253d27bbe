package replay

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"sort"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/rules"
)

// readEverything admits every host to every host, reads only: the shared
// captures' writes are denied, their connections reset, and the what-if
// evaluation judges what follows (after_reset).
const readEverything = `version: 1
name: read-everything
mode: enforce
action: reset
zones:
  all: { networks: [0.0.0.0/0, "::/0"] }
l2: { allow: [arp, lldp, llc] }
conduits:
  - name: reads
    from: all
    to: all
    rules:
      - modbus:
          allow:
            - read: holding 0-65535
            - read: input 0-65535
            - read: coils 0-65535
            - read: discrete 0-65535
      - dnp3:
          allow:
            - function: read
            - function: confirm
      - opcua:
          allow:
            - service: [read, browse]
`

// whatIfOutput replays paths with the what-if evaluation and returns every
// event's JSON line and the report's JSON.
func whatIfOutput(t *testing.T, pol *rules.Policy, paths ...string) (events, report []byte) {
	t.Helper()
	var ev bytes.Buffer
	rep, err := Run(Options{Policy: pol, WhatIf: true, Workers: 1, OnEvent: func(e *Event) {
		ev.Write(e.JSON())
		ev.WriteByte('\n')
	}}, paths...)
	if err != nil {
		t.Fatal(err)
	}
	rj, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	return ev.Bytes(), rj
}

// TestShadowPipelineSameOutput: with the what-if engine on its own
// goroutine, up to shadowLag frames behind, eager or lazy (lazy.go), the
// events (each JSON line, in order) and report.json are byte for byte
// those of the eager shadow settling each frame before reading the next,
// on every scenario with its policy and on every shared capture under a
// read-only policy.
func TestShadowPipelineSameOutput(t *testing.T) {
	inputs := scenarioInputs(t)
	shared, _ := filepath.Glob(filepath.Join(testenv.Pcaps(t), "*.pcap*"))
	sort.Strings(shared)
	inputs = append(inputs, replayInput{name: "shared captures, merged", pol: mustPolicy(t, readEverything), paths: shared})
	afterReset := 0
	defer func() { shadowPipelined, shadowLazy = true, true }()
	for _, in := range inputs {
		shadowPipelined, shadowLazy = false, false
		wantEv, wantRep := whatIfOutput(t, in.pol, in.paths...)
		shadowPipelined = true
		// The eager and the lazy shadow (lazy.go).
		for _, lazy := range []bool{false, true} {
			shadowLazy = lazy
			gotEv, gotRep := whatIfOutput(t, in.pol, in.paths...)
			name := in.name + map[bool]string{false: ", eager shadow", true: ", lazy shadow"}[lazy]
			if !bytes.Equal(gotEv, wantEv) {
				t.Errorf("%s: events differ from frame-by-frame settling (%d vs %d bytes)", name, len(gotEv), len(wantEv))
			}
			if !bytes.Equal(gotRep, wantRep) {
				t.Errorf("%s: report differs from frame-by-frame settling", name)
			}
			afterReset += bytes.Count(gotEv, []byte(`"after_reset":true`))
		}
	}
	if afterReset == 0 {
		t.Error("no after_reset event in any input: the test does not exercise the shadow")
	}
	t.Logf("%d inputs, %d after_reset events", len(inputs), afterReset)
}
