package dnp3

import (
	"testing"

	"github.com/otgw/otgw/protocols"
)

const (
	master     = 1
	outstation = 10
)

// exchange decodes the link frame b (sent in dir), reads Exchange, then
// commits it (passed and allowed as the engine would).
func exchange(s *Session, dir protocols.Dir, b []byte, passed, allowed bool) (protocols.Role, uint64) {
	s.Decode(dir, b)
	r, k := s.Exchange()
	s.Commit(passed, allowed)
	return r, k
}

func fromMaster(apdu []byte) []byte {
	return AppendLinkFrames(nil, CtrlMasterData, outstation, master, apdu)
}

func fromOutstation(apdu []byte) []byte {
	return AppendLinkFrames(nil, CtrlOutstationData, master, outstation, apdu)
}

func read(seq uint8) []byte { return fromMaster(AppendReadClass0123(nil, seq)) }

func response(seq uint8) []byte {
	return fromOutstation(AppendResponseHeader(nil, seq, FuncResponse, 0, false))
}

// fragment is a response fragment with FIR and FIN as given.
func fragment(seq uint8, fir, fin bool) []byte {
	ac := seq & appSeq
	if fir {
		ac |= AppFIR
	}
	if fin {
		ac |= AppFIN
	}
	return fromOutstation([]byte{ac, byte(FuncResponse), 0, 0})
}

// Exchange pairs a solicited response with the request whose application
// sequence number it echoes (IEEE 1815-2012 clause 4.2.2.4): out of order,
// a repeated request, a tolerated seq_mismatch (the nearest request
// before), and nothing for CONFIRM, unsolicited responses, the later
// fragments of a multi-fragment response or a response to nothing.
func TestExchange(t *testing.T) {
	type step struct {
		name          string
		dir           protocols.Dir
		b             []byte
		passed, allow bool
		role          protocols.Role
		key           uint64
	}
	req, resp := protocols.Request, protocols.Response
	none, rq, rs := protocols.RoleNone, protocols.RoleRequest, protocols.RoleResponse
	for _, tc := range []struct {
		name   string
		pickUp bool
		steps  []step
	}{
		{name: "in order", steps: []step{
			{"read 3", req, read(3), true, true, rq, 3},
			{"resp 3", resp, response(3), true, true, rs, 3},
			{"confirm 3", req, fromMaster(AppendConfirm(nil, 3, false)), true, true, none, 0},
			{"resp 3 again", resp, response(3), true, true, none, 0},
		}},
		{name: "out of order", steps: []step{
			{"read 1", req, read(1), true, true, rq, 1},
			{"read 2", req, read(2), true, true, rq, 2},
			{"resp 2", resp, response(2), true, true, rs, 2},
			{"resp 1", resp, response(1), true, true, rs, 1},
		}},
		{name: "unsolicited", steps: []step{
			{"read 4", req, read(4), true, true, rq, 4},
			{"unsolicited 4", resp, fromOutstation(AppendResponseHeader(nil, 4, FuncUnsolicitedResp, 0, true)), true, true, none, 0},
			{"confirm", req, fromMaster(AppendConfirm(nil, 4, true)), true, true, none, 0},
			{"resp 4", resp, response(4), true, true, rs, 4},
		}},
		{name: "multi-fragment", steps: []step{
			{"read 6", req, read(6), true, true, rq, 6},
			{"first", resp, fragment(6, true, false), true, true, rs, 6},
			{"middle", resp, fragment(7, false, false), true, true, none, 0},
			{"last", resp, fragment(8, false, true), true, true, none, 0},
			{"read 9", req, read(9), true, true, rq, 9},
			{"resp 9", resp, response(9), true, true, rs, 9},
		}},
		{name: "multi-fragment cut short", steps: []step{
			{"read 6", req, read(6), true, true, rq, 6},
			{"first", resp, fragment(6, true, false), true, true, rs, 6},
			{"read 7", req, read(7), true, true, rq, 7}, // the master moved on
			{"resp 7", resp, response(7), true, true, rs, 7},
		}},
		{name: "seq mismatch tolerated", steps: []step{
			{"read 6", req, read(6), true, true, rq, 6},
			{"resp 9", resp, response(9), true, true, rs, 6},
			{"resp 6", resp, response(6), true, true, none, 0}, // taken by resp 9
		}},
		{name: "seq mismatch refused", steps: []step{
			{"read 6", req, read(6), true, true, rq, 6},
			{"resp 9", resp, response(9), false, false, rs, 6}, // would answer it, had it been allowed
			{"resp 6", resp, response(6), true, true, rs, 6},
		}},
		{name: "repeated request", steps: []step{
			{"read 5", req, read(5), true, true, rq, 5},
			{"read 5 again", req, read(5), true, true, rq, 5},
			{"resp 5", resp, response(5), true, true, rs, 5},
			{"resp 5 again", resp, response(5), true, true, rs, 5},
			{"resp 5 third", resp, response(5), true, true, none, 0},
		}},
		{name: "denied request", steps: []step{
			{"read 2", req, read(2), false, false, rq, 2},
			{"resp 2", resp, response(2), true, true, none, 0},
		}},
		{name: "picked up", pickUp: true, steps: []step{
			{"resp 1", resp, response(1), true, true, none, 0}, // answers a request before the pickup
			{"read 2", req, read(2), true, true, rq, 2},
			{"resp 2", resp, response(2), true, true, rs, 2},
		}},
		{name: "not a pdu", steps: []step{
			{"link status", req, AppendLinkFrame(nil, CtrlMasterLinkStatus, outstation, master, nil), true, true, none, 0},
			{"direct operate nr", req, fromMaster(AppendCROB(nil, 3, FuncDirectOperateNR, 0, CROB{})), true, true, none, 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTCP()
			if tc.pickUp {
				s.PickUp()
			}
			for _, st := range tc.steps {
				r, k := exchange(s, st.dir, st.b, st.passed, st.allow)
				if r != st.role || k != st.key {
					t.Fatalf("%s: %v %d, want %v %d (anomaly %q)", st.name, r, k, st.role, st.key, s.Anomaly())
				}
			}
		})
	}
}

func TestExchangeAllocatesNothing(t *testing.T) {
	s := newTCP()
	q, p := read(1), response(1)
	if a := testing.AllocsPerRun(100, func() {
		exchange(s, protocols.Request, q, true, true)
		exchange(s, protocols.Response, p, true, true)
	}); a != 0 {
		t.Errorf("%v allocs per exchange, want 0", a)
	}
}
