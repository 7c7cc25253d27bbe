package gateway

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/simulate/capture"
)

// supConduit lets every host of the supervisory zone (192.0.2.128/25) read
// the PLC: a flooding client and another one.
const supConduit = `  - name: sup-plc
    from: sup
    to: plc
    rules:
      - modbus:
          units: [1]
          allow:
            - read: holding 0-99
`

// flood sends n SYNs from addr on as many source ports, never completed.
func (r *rig) flood(addr netip.Addr, n int) {
	for i := range n {
		cl := capture.Endpoint{MAC: hmiEP.MAC, Addr: netip.AddrPortFrom(addr, uint16(20000+i%40000))}
		r.e.Handle(North, capture.NewTCPFlow(cl, plcEP).Handshake()[0], TxFunc(func(PortID, []byte) {}))
	}
}

// connectRead opens a connection from cl, sends one read and reports
// whether the handshake and the read crossed.
func (r *rig) connectRead(cl netip.AddrPort, tid uint16) bool {
	f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: cl}, plcEP)
	hs := f.Handshake()
	if len(r.client(hs[0])) != 1 || len(r.server(hs[1])) != 1 || len(r.client(hs[2])) != 1 {
		return false
	}
	req := f.Send(true, readReq(tid, 0, 1))
	return len(r.client(req)) == 1
}

// TestHalfOpenFlowsHoldNoInspector is issue 15's lockout: a SYN flood from
// an allowed client filled the memory cap with half-open inspected flows
// (each held an inspector) and every later inspected connection was
// refused as memory_cap. A half-open connection now costs a slot of the
// table only; its inspector is taken when the handshake completes. The
// per-source limit is lifted here to show the memory side alone.
func TestHalfOpenFlowsHoldNoInspector(t *testing.T) {
	probe := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), nil)
	one := probe.e.newInspector(protocols.ProtoModbus).size
	r := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), func(c *Config) { c.MemoryCap = 4 * one })
	r.e.tab.half.limit = 1 << 30
	// An established poller before the flood.
	poller := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:41000")}, plcEP)
	r.handshake(poller)
	if c := r.counters(); c.MemoryBytes != one {
		t.Fatalf("memory %d after one handshake, want one inspector (%d)", c.MemoryBytes, one)
	}
	poll := func(tid uint16) {
		t.Helper()
		req := poller.Send(true, readReq(tid, 0, 1))
		r.mustForward(r.client(req), South, req)
		resp := poller.Send(false, readResp(tid, []uint16{1}))
		r.mustForward(r.server(resp), North, resp)
	}
	poll(1)
	r.flood(hmiEP.Addr.Addr(), 5000)
	c := r.counters()
	if c.MemoryBytes != one || c.FlowsActive != 5001 {
		t.Fatalf("after 5,000 SYNs: memory %d (want %d: the poller's inspector only), %d flows", c.MemoryBytes, one, c.FlowsActive)
	}
	poll(2)
	// New inspected connections, right after the flood (nothing expired),
	// complete and their reads cross, up to the cap.
	for i := range 3 {
		if !r.connectRead(netip.AddrPortFrom(hmiEP.Addr.Addr(), uint16(62000+i)), 7) {
			t.Fatalf("connection %d after the flood refused: %v", i, r.counters().DropsByName())
		}
	}
	if c := r.counters(); c.EstablishedEvicted != 0 || c.MemoryBytes > c.MemoryCap {
		t.Errorf("established flows evicted for newcomers: %d; memory %d of %d", c.EstablishedEvicted, c.MemoryBytes, c.MemoryCap)
	}
}

// TestInspectorAtFirstDataWhenTheCapIsFull: a connection whose handshake
// completes while the cap is full of established sessions gets no
// inspector; its first bytes are dropped (memory_cap, never forwarded
// uninspected) and cross once memory is free again.
func TestInspectorAtFirstDataWhenTheCapIsFull(t *testing.T) {
	probe := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), nil)
	one := probe.e.newInspector(protocols.ProtoModbus).size
	r := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), func(c *Config) { c.MemoryCap = one })
	first := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:41000")}, plcEP)
	r.handshake(first)
	f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:41001")}, plcEP)
	r.handshake(f) // the flow entry only: the cap is full
	req := f.Send(true, readReq(1, 0, 1))
	if got := r.client(req); len(got) != 0 {
		t.Fatalf("first data without an inspector: got %s, want it dropped", describe(got))
	}
	if c := r.counters(); c.Drops[DropMemoryCap] != 1 {
		t.Fatalf("memory_cap drops %d, want 1", c.Drops[DropMemoryCap])
	}
	// The first connection closes and expires; the retransmission crosses.
	r.client(first.Segment(true, first.NextSeq(true), first.NextSeq(false), capture.TCPFlags{RST: true, ACK: true}, nil))
	r.now = r.now.Add(time.Minute)
	r.e.Expire(r.now)
	r.mustForward(r.client(req), South, req)
}

