package gateway

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"sync"
	"testing"

	"github.com/otgw/otgw/gateway/events"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/simulate/capture"
)

// nopTx discards frames.
type nopTx struct{}

func (nopTx) Send(PortID, []byte) {}

const tcpConduit = `  - name: hmi-ssh
    from: hmi
    to: plc
    rules:
      - tcp: { ports: [22] }
`

// stream replays one established connection's request/response exchange
// forever by patching sequence and acknowledgement numbers in place (the
// engine does not verify checksums, the NIC did), so benchmarks and
// allocation tests need no per-iteration allocation of their own.
type stream struct {
	req, resp  []byte
	cseq, sseq uint32
	reqLen     uint32
	respLen    uint32
}

func newStream(r *rig, f *capture.TCPFlow, req, resp []byte) *stream {
	r.handshake(f)
	s := &stream{cseq: f.NextSeq(true), sseq: f.NextSeq(false), reqLen: uint32(len(req)), respLen: uint32(len(resp))}
	s.req = f.Send(true, req)
	s.resp = f.Send(false, resp)
	return s
}

const tcpOff = 14 + 20 // Ethernet + IPv4 without options

func (s *stream) step(e *Engine, tx Tx) {
	binary.BigEndian.PutUint32(s.req[tcpOff+4:], s.cseq)
	binary.BigEndian.PutUint32(s.req[tcpOff+8:], s.sseq)
	e.Handle(North, s.req, tx)
	s.cseq += s.reqLen
	if s.resp != nil {
		binary.BigEndian.PutUint32(s.resp[tcpOff+4:], s.sseq)
		binary.BigEndian.PutUint32(s.resp[tcpOff+8:], s.cseq)
		e.Handle(South, s.resp, tx)
		s.sseq += s.respLen
	}
}

func TestAllowPathAllocatesNothing(t *testing.T) {
	tests := []struct {
		name     string
		conduit  string
		server   capture.Endpoint
		req      []byte
		resp     []byte
		withHook bool
	}{
		{"modbus read and response", modbusConduit, plcEP, readReq(1, 0, 10), readResp(1, make([]uint16, 10)), false},
		{"modbus with OnVerdict hook", modbusConduit, plcEP, readReq(1, 0, 10), readResp(1, make([]uint16, 10)), true},
		{"dnp3 read and response", dnp3Conduit, rtuEP, dnp3Req(1, 1, 60, 2), dnp3Resp(1), false},
		{"plain tcp", tcpConduit, capture.Endpoint{MAC: plcEP.MAC, Addr: netipAP("192.0.2.10:22")}, []byte("ssh bytes"), []byte("more ssh"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, policy(t, "enforce", "reset", "", tc.conduit), func(c *Config) {
				c.Sink = events.Discard
				c.OnVerdict = nil
				if tc.withHook {
					var n int
					c.OnVerdict = func(d *Decision) { n += int(d.Verdict.Action) }
				}
			})
			s := newStream(r, capture.NewTCPFlow(hmiEP, tc.server), tc.req, tc.resp)
			for range 10 { // warm the pools
				s.step(r.e, nopTx{})
			}
			before := r.counters()
			allocs := testing.AllocsPerRun(200, func() { s.step(r.e, nopTx{}) })
			if allocs != 0 {
				t.Fatalf("allocs per request/response = %v, want 0", allocs)
			}
			c := r.counters()
			if c.Dropped() != 0 || c.TxFrames[South]-before.TxFrames[South] != 201 {
				t.Fatalf("the exchange did not pass: drops %v", c.DropsByName())
			}
		})
	}
}

