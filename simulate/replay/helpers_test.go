package replay

import (
	"net/netip"
	"testing"

	"github.com/otgw/otgw/internal/pcaptest"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/simulate/capture"
)

type netipAddr = netip.Addr

func mustParseAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// The HMI and PLC of the crafted captures (readOnly's assets).
var (
	testHMI = capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:40000")}
	testPLC = capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.10:502")}
)

// readReq and readResp are a read of holding 0-1 and its answer.
func readReq(tid uint16) []byte {
	return modbus.AppendRequest(nil, tid, 1, modbus.AppendAddrQty(nil, modbus.FuncReadHoldingRegisters, 0, 2))
}

func readResp(tid uint16) []byte {
	return modbus.AppendResponse(nil, tid, 1, modbus.AppendReadRegistersResponse(nil, modbus.FuncReadHoldingRegisters, []uint16{1, 2}))
}

// writeCapture writes frames as a pcap file in a temporary directory.
func writeCapture(t *testing.T, frames [][]byte) string {
	t.Helper()
	return pcaptest.Write(t, "c.pcap", frames)
}
