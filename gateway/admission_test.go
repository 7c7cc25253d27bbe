package gateway

import (
	"net/netip"
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/simulate/capture"
)

// TestSYNFloodDoesNotLockOutInspectedFlows is issue 15's lockout: a SYN
// flood from an allowed client fills the memory cap with half-open
// inspected flows (each holds an inspector). Before, every later inspected
// connection was refused as memory_cap for as long as the half-open flows
// lived, because the cap was checked before the flow table could reclaim
// anything. Now a new flow that finds the cap full reclaims the least
// recently used half-open (transient) flows' inspectors; established
// sessions are never taken for a newcomer.
func TestSYNFloodDoesNotLockOutInspectedFlows(t *testing.T) {
	probe := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), nil)
	one := probe.e.newInspector(protocols.ProtoModbus).size
	r := newRig(t, policy(t, "enforce", "reset", "", modbusConduit), func(c *Config) { c.MemoryCap = 40 * one })
	// An established poller before the flood.
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
	// The flood: 5,000 SYNs from the allowed client, never completed.
	for i := range 5000 {
		cl := capture.Endpoint{MAC: hmiEP.MAC, Addr: netip.AddrPortFrom(hmiEP.Addr.Addr(), uint16(50000+i%15000))}
		r.e.Handle(North, capture.NewTCPFlow(cl, plcEP).Handshake()[0], TxFunc(func(PortID, []byte) {}))
	}
	if c := r.counters(); c.MemoryBytes > c.MemoryCap {
		t.Fatalf("memory %d over the cap %d after the flood", c.MemoryBytes, c.MemoryCap)
	}
	// The established poller lost nothing.
	poll(2)
	// A new inspected connection, right after the flood (nothing expired
	// yet), completes and its read crosses.
	f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:42000")}, plcEP)
	r.handshake(f)
	req := f.Send(true, readReq(7, 0, 1))
	r.mustForward(r.client(req), South, req)
	if c := r.counters(); c.EstablishedEvicted != 0 {
		t.Errorf("established flows evicted for newcomers: %d", c.EstablishedEvicted)
	}
}