func TestConcurrentHandleFromTwoPorts(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), func(c *Config) { c.Sink = events.Discard; c.OnVerdict = nil })
	const conns = 8
	var streams []*stream
	for i := range conns {
		cl := capture.Endpoint{MAC: hmiEP.MAC, Addr: netip.AddrPortFrom(hmiEP.Addr.Addr(), uint16(43000+i))}
		streams = append(streams, newStream(r, capture.NewTCPFlow(cl, plcEP), readReq(1, 0, 1), readResp(1, []uint16{1})))
	}
	// One goroutine per ingress port, as the live gateway runs; the ruleset
	// is swapped meanwhile.
	var wg sync.WaitGroup
	var reqs, resps [conns]chan []byte
	for i := range conns {
		reqs[i], resps[i] = make(chan []byte, 1), make(chan []byte, 1)
	}
	const rounds = 300
	wg.Add(3)
	go func() {
		defer wg.Done()
		for range rounds {
			for i, s := range streams {
				binary.BigEndian.PutUint32(s.req[tcpOff+4:], s.cseq)
				binary.BigEndian.PutUint32(s.req[tcpOff+8:], s.sseq)
				r.e.Handle(North, s.req, nopTx{})
				s.cseq += s.reqLen
				reqs[i] <- nil
				<-resps[i]
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range rounds {
			for i, s := range streams {
				<-reqs[i]
				binary.BigEndian.PutUint32(s.resp[tcpOff+4:], s.sseq)
				binary.BigEndian.PutUint32(s.resp[tcpOff+8:], s.cseq)
				r.e.Handle(South, s.resp, nopTx{})
				s.sseq += s.respLen
				resps[i] <- nil
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range 20 {
			r.rs.Store(policy(t, "enforce", "reset", "", modbusConduit+"# "+strconv.Itoa(i)+"\n"))
		}
	}()
	wg.Wait()
	c := r.counters()
	if c.Dropped() != 0 || c.PDUsAllowed != 2*conns*rounds {
		t.Fatalf("allowed=%d dropped=%v, want %d and none", c.PDUsAllowed, c.DropsByName(), 2*conns*rounds)
	}
}

func BenchmarkHandle(b *testing.B) {
	b.Run("modbus_read_allowed", func(b *testing.B) {
		r := newRig(b, policy(b, "enforce", "reset", "", modbusConduit), func(c *Config) { c.Sink = events.Discard; c.OnVerdict = nil })
		s := newStream(r, capture.NewTCPFlow(hmiEP, plcEP), readReq(1, 0, 10), readResp(1, make([]uint16, 10)))
		b.ReportAllocs()
		b.ResetTimer()
		cpuPerFrame(b, 2, func() {
			for b.Loop() {
				s.step(r.e, nopTx{}) // two frames: request and response
			}
		})
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/frame")
	})
	b.Run("dnp3_read_allowed", func(b *testing.B) {
		r := newRig(b, policy(b, "enforce", "reset", "", dnp3Conduit), func(c *Config) { c.Sink = events.Discard; c.OnVerdict = nil })
		s := newStream(r, capture.NewTCPFlow(hmiEP, rtuEP), dnp3Req(1, 1, 60, 2), dnp3Resp(1))
		b.ReportAllocs()
		b.ResetTimer()
		cpuPerFrame(b, 2, func() {
			for b.Loop() {
				s.step(r.e, nopTx{})
			}
		})
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/frame")
		if c := r.counters(); c.Dropped() != 0 {
			b.Fatalf("drops %v", c.DropsByName())
		}
	})
	b.Run("opcua_read_allowed", func(b *testing.B) {
		// A Read and its response on an open channel; the sequence
		// number and request id advance in place every iteration.
		r := newRig(b, policy(b, "enforce", "reset", "", opcuaConduit), func(c *Config) { c.Sink = events.Discard; c.OnVerdict = nil })
		f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:40300")}, uaEP)
		r.handshake(f)
		hello := opcua.Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536, EndpointURL: "opc.tcp://192.0.2.30:4840"}
		r.uaOpen(f, opcua.AppendHello(nil, hello), opcua.AppendAcknowledge(nil, hello),
			opcua.AppendOpenRequest(nil, opcua.SecureHeader{SequenceNumber: 1, RequestID: 1}, opcua.ModeNone),
			opcua.AppendOpenResponse(nil, opcua.SecureHeader{ChannelID: 7, SequenceNumber: 1, RequestID: 1}, 1))
		req := opcua.AppendMessage(nil, opcua.ChunkFinal, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 2, RequestID: 2},
			opcua.AppendReadRequest(nil, 2, opcua.StringID(2, "Line1.Speed")))
		resp := opcua.AppendMessage(nil, opcua.ChunkFinal, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 2, RequestID: 2},
			opcua.AppendResponse(nil, opcua.ServiceRead, 2, 0))
		s := &stream{cseq: f.NextSeq(true), sseq: f.NextSeq(false), reqLen: uint32(len(req)), respLen: uint32(len(resp))}
		s.req, s.resp = f.Send(true, req), f.Send(false, resp)
		// Secure header offsets within the frames: sequence number and request id.
		qs, ps := len(s.req)-len(req)+16, len(s.resp)-len(resp)+16
		seq := uint32(2)
		b.ReportAllocs()
		b.ResetTimer()
		cpuPerFrame(b, 2, func() {
			for b.Loop() {
				seq++
				binary.LittleEndian.PutUint32(s.req[qs:], seq)
				binary.LittleEndian.PutUint32(s.req[qs+4:], seq)
				binary.LittleEndian.PutUint32(s.resp[ps:], seq)
				binary.LittleEndian.PutUint32(s.resp[ps+4:], seq)
				s.step(r.e, nopTx{})
			}
		})
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/frame")
		if c := r.counters(); c.Dropped() != 0 {
			b.Fatalf("drops %v", c.DropsByName())
		}
	})
	b.Run("plain_tcp", func(b *testing.B) {
		r := newRig(b, policy(b, "enforce", "reset", "", tcpConduit), func(c *Config) { c.Sink = events.Discard; c.OnVerdict = nil })
		srv := capture.Endpoint{MAC: plcEP.MAC, Addr: netipAP("192.0.2.10:22")}
		s := newStream(r, capture.NewTCPFlow(hmiEP, srv), make([]byte, 64), make([]byte, 64))
		b.ReportAllocs()
		b.ResetTimer()
		cpuPerFrame(b, 2, func() {
			for b.Loop() {
				s.step(r.e, nopTx{})
			}
		})
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/frame")
	})
	b.Run("modbus_pdu_denied", func(b *testing.B) {
		// Each iteration: a new connection (SYN, SYN-ACK, ACK) whose first
		// PDU is a forbidden write, refused with reply + RSTs and an event.
		r := newRig(b, policy(b, "enforce", "reply", "", modbusConduit), func(c *Config) { c.Sink = events.Discard; c.OnVerdict = nil })
		var port uint16 = 1024
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			port++
			if port == 0 {
				port = 1024
			}
			f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netip.AddrPortFrom(hmiEP.Addr.Addr(), port)}, plcEP)
			hs := f.Handshake()
			w := f.Send(true, writeReq(1, 70, 1))
			b.StartTimer()
			r.e.Handle(North, hs[0], nopTx{})
			r.e.Handle(South, hs[1], nopTx{})
			r.e.Handle(North, hs[2], nopTx{})
			r.e.Handle(North, w, nopTx{})
		}
	})
}

