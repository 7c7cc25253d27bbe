package modbus

import (
	"testing"

	"github.com/otgw/otgw/protocols"
)

// exchange decodes b as dir, reads Exchange, then commits it (passed and
// allowed as the engine would), and returns the role and key.
func exchange(s *Session, dir protocols.Dir, b []byte, passed, allowed bool) (protocols.Role, uint64) {
	s.Decode(dir, b)
	r, k := s.Exchange()
	s.Commit(passed, allowed)
	return r, k
}

func readReq(tid uint16) []byte {
	return AppendRequest(nil, tid, 1, AppendAddrQty(nil, FuncReadHoldingRegisters, 0, 2))
}

func readResp(tid uint16) []byte {
	return AppendResponse(nil, tid, 1, AppendReadRegistersResponse(nil, FuncReadHoldingRegisters, []uint16{1, 2}))
}

// Exchange names the request a response answers by the request's number
// in the session, as Pairing matched it: responses out of order, two
// pipelined requests with one transaction id, a tolerated tid_mismatch
// (the oldest request), a denied request (never awaits), a response to
// nothing, a picked-up flow and a gap in the responses.
func TestExchange(t *testing.T) {
	type step struct {
		name          string
		dir           protocols.Dir
		b             []byte
		passed, allow bool
		role          protocols.Role
		key           string // a name for the key: equal names, equal keys
	}
	req, resp := protocols.Request, protocols.Response
	none, rq, rs := protocols.RoleNone, protocols.RoleRequest, protocols.RoleResponse
	for _, tc := range []struct {
		name   string
		pickUp bool
		steps  []step
	}{
		{name: "out of order", steps: []step{
			{"req 1", req, readReq(1), true, true, rq, "a"},
			{"req 2", req, readReq(2), true, true, rq, "b"},
			{"resp 2", resp, readResp(2), true, true, rs, "b"},
			{"resp 1", resp, readResp(1), true, true, rs, "a"},
			{"resp 1 again", resp, readResp(1), true, true, none, ""},
		}},
		{name: "one tid pipelined", steps: []step{
			{"req 5", req, readReq(5), true, true, rq, "a"},
			{"req 5 again", req, readReq(5), true, true, rq, "b"},
			{"resp 5", resp, readResp(5), true, true, rs, "a"},
			{"resp 5 again", resp, readResp(5), true, true, rs, "b"},
		}},
		{name: "tid mismatch tolerated", steps: []step{
			{"req 7", req, readReq(7), true, true, rq, "a"},
			{"req 9", req, readReq(9), true, true, rq, "b"},
			{"resp 8", resp, readResp(8), true, true, rs, "a"}, // the oldest
			{"resp 9", resp, readResp(9), true, true, rs, "b"},
			{"resp 7", resp, readResp(7), true, true, none, ""}, // taken by resp 8
		}},
		{name: "tid mismatch refused", steps: []step{
			{"req 7", req, readReq(7), true, true, rq, "a"},
			{"resp 8", resp, readResp(8), false, false, rs, "a"}, // would answer it, had it been allowed
			{"resp 7", resp, readResp(7), true, true, rs, "a"},
		}},
		{name: "denied request", steps: []step{
			{"req 3", req, readReq(3), false, false, rq, "a"},
			{"resp 3", resp, readResp(3), true, true, none, ""},
			{"req 4", req, readReq(4), true, true, rq, "b"},
			{"resp 4", resp, readResp(4), true, true, rs, "b"},
		}},
		{name: "unsolicited", steps: []step{
			{"resp 1", resp, readResp(1), true, true, none, ""},
			{"bytes", req, []byte{0, 1, 0, 0, 0, 1}, true, true, none, ""}, // header only
		}},
		{name: "picked up", pickUp: true, steps: []step{
			{"resp 1", resp, readResp(1), true, true, none, ""}, // answers a request before the pickup
			{"req 2", req, readReq(2), true, true, rq, "a"},
			{"resp 2", resp, readResp(2), true, true, rs, "a"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := new(Session)
			if tc.pickUp {
				s.PickUp()
			}
			keys := map[string]uint64{}
			named := map[uint64]string{}
			for _, st := range tc.steps {
				r, k := exchange(s, st.dir, st.b, st.passed, st.allow)
				if r != st.role {
					t.Fatalf("%s: role %v, want %v (anomaly %q)", st.name, r, st.role, s.Anomaly())
				}
				if r == protocols.RoleNone {
					continue
				}
				if want, ok := keys[st.key]; ok && k != want {
					t.Fatalf("%s: key %d, want %d (that of %q)", st.name, k, want, st.key)
				}
				if other, ok := named[k]; ok && other != st.key {
					t.Fatalf("%s: key %d is already that of %q", st.name, k, other)
				}
				keys[st.key], named[k] = k, st.key
			}
		})
	}
}

// After a gap in the responses the outstanding requests are dropped, and
// a request after it never takes the key of one before.
func TestExchangeAfterGap(t *testing.T) {
	s := new(Session)
	_, k1 := exchange(s, protocols.Request, readReq(1), true, true)
	s.Gap(protocols.Response)
	if r, _ := exchange(s, protocols.Response, readResp(1), true, true); r != protocols.RoleNone {
		t.Errorf("response after the gap: %v, want none", r)
	}
	r, k2 := exchange(s, protocols.Request, readReq(1), true, true)
	if r != protocols.RoleRequest || k2 == k1 {
		t.Errorf("request after the gap: %v key %d, want a request with a key other than %d", r, k2, k1)
	}
	if r, k := exchange(s, protocols.Response, readResp(1), true, true); r != protocols.RoleResponse || k != k2 {
		t.Errorf("its response: %v key %d, want response %d", r, k, k2)
	}
}

func TestExchangeAllocatesNothing(t *testing.T) {
	s := new(Session)
	q, p := readReq(1), readResp(1)
	if a := testing.AllocsPerRun(100, func() {
		exchange(s, protocols.Request, q, true, true)
		exchange(s, protocols.Response, p, true, true)
	}); a != 0 {
		t.Errorf("%v allocs per exchange, want 0", a)
	}
}
