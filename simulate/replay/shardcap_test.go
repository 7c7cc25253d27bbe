package replay

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/internal/pcaptest"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/protocols/registry"
	"github.com/otgw/otgw/rules"
)

// uaAnyWritePolicy allows every OPC UA Write, however many nodes: with a memory cap large
// enough, the Write capture below crosses without a single event.
const uaAnyWritePolicy = `version: 1
name: uawrite
mode: enforce
action: reset
zones:
  clients: { port: north, networks: [192.0.2.0/25] }
  servers: { port: south, networks: [192.0.2.128/25] }
conduits:
  - name: hmi-ua
    from: clients
    to: servers
    rules:
      - opcua:
          min_security_mode: none
          tolerate: [too_many_nodes]
          allow:
            - service: [write]
`

// writeUAWrites writes path: conns OPC UA connections, one after the
// other, each opening a channel and sending writes Write requests of
// msgSize bytes (8 KiB chunks, 1460-byte segments, the server
// acknowledging each chunk), and staying open: a body buffer of 64 KiB or
// less is kept (and charged) between messages, so the later connections
// meet the memory the earlier ones hold.
func writeUAWrites(t *testing.T, path string, conns, writes, msgSize int) {
	t.Helper()
	w := pcaptest.NewUAWriter(t, path)
	body := pcaptest.UAWriteBody(msgSize, "Line1.Setpoint.")
	for i := range conns {
		fl := w.Open(i)
		seq := uint32(2)
		for range writes {
			chunks := opcua.AppendChunks(nil, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: seq, RequestID: seq}, body, 8192)
			for off := 0; off < len(chunks); {
				n := int(binary.LittleEndian.Uint32(chunks[off+4:]))
				seq++
				w.SendChunk(fl, chunks[off:off+n])
				off += n
			}
		}
	}
	w.Close()
}

// capOutput replays path with the memory cap given and returns its output.
func capOutput(t *testing.T, path string, workers int, memCap int64, whatIf bool) replayOutput {
	t.Helper()
	return outputOf(t, Options{Policy: mustPolicy(t, uaAnyWritePolicy), WhatIf: whatIf, Workers: workers, MaxFlows: 1024, MemoryCap: memCap}, path)
}

// TestShardedMemoryCapSameOutput: OPC UA connections whose Write bodies
// fill a small memory cap make one engine refuse some: memory_cap (no
// inspector for a new connection) or malformed:message_too_large (a body
// buffer the cap refused), depending on where the cap falls among the
// buffers' steps. Each lane of a sharded replay would have a cap of its
// own and refuse fewer; the pre-scan's bound sees the bodies and does not
// shard, so Workers 1, 2 and 3 write the same events, report.json,
// summary and pcaps, with and without what-if, for caps from 256 KiB to
// 1 MiB. The inspectors at rest alone (the bound before) fit each cap:
// sharded on them, the output would depend on the workers.
func TestShardedMemoryCapSameOutput(t *testing.T) {
	path := filepath.Join(t.TempDir(), "uawrites.pcap")
	const conns, writes, msgSize = 8, 2, 60_000
	writeUAWrites(t, path, conns, writes, msgSize)
	pol := mustPolicy(t, uaAnyWritePolicy)
	ms, err := scanMidstream([]string{path}, serverPorts(pol))
	if err != nil {
		t.Fatal(err)
	}
	ua := uaPortsOf(pol)
	if free := capOutput(t, path, 1, 0, false); len(free.events) != 0 {
		t.Fatalf("with the default cap the Writes raise events:\n%s", free.events)
	}
	capped, tooLarge := 0, 0
	for memCap := int64(256 << 10); memCap <= 1<<20; memCap += 24 << 10 {
		if ms.tcpKeys != conns || int64(ms.tcpKeys)*inspectorBytes > memCap {
			t.Fatalf("%d TCP flows: the inspectors at rest (%d bytes) should fit the cap (%d)", ms.tcpKeys, int64(ms.tcpKeys)*inspectorBytes, memCap)
		}
		if b := memBound(ms, ua); b <= memCap {
			t.Fatalf("memBound %d fits the cap %d: the capture does not exercise it", b, memCap)
		}
		if shardable(ms, 1024, memCap, ua) {
			t.Fatalf("shardable with bodies beyond the cap %d", memCap)
		}
		for _, whatIf := range []bool{false, true} {
			want := capOutput(t, path, 1, memCap, whatIf)
			c, l := bytes.Count(want.events, []byte(`"reason":"memory_cap"`)), bytes.Count(want.events, []byte(`"reason":"malformed:message_too_large"`))
			if c+l == 0 {
				t.Errorf("cap %d KiB, what-if %v: nothing refused: the cap is not reached", memCap>>10, whatIf)
			}
			capped, tooLarge = capped+c, tooLarge+l
			for _, w := range []int{2, 3} {
				got := capOutput(t, path, w, memCap, whatIf)
				compareOutputs(t, fmt.Sprintf("cap %d KiB, workers %d, what-if %v", memCap>>10, w, whatIf), got, want)
			}
		}
	}
	t.Logf("one engine: %d memory_cap and %d message_too_large events over the caps", capped, tooLarge)
	if capped == 0 || tooLarge == 0 {
		t.Errorf("%d memory_cap and %d message_too_large events: the caps do not reach both", capped, tooLarge)
	}
}

