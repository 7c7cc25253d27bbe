package opcua

import (
	"testing"

	"github.com/otgw/otgw/protocols"
)

// exchange decodes the chunk b (sent in dir), reads Exchange, then commits
// it (passed as the engine would).
func exchange(s *Session, dir protocols.Dir, b []byte, passed bool) (protocols.Role, uint64) {
	s.Decode(dir, b)
	r, k := s.Exchange()
	s.Commit(passed, passed)
	return r, k
}

// uaConv builds the chunks of one conversation on channel 7, numbering
// each direction's sequence numbers.
type uaConv struct{ seq [2]uint32 }

func (c *uaConv) hdr(dir protocols.Dir, id uint32) SecureHeader {
	d := dirIndex(dir)
	c.seq[d]++
	return SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: c.seq[d], RequestID: id}
}

func (c *uaConv) read(id uint32) []byte {
	return AppendMessage(nil, ChunkFinal, c.hdr(protocols.Request, id), AppendReadRequest(nil, id, setpoint))
}

func (c *uaConv) resp(id uint32) []byte {
	return AppendMessage(nil, ChunkFinal, c.hdr(protocols.Response, id), AppendResponse(nil, ServiceRead, id, 0))
}

// open returns the chunks that open the channel: HEL, ACK, OPN, OPN.
func (c *uaConv) open() [][]byte {
	return [][]byte{
		AppendHello(nil, testHello), AppendAcknowledge(nil, testAck),
		AppendOpenRequest(nil, SecureHeader{SequenceNumber: 1, RequestID: 1}, ModeNone),
		AppendOpenResponse(nil, SecureHeader{ChannelID: 7, SequenceNumber: 1, RequestID: 1}, 1),
	}
}

// Exchange pairs a final response chunk with the request whose RequestId
// it carries (OPC 10000-6 section 6.7.2.4) and names it by the request's
// number in the session: the OPN exchange, responses out of order, a
// multi-chunk request (its final chunk), a response to nothing, a refused
// request, a picked-up flow, and encrypted sequence headers (paired with
// the oldest request).
func TestExchange(t *testing.T) {
	req, resp := protocols.Request, protocols.Response
	none, rq, rs := protocols.RoleNone, protocols.RoleRequest, protocols.RoleResponse
	type step struct {
		name   string
		dir    protocols.Dir
		b      []byte
		passed bool
		role   protocols.Role
		key    string // equal names, equal keys
	}
	var c uaConv
	o := c.open()
	chunks := AppendChunks(nil, c.hdr(req, 30), AppendReadRequest(nil, 30, setpoint), 20)
	for _, tc := range []struct {
		name   string
		pickUp bool
		steps  []step
	}{
		{name: "open and out of order", steps: []step{
			{"HEL", req, o[0], true, none, ""},
			{"ACK", resp, o[1], true, none, ""},
			{"OPN", req, o[2], true, rq, "opn"},
			{"OPN resp", resp, o[3], true, rs, "opn"},
			{"read 10", req, c.read(10), true, rq, "a"},
			{"read 11", req, c.read(11), true, rq, "b"},
			{"resp 11", resp, c.resp(11), true, rs, "b"},
			{"resp 10", resp, c.resp(10), true, rs, "a"},
			{"resp 10 again", resp, c.resp(10), true, none, ""},
			{"refused 12", req, c.read(12), false, rq, "c"},
			{"resp 12", resp, c.resp(12), true, none, ""},
			{"read 13", req, c.read(13), true, rq, "d"},
			{"resp 13", resp, c.resp(13), true, rs, "d"},
		}},
		{name: "multi-chunk request", steps: []step{
			{"HEL", req, o[0], true, none, ""},
			{"ACK", resp, o[1], true, none, ""},
			{"OPN", req, o[2], true, rq, "opn"},
			{"OPN resp", resp, o[3], true, rs, "opn"},
			{"read 30 in chunks", req, chunks, true, rq, "a"}, // none before the final chunk
			{"resp 30", resp, c.resp(30), true, rs, "a"},
		}},
		{name: "picked up", pickUp: true, steps: []step{
			{"resp 5", resp, c.resp(5), true, none, ""},
			{"read 6", req, c.read(6), true, rq, "a"},
			{"resp 6", resp, c.resp(6), true, rs, "a"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSession()
			if tc.pickUp {
				s.PickUp()
			}
			keys := map[string]uint64{}
			named := map[uint64]string{}
			for _, st := range tc.steps {
				var r protocols.Role
				var k uint64
				for b := st.b; len(b) > 0; { // one chunk at a time
					m, _, err := s.Next(st.dir, b)
					if err != nil || m == 0 {
						t.Fatalf("%s: framing: %v", st.name, err)
					}
					r, k = exchange(s, st.dir, b[:m], st.passed)
					if b = b[m:]; len(b) > 0 && r != none {
						t.Fatalf("%s: %v before the final chunk", st.name, r)
					}
				}
				if r != st.role {
					t.Fatalf("%s: role %v, want %v (anomaly %q)", st.name, r, st.role, s.Anomaly())
				}
				if r == none {
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

// An encrypted OPN hides its RequestId: the response pairs with the
// oldest request awaiting one, and names it.
func TestExchangeEncrypted(t *testing.T) {
	s := newSession()
	exchange(s, protocols.Request, AppendHello(nil, testHello), true)
	exchange(s, protocols.Response, AppendAcknowledge(nil, testAck), true)
	r1, k1 := exchange(s, protocols.Request, secureOpen(PolicyBasic256Sha256, 0), true)
	r2, k2 := exchange(s, protocols.Response, secureOpen(PolicyBasic256Sha256, 9), true)
	if r1 != protocols.RoleRequest || r2 != protocols.RoleResponse || k1 != k2 {
		t.Errorf("encrypted OPN: %v %d, response %v %d; want request and response, one key", r1, k1, r2, k2)
	}
}

func TestExchangeAllocatesNothing(t *testing.T) {
	var c uaConv
	s := newSession()
	for i, b := range c.open() {
		exchange(s, protocols.Dir(1+i%2), b, true)
	}
	q, p := c.read(2), c.resp(2)
	if a := testing.AllocsPerRun(100, func() {
		exchange(s, protocols.Request, q, true)
		exchange(s, protocols.Response, p, true)
	}); a != 0 {
		t.Errorf("%v allocs per exchange, want 0", a)
	}
}
