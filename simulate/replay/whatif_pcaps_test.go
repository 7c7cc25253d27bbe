package replay_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/rules/learn"
	"github.com/otgw/otgw/simulate/learnrun"
	"github.com/otgw/otgw/simulate/replay"
)

// readOnlyDraft turns every write permission of a learned policy into
// the read of the same points (issue 14's experiment): Modbus writes
// become reads of the same table and addresses, DNP3 control and write
// functions become read, OPC UA write and call become read.
func readOnlyDraft(p *rules.Policy) {
	control := []string{"write", "select", "operate", "direct_operate", "direct_operate_nr"}
	for ci := range p.Conduits {
		for ri := range p.Conduits[ci].Rules {
			r := &p.Conduits[ci].Rules[ri]
			if r.Modbus != nil {
				for i := range r.Modbus.Allow {
					a := &r.Modbus.Allow[i]
					if a.Write != "" {
						a.Read, a.Write, a.Values = a.Write, "", ""
					}
				}
			}
			if r.DNP3 != nil {
				for i := range r.DNP3.Allow {
					a := &r.DNP3.Allow[i]
					if slices.ContainsFunc(a.Function, func(f string) bool { return slices.Contains(control, f) }) {
						a.Function, a.Objects = []string{"read"}, nil
					}
				}
			}
			if r.OPCUA != nil {
				for i := range r.OPCUA.Allow {
					a := &r.OPCUA.Allow[i]
					if slices.Contains(a.Service, "write") || slices.Contains(a.Service, "call") {
						a.Service, a.Nodes = []string{"read"}, nil
					}
				}
			}
		}
	}
}

func monitorCopy(p *rules.Policy) *rules.Policy {
	m := *p
	m.Mode = "monitor"
	m.Conduits = slices.Clone(p.Conduits)
	for i := range m.Conduits {
		m.Conduits[i].Mode = "monitor"
	}
	return &m
}

func key(e *replay.Event) string {
	f, _ := json.Marshal(e.Fields)
	return fmt.Sprintf("%s:%d %s %s/%s %s>%s %s", e.File, e.Frame, e.Reason, e.Conduit, e.Rule, e.Src, e.Dst, f)
}

// TestWhatIfOnSharedCaptures runs issue 14's experiment on every capture
// of ../shared/pcaps: learn a policy, narrow every write permission to a
// read, and replay it. The enforce-mode replay of the gateway on the wire
// reports one deny per connection; the what-if replay must report every
// refused PDU, exactly the alerts of a monitor-mode replay. The numbers
// are logged (go test -v -run WhatIfOnShared).
func TestWhatIfOnSharedCaptures(t *testing.T) {
	if testing.Short() {
		t.Skip("learns and replays every shared capture four times (about 15 s)")
	}
	dir := testenv.Pcaps(t)
	paths, _ := filepath.Glob(filepath.Join(dir, "*.pcap*"))
	if len(paths) == 0 {
		t.Fatalf("no captures in %s", dir)
	}
	sort.Strings(paths)
	var rows []string
	var sumMon, sumWire, sumRefused, sumAfter int
	for _, path := range paths {
		name := filepath.Base(path)
		pol, _, err := learnrun.Learn(learn.Options{}, path)
		if err != nil {
			t.Errorf("%s: learn: %v", name, err)
			continue
		}
		readOnlyDraft(pol)
		if _, err := rules.Compile(pol); err != nil {
			t.Errorf("%s: the read-only draft does not compile: %v", name, err)
			continue
		}
		var wireDenies int
		if _, err := replay.Run(replay.Options{Policy: pol, OnEvent: func(e *replay.Event) {
			if e.Verdict == "deny" && e.Rule != "" {
				wireDenies++
			}
		}}, path); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var refused, alerts []string
		rep, err := replay.Run(replay.Options{Policy: pol, WhatIf: true, OnEvent: func(e *replay.Event) {
			if e.Refused {
				refused = append(refused, key(e))
			}
		}}, path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := replay.Run(replay.Options{Policy: monitorCopy(pol), OnEvent: func(e *replay.Event) {
			if e.Verdict == "alert" && !strings.HasPrefix(e.Reason, gateway.ReasonDetectPrefix) {
				alerts = append(alerts, key(e))
			}
		}}, path); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sort.Strings(refused)
		sort.Strings(alerts)
		if !slices.Equal(refused, alerts) {
			t.Errorf("%s: what-if refuses %d, monitor alerts on %d; they differ", name, len(refused), len(alerts))
		}
		w := rep.WhatIf
		sumMon += len(alerts)
		sumWire += wireDenies
		sumRefused += w.Refused
		sumAfter += w.AfterReset
		if len(alerts) > 0 {
			rows = append(rows, fmt.Sprintf("%-52s monitor %5d  wire %4d  what-if %5d (after reset %5d; %d requests, %d distinct)",
				name, len(alerts), wireDenies, w.Refused, w.AfterReset, w.Requests, w.DistinctRequests))
		}
	}
	for _, r := range rows {
		t.Log(r)
	}
	t.Logf("%d captures: monitor alerts %d; enforce replay denies on the wire %d; what-if refused %d (%d after a reset)",
		len(paths), sumMon, sumWire, sumRefused, sumAfter)
	if sumRefused != sumMon || sumAfter == 0 {
		t.Errorf("what-if refused %d, monitor alerts %d, after reset %d", sumRefused, sumMon, sumAfter)
	}
}
