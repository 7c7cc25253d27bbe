package rules

import (
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
)

// TestDetections checks the rate detectors each kind of response counts
// for, and that requests count for none.
func TestDetections(t *testing.T) {
	mb := func(dir protocols.Dir, fc uint8, exc modbus.ExceptionCode) PDU {
		p := PDU{Proto: protocols.ProtoModbus, Dir: dir}
		p.Modbus.FC, p.Modbus.Exception = fc, uint8(exc)
		return p
	}
	dn := func(dir protocols.Dir, fc dnp3.FunctionCode, iin uint16) PDU {
		p := PDU{Proto: protocols.ProtoDNP3, Dir: dir}
		p.DNP3.FC, p.DNP3.IIN = uint8(fc), iin
		return p
	}
	cases := []struct {
		name string
		p    PDU
		want []DetectMatch
	}{
		{"modbus illegal function", mb(protocols.Response, 0x83, modbus.ExceptionIllegalFunction), []DetectMatch{{DetectModbusFunctionScan, false}}},
		{"modbus illegal address", mb(protocols.Response, 0x81, modbus.ExceptionIllegalDataAddress), []DetectMatch{{DetectModbusAddressScan, false}}},
		{"modbus acknowledge", mb(protocols.Response, 0x90, modbus.ExceptionAcknowledge), []DetectMatch{{DetectModbusServerBusy, true}}},
		{"modbus busy", mb(protocols.Response, 0x83, modbus.ExceptionServerDeviceBusy), []DetectMatch{{DetectModbusServerBusy, true}}},
		{"modbus illegal value", mb(protocols.Response, 0x83, modbus.ExceptionIllegalDataValue), nil},
		{"modbus normal response", mb(protocols.Response, 0x03, 0), nil},
		{"modbus request", mb(protocols.Request, 0x83, modbus.ExceptionIllegalFunction), nil},
		{"dnp3 unsolicited", dn(protocols.Response, dnp3.FuncUnsolicitedResp, 0), []DetectMatch{{DetectDNP3UnsolicitedStorm, true}}},
		{"dnp3 unsolicited with IIN2 object unknown", dn(protocols.Response, dnp3.FuncUnsolicitedResp, dnp3.IINObjectUnknown), []DetectMatch{{DetectDNP3UnsolicitedStorm, true}}},
		{"dnp3 object unknown", dn(protocols.Response, dnp3.FuncResponse, dnp3.IINObjectUnknown), []DetectMatch{{DetectDNP3ObjectScan, false}}},
		{"dnp3 parameter error", dn(protocols.Response, dnp3.FuncResponse, dnp3.IINParameterError), []DetectMatch{{DetectDNP3ObjectScan, false}}},
		{"dnp3 both scans", dn(protocols.Response, dnp3.FuncResponse, dnp3.IINNoFuncCodeSupport|dnp3.IINObjectUnknown),
			[]DetectMatch{{DetectDNP3ObjectScan, false}, {DetectDNP3FunctionScan, false}}},
		{"dnp3 IIN1 only", dn(protocols.Response, dnp3.FuncResponse, dnp3.IINDeviceRestart), nil},
		{"dnp3 request", dn(protocols.Request, dnp3.FuncRead, dnp3.IINObjectUnknown), nil},
		{"opcua", PDU{Proto: protocols.ProtoOPCUA, Dir: protocols.Response}, nil},
	}
	for _, c := range cases {
		m, n := c.p.Detections()
		got := m[:n]
		if len(got) != len(c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s: %v, want %v", c.name, got, c.want)
			}
		}
	}
	p := dn(protocols.Response, dnp3.FuncResponse, dnp3.IINNoFuncCodeSupport|dnp3.IINObjectUnknown)
	if a := testing.AllocsPerRun(100, func() { _, _ = p.Detections() }); a != 0 {
		t.Errorf("Detections allocates %.0f times", a)
	}
}
