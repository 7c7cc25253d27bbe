package replay

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/simulate/capture"
)

// manyWrites is the capture of issue 14's what-if case, made small: one
// HMI connection to the PLC that polls holding registers and, between the
// polls, writes (FC 6 and FC 16, some to the same register twice), each
// answered by the PLC. It returns the frames and the frame numbers of the
// writes.
func manyWrites(writes int) (frames [][]byte, writeFrames []int, distinct int) {
	f := capture.NewTCPFlow(testHMI, testPLC)
	frames = append(frames, f.Handshake()...)
	tid := uint16(0)
	send := func(client bool, b []byte) int {
		frames = append(frames, f.Send(client, b))
		return len(frames)
	}
	seen := map[uint16]bool{}
	for i := range writes {
		tid++
		send(true, readReq(tid))
		send(false, readResp(tid))
		tid++
		addr := uint16(40 + i%7) // 7 registers, written again and again
		var pdu []byte
		if i%2 == 0 {
			pdu = modbus.AppendWriteSingleRegister(nil, addr, uint16(i))
		} else {
			pdu = modbus.AppendWriteMultipleRegisters(nil, addr, []uint16{uint16(i), 7})
		}
		if !seen[addr<<1|uint16(i%2)] {
			seen[addr<<1|uint16(i%2)] = true
			distinct++
		}
		writeFrames = append(writeFrames, send(true, modbus.AppendRequest(nil, tid, 1, pdu)))
		send(false, modbus.AppendResponse(nil, tid, 1, pdu[:5])) // the echo of FC 6 and FC 16
	}
	tid++
	send(true, readReq(tid))
	send(false, readResp(tid))
	return frames, writeFrames, distinct
}

// TestWhatIfEveryWriteRefused is issue 14's case on a capture we
// generate: a read-only policy, in enforce mode, over one connection that
// writes many times. The gateway on the wire denies the first write and
// resets (or, action drop, blocks) the connection; every later frame is
// "closed" (or "blocked"). The what-if replay must report every write as
// refused with the policy's reason: the first as the deny on the wire,
// the others after_reset; and its numbers must be those of a
// monitor-mode replay.
func TestWhatIfEveryWriteRefused(t *testing.T) {
	const writes = 25
	frames, writeFrames, distinct := manyWrites(writes)
	path := writeCapture(t, frames)
	schema := testenv.CompileSchema(t, events.Schema)
	for _, action := range []string{"drop", "reset", "reply"} {
		t.Run(action, func(t *testing.T) {
			y := strings.Replace(readOnly, "action: drop", "action: "+action, 1)
			wire, wireEvs := replayEvents(t, y, path, false)
			got, evs := replayEvents(t, y, path, true)
			mon, monEvs := replayEvents(t, strings.Replace(y, "name: ro", "name: ro\nmode: monitor", 1), path, false)

			// The wire: one deny, then the connection is gone.
			if n := countReason(wireEvs, "function_not_allowed"); n != 1 {
				t.Fatalf("enforce replay without what-if: %d function_not_allowed, want 1 (the deny that cuts the connection)", n)
			}
			if mon.PDUsAlerted != writes || countReason(monEvs, "function_not_allowed") != writes {
				t.Fatalf("monitor replay: %d alerted, want %d", mon.PDUsAlerted, writes)
			}
			// What-if: every write, at its frame, with its reason.
			var refused []*Event
			for _, e := range evs {
				if e.Reason == "function_not_allowed" {
					refused = append(refused, e)
				}
			}
			if len(refused) != writes {
				t.Fatalf("what-if: %d refusals, want %d (one per write)", len(refused), writes)
			}
			for i, e := range refused {
				if e.Frame != writeFrames[i] || !e.Refused || e.Verdict != "deny" || e.Mode != "enforce" || e.Conduit != "hmi-plc" || e.Rule != "modbus#1" {
					t.Errorf("refusal %d: frame %d refused %v %s %s %s/%s, want frame %d, refused deny enforce hmi-plc/modbus#1",
						i, e.Frame, e.Refused, e.Verdict, e.Mode, e.Conduit, e.Rule, writeFrames[i])
				}
				if e.AfterReset != (i > 0) {
					t.Errorf("refusal %d (frame %d): after_reset %v, want %v", i, e.Frame, e.AfterReset, i > 0)
				}
				rec := e.JSON()
				if err := testenv.ValidateJSON(schema, rec); err != nil {
					t.Errorf("refusal %d: record %s: %v", i, rec, err)
				}
				if i > 0 && (!bytes.Contains(rec, []byte(`"after_reset":true`)) || bytes.Contains(rec, []byte(`"action"`))) {
					t.Errorf("refusal %d: record %s: want after_reset and no action", i, rec)
				}
				if i == 0 && (bytes.Contains(rec, []byte(`after_reset`)) || !bytes.Contains(rec, []byte(`"action":"`+action+`"`))) {
					t.Errorf("first refusal: record %s: want the wire's action %s and no after_reset", rec, action)
				}
			}
			// The frames that carry a refusal are reported by it; the
			// others the resets cut keep their normaliser reason. With
			// action drop the connection lives on, blocked: the PLC's
			// answer to the dropped write is a response without request
			// (a consequence of enforcement, not a refusal of the
			// policy), and the HMI's later segments acknowledge bytes
			// the gateway never let through.
			cutReasons := map[string]bool{"closed": true}
			wantConseq := 0
			if action == "drop" {
				cutReasons = map[string]bool{"blocked": true, "out_of_window": true}
				wantConseq = 1
			}
			cut, conseq := 0, 0
			for _, e := range evs {
				switch {
				case e.Reason == "function_not_allowed":
				case cutReasons[e.Reason]:
					cut++
				case action == "drop" && e.Reason == "malformed:response_without_request" && !e.Refused:
					conseq++
				default:
					t.Errorf("what-if event %s at frame %d", e.Reason, e.Frame)
				}
			}
			w := got.WhatIf
			if w == nil {
				t.Fatal("Report.WhatIf is nil")
			}
			if w.Refused != writes || w.Requests != writes || w.OnWire != 1 || w.AfterReset != writes-1 || w.DistinctRequests != distinct ||
				w.Conduits != 1 || w.ConnectionsCut != 1 || w.Consequences != wantConseq || conseq != wantConseq {
				t.Errorf("WhatIf %+v: want %d refused requests (%d distinct), 1 on the wire, %d after reset, 1 conduit, 1 connection cut",
					*w, writes, distinct, writes-1)
			}
			if want := mon.PDUsAllowed - wire.PDUsAllowed; w.CutAllowedPDUs != want || want <= 2*(writes-1) {
				t.Errorf("cut allowed PDUs %d, want %d (monitor allows %d, enforce %d)", w.CutAllowedPDUs, want, mon.PDUsAllowed, wire.PDUsAllowed)
			}
			if w.CutFrames != cut || cut == 0 {
				t.Errorf("cut frames %d, normaliser drop events %d", w.CutFrames, cut)
			}
			// Two groups: FC 6 and FC 16, together every write.
			if len(w.ByFunction) != 2 || w.ByFunction[0].N+w.ByFunction[1].N != writes || w.ByFunction[0].Distinct+w.ByFunction[1].Distinct != distinct {
				t.Errorf("by function %+v", w.ByFunction)
			}
			// The engine's own counts stay those of the wire.
			if got.PDUsDenied != wire.PDUsDenied || got.PDUsAllowed != wire.PDUsAllowed || got.Forwarded != wire.Forwarded || got.Dropped != wire.Dropped {
				t.Errorf("what-if changed the wire's numbers: %s vs %s", got, wire)
			}
			var sum bytes.Buffer
			if err := got.WriteSummary(&sum); err != nil {
				t.Fatal(err)
			}
			lines := strings.SplitN(sum.String(), "\n", 4)
			if len(lines) < 3 || !strings.HasPrefix(lines[1], "what-if: the policy refuses 25 requests (14 distinct) on 1 conduit: 1 reported by the gateway on the wire, 24 only after the deny") {
				t.Errorf("summary does not lead with the refusals:\n%s", sum.String())
			}
			dir := t.TempDir()
			if err := got.WriteFiles(dir); err != nil {
				t.Fatal(err)
			}
			checkReportFiles(t, dir, writes, distinct)
		})
	}
}