// TestMemBound: the bound is the inspectors at rest, the holds (twice a
// direction's bytes, at most MaxHold per flow the engine may open) and,
// on OPC UA ports, the body buffers (4 times a direction's bytes and
// 8 KiB, at most 32 MiB per flow).
func TestMemBound(t *testing.T) {
	ua := uaPortsOf(mustPolicy(t, uaAnyWritePolicy))
	if !ua.has(4840) || ua.has(502) || ua.any {
		t.Fatalf("uaPorts of the OPC UA policy: %+v", ua)
	}
	if mb := uaPortsOf(mustPolicy(t, detectPolicy)); mb.any || len(mb.ranges) != 0 {
		t.Fatalf("uaPorts of a Modbus policy: %+v", mb)
	}
	conn := func(port uint16) flowKey {
		return flowKey{netip.MustParseAddrPort("192.0.2.1:30000"), netip.AddrPortFrom(netip.MustParseAddr("192.0.2.130"), port)}
	}
	const mib = 1 << 20
	for _, c := range []struct {
		name  string
		port  uint16
		load  connLoad
		other int
		want  int64
	}{
		{"no data", 4840, connLoad{flows: 1}, 0, inspectorBytes},
		{"modbus, small", 502, connLoad{pay: [2]int64{100, 300}, flows: 1}, 0, inspectorBytes + 800},
		{"modbus, large: MaxHold", 502, connLoad{pay: [2]int64{1 << 30, 1 << 30}, flows: 1}, 0, inspectorBytes + 2*65536},
		{"modbus, two flows", 502, connLoad{pay: [2]int64{1 << 30, 10}, flows: 2}, 0, inspectorBytes + 2*65536 + 20},
		{"opcua, small", 4840, connLoad{pay: [2]int64{1000, 0}, flows: 1}, 0, inspectorBytes + 2000 + 4000 + 8192},
		{"opcua, 15 MB", 4840, connLoad{pay: [2]int64{15_000_000, 100}, flows: 1}, 0,
			inspectorBytes + 65536 + 32*mib + 200 + 400 + 8192},
		{"opcua, two flows", 4840, connLoad{pay: [2]int64{1 << 40, 0}, flows: 2}, 0, inspectorBytes + 2*65536 + 64*mib},
		{"udp and icmp flows", 502, connLoad{flows: 1}, 3, 4 * inspectorBytes},
	} {
		ms := &midstream{tcpKeys: 1, otherKeys: c.other, ends: []flowKey{conn(c.port)}, load: []connLoad{c.load}}
		if got := memBound(ms, ua); got != c.want {
			t.Errorf("%s: memBound = %d, want %d", c.name, got, c.want)
		}
	}
	// The server end may be either end of the key.
	ms := &midstream{tcpKeys: 1, ends: []flowKey{{netip.MustParseAddrPort("192.0.2.130:4840"), netip.MustParseAddrPort("192.0.2.200:30000")}},
		load: []connLoad{{pay: [2]int64{0, 1000}, flows: 1}}}
	if got, want := memBound(ms, ua), int64(inspectorBytes+2000+4000+8192); got != want {
		t.Errorf("OPC UA server as the key's first end: memBound = %d, want %d", got, want)
	}
	// Saturates instead of overflowing.
	ms = &midstream{tcpKeys: 2, ends: []flowKey{conn(4840), conn(4840)},
		load: []connLoad{{pay: [2]int64{1 << 62, 1 << 62}, flows: 1 << 40}, {pay: [2]int64{1 << 62, 1 << 62}, flows: 1 << 40}}}
	if got := memBound(ms, ua); got <= 0 {
		t.Errorf("memBound overflowed: %d", got)
	}
	// Ports the bound cannot read, and section rules without ports: any.
	pol := mustPolicy(t, uaAnyWritePolicy)
	pol.Conduits[0].Rules[0].OPCUA.Ports = []string{"4840-4850", "x"}
	if u := uaPortsOf(pol); !u.any || !u.has(4845) {
		t.Errorf("unreadable port: %+v", u)
	}
	if u := uaPortsOf(nil); !u.has(502) {
		t.Error("no policy: not every port")
	}
}

