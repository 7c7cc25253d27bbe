package main

import (
	"path/filepath"
	"testing"

	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/dissect"
	"github.com/otgw/otgw/simulate/replay"
)

// TestCaptureIsCleanAndAllowed: the benchmark capture has the frames
// asked for, every PDU dissects without anomaly, and its policy allows
// every one through the engine (so the benchmark judges, not drops).
func TestCaptureIsCleanAndAllowed(t *testing.T) {
	const frames, conns = 2000, 30
	dir := t.TempDir()
	if err := run(frames, conns, dir); err != nil {
		t.Fatal(err)
	}
	pcap := filepath.Join(dir, "offline.pcap")
	wantPDUs := frames - 3*conns // all but the handshakes carry one PDU
	pdus, protos := 0, map[string]int{}
	st, err := dissect.Run(pcap, dissect.Options{}, func(p *dissect.PDU) error {
		pdus++
		protos[p.Proto.String()]++
		if p.Anomaly != "" {
			t.Errorf("frame %d: anomaly %s", p.Frame, p.Anomaly)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Frames != frames || pdus != wantPDUs || protos["modbus"] == 0 || protos["dnp3"] == 0 {
		t.Errorf("got %d frames, %d PDUs %v; want %d frames, %d PDUs of both protocols", st.Frames, pdus, protos, frames, wantPDUs)
	}
	pol, err := rules.Load(filepath.Join(dir, "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := replay.Run(replay.Options{Policy: pol}, pcap)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Forwarded != frames || rep.PDUsAllowed != wantPDUs || rep.PDUsDenied+rep.PDUsAlerted+rep.Denies+rep.Alerts != 0 {
		t.Errorf("replay: %d forwarded, %d PDUs allowed, %d denied, %d alerted, %d denies, %d alerts; want %d forwarded, %d allowed, nothing else",
			rep.Forwarded, rep.PDUsAllowed, rep.PDUsDenied, rep.PDUsAlerted, rep.Denies, rep.Alerts, frames, wantPDUs)
	}
}