// checkReportFiles checks that report.json and report.html lead with the
// refused requests.
func checkReportFiles(t *testing.T, dir string, requests, distinct int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		WhatIf *struct {
			Requests   int `json:"requests"`
			Distinct   int `json:"distinct_requests"`
			ByFunction []struct {
				Conduit, Function string
				N                 int
			} `json:"by_function"`
		} `json:"what_if"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.WhatIf == nil || rep.WhatIf.Requests != requests || rep.WhatIf.Distinct != distinct || len(rep.WhatIf.ByFunction) == 0 {
		t.Errorf("report.json what_if %+v: want %d requests, %d distinct", rep.WhatIf, requests, distinct)
	}
	if i, j := bytes.Index(b, []byte(`"what_if"`)), bytes.Index(b, []byte(`"frames"`)); i < 0 || i > j {
		t.Error("report.json does not lead with what_if")
	}
	h, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	i, j := bytes.Index(h, []byte("What would fail")), bytes.Index(h, []byte("Zones and conduits"))
	if i < 0 || i > j || !bytes.Contains(h, []byte("write_single_register (6)")) {
		t.Error("report.html does not lead with what would fail, per function")
	}
}

// replayEvents replays path under the policy y and returns the report and
// the events.
func replayEvents(t *testing.T, y, path string, whatIf bool) (*Report, []*Event) {
	t.Helper()
	var evs []*Event
	rep, err := Run(Options{Policy: mustPolicy(t, y), WhatIf: whatIf, MaxFlows: 64, OnEvent: func(e *Event) { evs = append(evs, e) }}, path)
	if err != nil {
		t.Fatal(err)
	}
	return rep, evs
}

func countReason(evs []*Event, reason string) int {
	n := 0
	for _, e := range evs {
		if e.Reason == reason {
			n++
		}
	}
	return n
}