// TestPreScanLoad: the pre-scan counts each direction's payload and the
// flows a connection may open (a second SYN on the same addresses).
func TestPreScanLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ua.pcap")
	writeUAWrites(t, path, 2, 1, 20_000)
	ms, err := scanMidstream([]string{path}, serverPorts(mustPolicy(t, uaAnyWritePolicy)))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms.load) != 2 || len(ms.ends) != 2 {
		t.Fatalf("%d connections, want 2", len(ms.load))
	}
	for id, ld := range ms.load {
		cl := 0 // the client (192.0.2.1) is the key's first end
		if ms.ends[id].a.Addr() != netip.MustParseAddr("192.0.2.1") {
			cl = 1
		}
		if ld.flows != 1 || ld.pay[cl] < 20_000 || ld.pay[cl] > 21_000 || ld.pay[1-cl] == 0 || ld.pay[1-cl] > 200 {
			t.Errorf("connection %d: %+v (client end %d)", id, ld, cl)
		}
	}
}

// TestInspectorBytes: inspectorBytes, the inspector at rest of the memory
// bound (shardable), is at least what replay's engines, the enforcing and
// the what-if shadow, with one engine and on lanes, charge their memory cap
// for an inspector of every registered protocol: a protocol whose
// inspector grows past it fails here, not in a sharded replay that meets
// the cap.
func TestInspectorBytes(t *testing.T) {
	rs, err := rules.Compile(mustPolicy(t, readEverything))
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{opts: Options{WhatIf: true, MaxFlows: 64}}
	eng, shadow, err := r.newEngines(rs)
	if err != nil {
		t.Fatal(err)
	}
	lanes, err := r.newLanes(rs, 2)
	if err != nil {
		t.Fatal(err)
	}
	engines := []*gateway.Engine{eng, shadow}
	for _, l := range lanes {
		engines = append(engines, l.eng, l.mkShadow())
	}
	for _, s := range registry.All() {
		for i, e := range engines {
			n := e.InspectorSize(s.Proto)
			if i == 0 {
				t.Logf("%s: %d bytes (inspectorBytes %d)", s.Name, n, inspectorBytes)
			}
			if n <= 0 || n > inspectorBytes {
				t.Errorf("engine %d: an inspector of %s at rest is charged %d bytes, inspectorBytes %d", i, s.Name, n, inspectorBytes)
			}
		}
	}
}
