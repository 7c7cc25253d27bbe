package rules_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/simulate/replay"
)

// TestRequireAuthRealCapture replays a real Secure Authentication exchange
// (direct operate, challenge, reply, response; ITI capture in the shared
// corpus) through the gateway under require_auth: every PDU must cross.
// Without the challenge and reply in the capture the response would be
// denied (auth_required), which TestRequireAuthExchanges covers.
// The zone addresses are the hosts of that capture, not test hosts of ours.
func TestRequireAuthRealCapture(t *testing.T) {
	path := filepath.Join(testenv.Pcaps(t), "dnp3_iti_auth_control_challenge_response.pcap")
	src := []byte(`version: 1
zones:
  master: { networks: [192.168.1.2/32] }
  outstation: { networks: [192.168.1.1/32] }
conduits:
  - name: scada
    from: master
    to: outstation
    rules:
      - dnp3:
          masters: [3]
          outstations: [4]
          require_auth: true
          allow:
            - function: direct_operate
              objects: [g12v1]
`)
	run := func(t *testing.T, src []byte) (*replay.Report, []*replay.Event) {
		t.Helper()
		p, err := rules.Parse("auth.yaml", src)
		if err != nil {
			t.Fatal(err)
		}
		var evs []*replay.Event
		rep, err := replay.Run(replay.Options{Policy: p, OnEvent: func(e *replay.Event) { evs = append(evs, e) }}, path)
		if err != nil {
			t.Fatal(err)
		}
		return rep, evs
	}
	rep, evs := run(t, src)
	for _, e := range evs {
		t.Errorf("require_auth: frame %d: %s %s %v", e.Frame, e.Verdict, e.Reason, e.Fields)
	}
	// direct operate, challenge, reply, response (the capture's truth CSV).
	if rep.PDUsAllowed != 4 {
		t.Errorf("require_auth: %d PDUs allowed, want 4", rep.PDUsAllowed)
	}
	// Without require_auth the authentication request is a function like
	// any other and, not listed, is denied: the option is what let it pass.
	off := bytes.Replace(src, []byte("require_auth: true"), []byte("require_auth: false"), 1)
	_, evs = run(t, off)
	if len(evs) == 0 || evs[0].Frame != 3 || evs[0].Reason != "function_not_allowed" {
		t.Errorf("without require_auth: events %+v, want the first at frame 3 with function_not_allowed", evs)
	}
}