// FuzzHandle feeds arbitrary frames, from either port, into an engine that
// has an established Modbus connection: Handle must never panic, and
// whatever it sends must decode. Seeds: a request, a response, a denied
// write, a SYN and an ARP frame of that connection.
func FuzzHandle(f *testing.F) {
	fl := capture.NewTCPFlow(hmiEP, plcEP)
	hs := fl.Handshake()
	f.Add(fl.Send(true, readReq(1, 0, 10)), true)
	f.Add(fl.Send(false, readResp(1, make([]uint16, 10))), false)
	f.Add(fl.Send(true, writeReq(2, 70, 1)), true)
	f.Add(hs[0], true)
	f.Add(capture.UDPDatagram(hmiEP, rtuEP, dnp3Req(1, 1, 60, 1)), true)
	rs := policy(f, "enforce", "reply", "l2: { allow: [arp] }", modbusConduit+dnp3Conduit)
	f.Fuzz(func(t *testing.T, frame []byte, north bool) {
		r := newRig(t, rs, func(c *Config) { c.Sink = events.Discard; c.OnVerdict = nil; c.MaxFlows = 16 })
		fl := capture.NewTCPFlow(hmiEP, plcEP)
		r.handshake(fl)
		in := South
		if north {
			in = North
		}
		r.e.Handle(in, frame, TxFunc(func(out PortID, b []byte) {
			var p packet.Packet
			if err := p.Decode(b, packet.LinkEthernet); err != nil {
				t.Fatalf("engine sent an undecodable frame %x: %v", b, err)
			}
		}))
	})
}