// TestSYNFloodPerSourceLimit: one client address gets at most its
// half-open limit of the table; its further SYNs are refused
// (half_open_limit) and raise one syn_flood alert per window. Established
// sessions keep working, another client connects during the flood, and
// the flooding address connects again once its half-open flows expire
// (the handshake timeout).
func TestSYNFloodPerSourceLimit(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "reset", "", supConduit), nil)
	limit := int(r.e.tab.half.limit)
	if limit != 512 {
		t.Fatalf("half-open limit %d with the default table, want 512 (documented)", limit)
	}
	flooder := hmiEP.Addr.Addr()
	poller := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:41000")}, plcEP)
	r.handshake(poller)
	poll := func(tid uint16) {
		t.Helper()
		req := poller.Send(true, readReq(tid, 0, 1))
		r.mustForward(r.client(req), South, req)
		resp := poller.Send(false, readResp(tid, []uint16{1}))
		r.mustForward(r.server(resp), North, resp)
	}
	poll(1)
	const n = 20000
	r.flood(flooder, n)
	c := r.counters()
	if got := c.Drops[DropHalfOpen]; got != n-uint64(limit) {
		t.Fatalf("half_open_limit drops %d, want %d", got, n-limit)
	}
	if c.FlowsActive != limit+1 {
		t.Fatalf("%d flows, want the limit %d and the poller", c.FlowsActive, limit)
	}
	var alerts int
	for _, ev := range r.events {
		if ev.Reason == "detect:syn_flood" {
			alerts++
			if ev.Fields["subject"] != flooder.String() || !strings.Contains(ev.Message, "half-open") {
				t.Errorf("syn_flood event: %+v", ev)
			}
		}
	}
	if alerts != 1 {
		t.Fatalf("%d syn_flood alerts within one window, want 1", alerts)
	}
	poll(2)
	if !r.connectRead(netipAP("192.0.2.131:41000"), 3) {
		t.Fatalf("another client refused during the flood: %v", r.counters().DropsByName())
	}
	if r.connectRead(netipAP("192.0.2.130:41001"), 4) {
		t.Fatal("the flooding address connected while at its limit")
	}
	// The flood stops; the half-open flows expire after the handshake
	// timeout (30 s) and the flooding address connects again.
	r.now = r.now.Add(31 * time.Second)
	poll(5)
	r.e.Expire(r.now)
	if got := r.e.tab.half.count(flooder); got != 0 {
		t.Fatalf("half-open count of the flooder %d after expiry, want 0", got)
	}
	if !r.connectRead(netipAP("192.0.2.130:41002"), 6) {
		t.Fatalf("the flooding address refused after the handshake timeout: %v", r.counters().DropsByName())
	}
	// A new flood one window later alerts again.
	r.flood(flooder, limit+20)
	alerts = 0
	for _, ev := range r.events {
		if ev.Reason == "detect:syn_flood" {
			alerts++
		}
	}
	if alerts != 2 {
		t.Fatalf("%d syn_flood alerts after a second flood a window later, want 2", alerts)
	}
	if c := r.counters(); c.EstablishedEvicted != 0 {
		t.Errorf("established flows evicted: %d", c.EstablishedEvicted)
	}
}

