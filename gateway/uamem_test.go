package gateway

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/simulate/capture"
)

// TestOPCUAWriteBuffersUnderMemoryCap is issue 15's OPC UA case: a Write
// request that spans chunks is buffered for its NodeIds. The buffers now
// count against Config.MemoryCap: 12 connections each sending a 512 KiB
// multi-chunk Write under a 2 MiB cap never take the engine's inspection
// memory over the cap (the writes that do not fit fail as
// message_too_large and, their NodeIds unknown, are refused by the
// node-restricted rule), and the memory comes back when the messages end.
func TestOPCUAWriteBuffersUnderMemoryCap(t *testing.T) {
	const cap = 2 << 20
	r := newRig(t, policy(t, "enforce", "reset", "", fmt.Sprintf(opcuaWriteConduit, "truncated")), func(c *Config) { c.MemoryCap = cap; c.OnVerdict = nil })
	hello := opcua.Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536, EndpointURL: "opc.tcp://192.0.2.30:4840"}
	vals := make([]opcua.WriteValue, 12000) // about 512 KiB of WriteValues
	for i := range vals {
		vals[i] = opcua.WriteValue{Node: opcua.StringID(2, fmt.Sprintf("Line1.Setpoint.Forbidden.%06d", i)), Value: 1}
	}
	body := opcua.AppendWriteRequest(nil, 3, vals...)
	chunks := opcua.AppendChunks(nil, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 3, RequestID: 3}, body, 1400)
	peak := int64(0)
	type conn struct {
		f   *capture.TCPFlow
		off int
	}
	var conns []*conn
	for i := range 12 {
		f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.130"), uint16(40300+i))}, uaEP)
		r.handshake(f)
		r.openUA(t, f, hello, fmt.Sprintf("conn %d", i))
		conns = append(conns, &conn{f: f})
	}
	// Interleave the connections' chunks, one chunk at a time, so that
	// every connection's buffer is partly full at once. Just before the
	// final chunks the heap is measured: what the parsers buffer must be
	// bounded by the cap, not by the 12 messages (~7.9 MB).
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	discard := TxFunc(func(PortID, []byte) {})
	base := heap()
	var grown uint64
	for round, done := 0, false; !done; round++ {
		if conns[0].off < len(chunks) && conns[0].off+1500 >= len(chunks) {
			grown = heap() - min(base, heap())
		}
		done = true
		for _, c := range conns {
			if c.off >= len(chunks) {
				continue
			}
			done = false
			n := int(binary.LittleEndian.Uint32(chunks[c.off+4:])) // UA-TCP MessageSize
			// Frames go straight to the engine (the rig would keep a copy of
			// every frame sent, which the heap figure must not count).
			r.e.Handle(North, c.f.Send(true, chunks[c.off:c.off+n]), discard)
			c.off += n
			// The server acknowledges what crossed, as its stack would.
			r.e.Handle(South, c.f.Segment(false, c.f.NextSeq(false), c.f.NextSeq(true), capture.TCPFlags{ACK: true}, nil), discard)
			if mem := r.counters().MemoryBytes; mem > peak {
				peak = mem
			}
		}
	}
	ctr := r.counters()
	t.Logf("12 connections x %d KiB Write in %d-byte chunks: peak inspection memory %d KiB (cap %d KiB), now %d KiB",
		len(body)>>10, 1400, peak>>10, cap>>10, ctr.MemoryBytes>>10)
	t.Logf("heap grown by %d KiB just before the final chunks", grown>>10)
	if grown > cap+(1<<20) {
		t.Errorf("the heap grew by %d KiB while 12 Writes were buffered: over the %d KiB cap (+1 MiB slack)", grown>>10, cap>>10)
	}
	if peak > cap {
		t.Errorf("inspection memory peaked at %d bytes, over the %d-byte cap", peak, cap)
	}
	if ctr.PDUsDenied == 0 {
		t.Errorf("no Write refused (drops %v)", ctr.DropsByName())
	}
	if ev := r.lastEvent(); ev == nil || (ev.Reason != "node_not_allowed" && ev.Reason != "malformed:message_too_large") {
		t.Errorf("last event %+v, want the Writes refused", ev)
	}
	// The buffers are given back with their flows: once the (reset)
	// connections expire, what stays charged is the inspectors on the
	// free list, without their buffers.
	one := r.e.newInspector(protocols.ProtoOPCUA).size
	r.now = r.now.Add(time.Hour)
	r.e.Expire(r.now)
	if left := r.counters().MemoryBytes; left > int64(len(conns))*one {
		t.Errorf("%d bytes still charged after the flows expired, want at most %d (12 inspectors)", left, int64(len(conns))*one)
	}
}
