package gateway

import (
	"testing"
	"time"

	"github.com/otgw/otgw/simulate/capture"
)

func TestFlowsListsTheTable(t *testing.T) {
	r, f := modbusRig(t, "drop")
	r.now = r.now.Add(time.Second)
	r.client(f.Send(true, readReq(1, 0, 10)))
	r.server(f.Send(false, readResp(1, make([]uint16, 10))))
	r.now = r.now.Add(time.Second)
	r.client(f.Send(true, writeReq(2, 7, 1))) // holding 7: not writable, denied
	// A second, older flow from another client port.
	cl := capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:40001")}
	f2 := capture.NewTCPFlow(cl, plcEP)
	r.now = r.now.Add(-time.Minute)
	r.handshake(f2)

	got := r.e.Flows(0)
	if len(got) != 2 {
		t.Fatalf("%d flows, want 2: %+v", len(got), got)
	}
	fi := got[0] // most recently seen first
	if fi.Client != hmiEP.Addr || fi.Server != plcEP.Addr || fi.Transport != "tcp" || fi.Proto != "modbus" ||
		fi.Conduit != "hmi-plc" || fi.Verdict != "allow" || fi.Mode != "enforce" || fi.State != "established" ||
		fi.ClientPort != "north" {
		t.Fatalf("flow: %+v", fi)
	}
	// Handshake (2 client, 1 server) + read + response + denied write.
	if fi.Packets != [2]uint64{4, 2} || fi.PDUs != 3 || fi.PDUsDenied != 1 || fi.Bytes[0] == 0 || fi.Bytes[1] == 0 {
		t.Fatalf("counts: packets %v bytes %v pdus %d denied %d", fi.Packets, fi.Bytes, fi.PDUs, fi.PDUsDenied)
	}
	if !fi.LastSeen.After(fi.Start) || got[1].Client != cl.Addr || got[1].PDUs != 0 {
		t.Fatalf("times or second flow: %+v / %+v", fi, got[1])
	}
	if n := len(r.e.Flows(1)); n != 1 {
		t.Fatalf("Flows(1) returned %d", n)
	}
}