// TestHalfOpenCountFollowsTheHandshake: a connection leaves its client's
// half-open count when it is established, reset or released.
func TestHalfOpenCountFollowsTheHandshake(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), nil)
	a := hmiEP.Addr.Addr()
	f := capture.NewTCPFlow(hmiEP, plcEP)
	hs := f.Handshake()
	r.client(hs[0])
	if got := r.e.tab.half.count(a); got != 1 {
		t.Fatalf("after the SYN: %d half-open", got)
	}
	r.server(hs[1])
	r.client(hs[2])
	if got := r.e.tab.half.count(a); got != 0 {
		t.Fatalf("after the handshake: %d half-open", got)
	}
	g := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:41000")}, plcEP)
	r.client(g.Handshake()[0])
	r.server(g.Segment(false, 0, g.NextSeq(true), capture.TCPFlags{RST: true, ACK: true}, nil))
	if got := r.e.tab.half.count(a); got != 0 {
		t.Fatalf("after a refused SYN (RST): %d half-open", got)
	}
	h := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:41001")}, plcEP)
	r.client(h.Handshake()[0])
	r.now = r.now.Add(time.Minute)
	if n := r.e.Expire(r.now); n != 2 {
		t.Fatalf("expired %d, want the reset and the half-open flow", n)
	}
	if got := r.e.tab.half.count(a); got != 0 {
		t.Fatalf("after expiry: %d half-open", got)
	}
}

// TestSYNFloodDetectionFromPolicy: the policy's detections section sets
// syn_flood like the other detectors; off silences the alert, never the
// limit.
func TestSYNFloodDetectionFromPolicy(t *testing.T) {
	for _, tc := range []struct {
		name, section string
		alerts        int
	}{
		{"off", "detections:\n  syn_flood: off\n", 0},
		{"count 1", "detections:\n  syn_flood: { count: 1, window: 5s }\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, policy(t, "enforce", "reset", tc.section, supConduit), func(c *Config) { c.MaxFlows = 512 })
			limit := int(r.e.tab.half.limit)
			r.flood(hmiEP.Addr.Addr(), limit+5)
			if got := r.counters().Drops[DropHalfOpen]; got != 5 {
				t.Fatalf("half_open_limit drops %d, want 5", got)
			}
			alerts := 0
			for _, ev := range r.events {
				if ev.Reason == "detect:syn_flood" {
					alerts++
					if ev.Fields["count"] != 1 || ev.Fields["window_s"] != 5.0 {
						t.Errorf("threshold in the event: %v", ev.Fields)
					}
				}
			}
			if alerts != tc.alerts {
				t.Fatalf("%d syn_flood alerts, want %d", alerts, tc.alerts)
			}
		})
	}
}

// TestDefaultCapHoldsDocumentedFlows pins the sizing the package
// documentation gives for a 512 MB board: the default 64 MiB cap holds
// about 5,900 inspected Modbus flows and 4,400 DNP3 or OPC UA flows at
// rest, and 5,900 Modbus connections do get their inspectors live.
func TestDefaultCapHoldsDocumentedFlows(t *testing.T) {
	r := newRig(t, policy(t, "enforce", "reset", "", supConduit), func(c *Config) { c.OnVerdict = nil })
	memCap := r.e.cfg.MemoryCap
	for _, tc := range []struct {
		p    protocols.Proto
		want int64
	}{{protocols.ProtoModbus, 5900}, {protocols.ProtoDNP3, 4400}, {protocols.ProtoOPCUA, 4400}} {
		size := r.e.newInspector(tc.p).size
		if n := memCap / size; n < tc.want {
			t.Errorf("%v: the %d MiB cap holds %d inspectors of %d bytes, the documentation says about %d: update gateway/doc.go", tc.p, memCap>>20, n, size, tc.want)
		}
	}
	const n = 5900
	for i := range n {
		cl := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(130 + i/20000)}), uint16(10000+i%20000))
		f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: cl}, plcEP)
		for j, fr := range f.Handshake() {
			in := North
			if j == 1 {
				in = South
			}
			r.e.Handle(in, fr, TxFunc(func(PortID, []byte) {}))
		}
	}
	c := r.counters()
	if c.FlowsEstablished != n || c.Dropped() != 0 || c.MemoryBytes > c.MemoryCap {
		t.Fatalf("%d established of %d, drops %v, memory %d of %d", c.FlowsEstablished, n, c.DropsByName(), c.MemoryBytes, c.MemoryCap)
	}
	one := r.e.newInspector(protocols.ProtoModbus).size
	if c.MemoryBytes != n*one {
		t.Fatalf("memory %d, want %d inspectors of %d bytes", c.MemoryBytes, n, one)
	}
}
