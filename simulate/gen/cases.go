package gen

import (
	"strings"

	"github.com/otgw/otgw/protocols/dnp3"
	"github.com/otgw/otgw/protocols/modbus"
	"github.com/otgw/otgw/protocols/opcua"
)

// ModbusPolicy is the read-only HMI policy of the Modbus cases: the HMI
// reads, the engineering station may also write a setpoint block.
const ModbusPolicy = `version: 1
name: hmi-readonly
mode: enforce
action: drop
zones:
  supervisory: { port: north, networks: [192.0.2.128/25] }
  cell:        { port: south, networks: [192.0.2.0/25] }
assets:
  hmi: { ip: 192.0.2.130, zone: supervisory }
  eng: { ip: 192.0.2.131, zone: supervisory }
  plc: { ip: 192.0.2.10, zone: cell }
conduits:
  - name: hmi-polls-plc
    from: hmi
    to: plc
    rules:
      - modbus:
          units: [1]
          allow:
            - read: holding 0-99
            - read: coils 0-15
  - name: eng-writes-plc
    from: eng
    to: plc
    rules:
      - modbus:
          units: [1]
          allow:
            - read: holding 0-99
            - write: holding 40-49
              values: 0-1000
            - write: coils 0-15
`

// DNP3Policy: master 1 on the SCADA host polls outstation 10.
const DNP3Policy = `version: 1
name: scada-rtu
mode: enforce
action: drop
zones:
  supervisory: { port: north, networks: [192.0.2.128/25] }
  cell:        { port: south, networks: [192.0.2.0/25] }
assets:
  scada: { ip: 192.0.2.140, zone: supervisory }
  rtu:   { ip: 192.0.2.20, zone: cell }
conduits:
  - name: scada-rtu
    from: scada
    to: rtu
    rules:
      - dnp3:
          masters: [1]
          outstations: [10]
          allow:
            - function: read
              objects: [g1, g2, g30, g32, g60]
            - function: [select, operate]
              objects: [g12v1]
            - function: write
              objects: [g80]
            - function: confirm
            - unsolicited: true
`

// OPCUAPolicy: the OPC client may browse and read, in any mode.
const OPCUAPolicy = `version: 1
name: opc-hmi
mode: enforce
action: reset
zones:
  supervisory: { port: north, networks: [192.0.2.128/25] }
  cell:        { port: south, networks: [192.0.2.0/25] }
assets:
  opcclient: { ip: 192.0.2.150, zone: supervisory }
  opcserver: { ip: 192.0.2.30, zone: cell }
conduits:
  - name: opc-clients
    from: opcclient
    to: opcserver
    rules:
      - opcua:
          allow:
            - service: [read, browse]
`

// OPCUASignPolicy demands at least Sign (U3).
const OPCUASignPolicy = `version: 1
name: opc-signed
mode: enforce
action: reset
zones:
  supervisory: { port: north, networks: [192.0.2.128/25] }
  cell:        { port: south, networks: [192.0.2.0/25] }
assets:
  opcclient: { ip: 192.0.2.150, zone: supervisory }
  opcserver: { ip: 192.0.2.30, zone: cell }
conduits:
  - name: opc-clients
    from: opcclient
    to: opcserver
    rules:
      - opcua:
          min_security_mode: sign
          security_policies: [Basic256Sha256]
          allow:
            - service: [read, browse]
`

// ---- Modbus helpers ----

var tid uint16

func mb(unit uint8, pdu []byte) []byte {
	tid++
	return modbus.AppendRequest(nil, tid, unit, pdu)
}

func rd(fc uint8, addr, qty uint16) []byte { return mb(1, modbus.AppendAddrQty(nil, fc, addr, qty)) }

func mbResp(req []byte, pdu []byte) []byte {
	t := uint16(req[0])<<8 | uint16(req[1])
	return modbus.AppendResponse(nil, t, req[6], pdu)
}

// readOK writes an allowed read of holding 0-9 and its response.
func readOK(c *Conn) {
	q := rd(3, 0, 10)
	c.C(q)
	c.S(mbResp(q, modbus.AppendReadRegistersResponse(nil, 3, make([]uint16, 10))))
}

// denyOne opens a connection from client, does an allowed read when the
// client may read, then sends req and expects reason at its frame.
func denyOne(b *Builder, client []byte, req []byte, reason string) {
	_ = client
	c := b.TCP(HMI, PLC, 502)
	readOK(c)
	b.Expect(c.C(req), "deny", reason)
}

func mbCase(id, name, title, why string, build func(b *Builder)) Scenario {
	return Scenario{Name: name, ID: id, Proto: "modbus", Title: title, Why: why, Policy: ModbusPolicy, Build: build}
}

// ---- DNP3 helpers ----

const (
	master     = 1
	outstation = 10
	ctrlReq    = 0xC4 // DIR, PRM, unconfirmed user data
	ctrlResp   = 0x44 // PRM, unconfirmed user data
)

func dnReq(src, dst uint16, apdu []byte) []byte {
	return dnp3.AppendLinkFrames(nil, ctrlReq, dst, src, apdu)
}

func dnResp(apdu []byte) []byte {
	return dnp3.AppendLinkFrames(nil, ctrlResp, master, outstation, apdu)
}

func appReq(seq uint8, fc dnp3.FunctionCode, objs ...[]byte) []byte {
	b := dnp3.AppendRequestHeader(nil, seq, fc)
	for _, o := range objs {
		b = append(b, o...)
	}
	return b
}

func pollOK(c *Conn, seq uint8) {
	c.C(dnReq(master, outstation, appReq(seq, dnp3.FuncRead, dnp3.AppendAllHeader(nil, 60, 1))))
	c.S(dnResp(dnp3.AppendResponseHeader(nil, seq, dnp3.FuncResponse, 0, false)))
}

func dnDeny(b *Builder, apdu []byte, reason string) {
	c := b.TCP(SCADA, RTU, 20000)
	pollOK(c, 1)
	b.Expect(c.C(dnReq(master, outstation, apdu)), "deny", reason)
}

func dnCase(id, name, title, why string, build func(b *Builder)) Scenario {
	return Scenario{Name: name, ID: id, Proto: "dnp3", Title: title, Why: why, Policy: DNP3Policy, Build: build}
}

// ---- OPC UA helpers ----

func uaOpen(c *Conn, mode opcua.SecurityMode) {
	c.C(opcua.AppendHello(nil, opcua.Hello{ReceiveBufferSize: 65535, SendBufferSize: 65535, EndpointURL: "opc.tcp://192.0.2.30:4840"}))
	c.S(opcua.AppendAcknowledge(nil, opcua.Hello{ReceiveBufferSize: 65535, SendBufferSize: 65535}))
	c.C(opcua.AppendOpenRequest(nil, opcua.SecureHeader{RequestID: 1, SequenceNumber: 1}, mode))
	c.S(opcua.AppendOpenResponse(nil, opcua.SecureHeader{ChannelID: 7, RequestID: 1, SequenceNumber: 1}, 1))
}

func uaMsg(seq uint32, body []byte) []byte {
	return opcua.AppendMessage(nil, opcua.ChunkFinal, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: seq, RequestID: seq}, body)
}

func uaCase(id, name, title, why string, build func(b *Builder)) Scenario {
	return Scenario{Name: name, ID: id, Proto: "opcua", Title: title, Why: why, Policy: OPCUAPolicy, Build: build}
}

// All returns the suite in catalogue order.
func All() []Scenario {
	tid = 0
	var s []Scenario
	s = append(s, modbusCases()...)
	s = append(s, dnp3Cases()...)
	s = append(s, opcuaCases()...)
	s = append(s, evasionCases()...)
	return s
}

func modbusCases() []Scenario {
	fnDeny := func(pdu []byte) func(b *Builder) {
		return func(b *Builder) { denyOne(b, nil, mb(1, pdu), "function_not_allowed") }
	}
	return []Scenario{
		mbCase("M1", "m01-force-listen-only", "Force Listen Only Mode", "FC 8 sub-function 4 puts the server in listen-only mode (DoS) [QD1 SID 1111001]; the read-only policy has no FC 8.",
			fnDeny(modbus.AppendDiagnostics(nil, 4, []uint16{0}))),
		mbCase("M2", "m02-restart-comms", "Restart Communications Option", "FC 8 sub-function 1 [QD1].",
			fnDeny(modbus.AppendDiagnostics(nil, 1, []uint16{0}))),
		mbCase("M3", "m03-clear-counters", "Clear Counters and Diagnostic Registers", "FC 8 sub-function 10 [QD1].",
			fnDeny(modbus.AppendDiagnostics(nil, 10, []uint16{0}))),
		mbCase("M4", "m04-read-device-id", "Read Device Identification (recon)", "FC 43 MEI 14 [QD1][TN1].",
			fnDeny(modbus.AppendReadDeviceID(nil, 1, 0))),
		mbCase("M5", "m05-report-server-id", "Report Server ID", "FC 17 [QD1].",
			fnDeny(modbus.AppendPDU(nil, 17))),
		mbCase("M6", "m06-unauthorized-read", "Unauthorized read request", "A host that is no asset of any conduit reads holding registers [QD1]: the SYN is refused (no conduit), so no byte reaches the PLC.",
			func(b *Builder) { b.Expect(b.TCPNoHandshake(Attacker, PLC, 502).SYN(), "deny", "no_conduit") }),
		mbCase("M7", "m07-unauthorized-write", "Unauthorized write request", "The HMI, allowed to read only, sends FC 5, 6, 15, 16, 22 [QD1]: each write is denied by function (one connection per write).",
			func(b *Builder) {
				for _, pdu := range [][]byte{modbus.AppendWriteSingleCoil(nil, 1, true), modbus.AppendWriteSingleRegister(nil, 1, 5),
					modbus.AppendWriteMultipleCoils(nil, 0, []bool{true, false}), modbus.AppendWriteMultipleRegisters(nil, 0, []uint16{1, 2}),
					modbus.AppendMaskWriteRegister(nil, 0, 0xff00, 0x0001)} {
					denyOne(b, nil, mb(1, pdu), "function_not_allowed")
				}
			}),
		mbCase("M8", "m08-illegal-size", "Illegal packet size", "An MBAP length of 300 (an ADU is at most 260 bytes) [QD1]: malformed.",
			func(b *Builder) {
				pdu := modbus.AppendPDU(nil, 16, uint16(40), uint16(123), uint8(246), make([]byte, 300))
				denyOne(b, nil, mb(1, pdu), "malformed:*")
			}),
		mbCase("M9", "m09-non-modbus-pid", "Non-Modbus protocol id", "MBAP protocol id 0x0001 [QD1]: malformed.",
			func(b *Builder) {
				q := rd(3, 0, 1)
				q[3] = 1
				denyOne(b, nil, q, "malformed:*")
			}),
		mbCase("M10", "m10-incorrect-length", "Incorrect MBAP length", "MBAP length 2 while the PDU that follows is 5 bytes long [QD1]: malformed.",
			func(b *Builder) {
				q := rd(3, 0, 1)
				q[5] = 2
				denyOne(b, nil, q, "malformed:*")
			}),
		mbCase("M11", "m11-slave-busy", "Server busy exceptions", "Three exception 06 (Server Device Busy) responses to allowed reads within 60 s [QD1]. Each response is well formed and paired, so each passes; the third reaches the modbus_server_busy detection (default 3 in 60 s from one server) and raises one alert event (detect:modbus_server_busy).",
			func(b *Builder) {
				c := b.TCP(HMI, PLC, 502)
				last := 0
				for i := 0; i < 3; i++ {
					q := rd(3, 0, 10)
					c.C(q)
					last = c.S(mbResp(q, modbus.AppendException(nil, 3, 6)))
				}
				b.Expect(last, "alert", "detect:modbus_server_busy")
			}),
		{Name: "m12-points-scan", ID: "M12", Proto: "modbus", Title: "Points-list scan",
			Why:    "Reads walking the holding registers [QD1]. The policy allows holding 0-99 but this PLC implements only 0-49: its five exception 02 (Illegal Data Address) answers to 50-54 pass one by one and the fifth within 60 s raises the modbus_address_scan alert (detect:modbus_address_scan). The scan goes on past the policy's range: each probe outside holding 0-99 is denied (one connection per probe).",
			Policy: ModbusPolicy,
			Build: func(b *Builder) {
				c := b.TCP(HMI, PLC, 502)
				last := 0
				for a := uint16(50); a < 55; a++ {
					q := rd(3, a, 1)
					c.C(q)
					last = c.S(mbResp(q, modbus.AppendException(nil, 3, 2)))
				}
				b.Expect(last, "alert", "detect:modbus_address_scan")
				for a := uint16(100); a < 105; a++ {
					denyOne(b, nil, rd(3, a, 1), "address_out_of_range")
				}
			}},
		{Name: "m13-function-scan", ID: "M13", Proto: "modbus", Title: "Function-code scan",
			Why:    "FC 7, 11, 12, 20, 24 probes [QD1] under the same policy in monitor mode, as when a new gateway is first deployed: each probe passes with an alert (function_not_allowed), the PLC answers each with exception 01 (Illegal Function), and the third exception within 60 s raises the modbus_function_scan alert (detect:modbus_function_scan); the next two fall in the same window and raise no second one. In enforce mode each probe is denied (M14 shows the reply).",
			Policy: strings.Replace(ModbusPolicy, "mode: enforce", "mode: monitor", 1),
			Build: func(b *Builder) {
				c := b.TCP(HMI, PLC, 502)
				readOK(c)
				probes := [][]byte{
					mb(1, modbus.AppendPDU(nil, 7)),
					mb(1, modbus.AppendPDU(nil, 11)),
					mb(1, modbus.AppendPDU(nil, 12)),
					mb(1, modbus.AppendReadFileRecord(nil, []modbus.FileRecord{{RefType: 6, File: 1, Record: 0, Length: 1}})),
					mb(1, modbus.AppendPDU(nil, 24, uint16(0))),
				}
				for i, q := range probes {
					b.Expect(c.C(q), "alert", "function_not_allowed")
					r := c.S(mbResp(q, modbus.AppendException(nil, q[7], 1)))
					if i == 2 {
						b.Expect(r, "alert", "detect:modbus_function_scan")
					}
				}
			}},
		mbCase("M14", "m14-umas", "Modicon UMAS (FC 90)", "FC 0x5A starts a ladder-logic download/upload [QD1 modicon.rules]. The parser knows no public layout for FC 90 and flags it unknown_function; no rule lists it, so the engine denies it as function_not_allowed (reply: Illegal Function).",
			func(b *Builder) {
				denyOne(b, nil, mb(1, modbus.AppendPDU(nil, 0x5a, uint8(0), uint8(0x10))), "function_not_allowed")
			}),
		mbCase("M15", "m15-frostygoop", "FrostyGoop", "FC 3 reads, then FC 6/16 writes [AT1][AT2]: the engineering station's in-range write passes, its out-of-range write and the HMI's write are denied.",
			func(b *Builder) {
				c := b.TCP(Eng, PLC, 502)
				readOK(c)
				q := mb(1, modbus.AppendWriteSingleRegister(nil, 45, 500))
				c.C(q)
				c.S(mbResp(q, modbus.AppendWriteSingleRegister(nil, 45, 500)))
				b.Expect(c.C(mb(1, modbus.AppendWriteMultipleRegisters(nil, 200, []uint16{1, 2, 3}))), "deny", "address_out_of_range")
				c2 := b.TCP(Eng, PLC, 502)
				b.Expect(c2.C(mb(1, modbus.AppendWriteSingleRegister(nil, 45, 5000))), "deny", "value_out_of_range")
				denyOne(b, nil, mb(1, modbus.AppendWriteSingleRegister(nil, 45, 500)), "function_not_allowed")
			}),
		mbCase("M16", "m16-destructive-writer", "Destructive writer tool set", "FC 21 write file record and FC 23 read/write multiple from the HMI [AT4] (FC 5/6/8/15/16/22 are M1-M7).",
			func(b *Builder) {
				denyOne(b, nil, mb(1, modbus.AppendWriteFileRecord(nil, []modbus.FileRecord{{RefType: 6, File: 1, Record: 0, Length: 1}}, [][]uint16{{7}})), "function_not_allowed")
				denyOne(b, nil, mb(1, modbus.AppendReadWriteMultipleRegisters(nil, 0, 2, 40, []uint16{1})), "function_not_allowed")
			}),
		mbCase("M17", "m17-unit-sweep", "Unit-id sweep", "FC 1 to unit ids 1-5 [AT5]: only unit 1 is allowed.",
			func(b *Builder) {
				for u := uint8(1); u <= 5; u++ {
					c := b.TCP(HMI, PLC, 502)
					q := mb(u, modbus.AppendAddrQty(nil, 1, 0, 8))
					f := c.C(q)
					if u == 1 {
						c.S(mbResp(q, modbus.AppendReadBitsResponse(nil, 1, make([]bool, 8))))
						continue
					}
					b.Expect(f, "deny", "unit_not_allowed")
				}
			}),
		mbCase("M18", "m18-spoofed-response", "Spoofed read-coils response", "A read of 8 coils answered with a byte count of 4 [AT6]: response-side checks catch the malformed spoof.",
			func(b *Builder) {
				c := b.TCP(HMI, PLC, 502)
				q := rd(1, 0, 8)
				c.C(q)
				b.Expect(c.S(mbResp(q, modbus.AppendPDU(nil, 1, uint8(4), []byte{1, 2, 3, 4}))), "deny", "*")
			}),
		mbCase("M19", "m19-invalid-coil-value", "Invalid single-coil value", "FC 5 with value 0x0001 (only 0x0000/0xFF00 are valid) from the engineering station [ZK6].",
			func(b *Builder) {
				c := b.TCP(Eng, PLC, 502)
				readOK(c)
				b.Expect(c.C(mb(1, modbus.AppendPDU(nil, 5, uint16(1), uint16(1)))), "deny", "malformed:*")
			}),
		mbCase("M20", "m20-segmented-adu", "Segmented ADU", "MBAP header in one segment, PDU in the next [PP2]: an allowed read passes, a write split the same way is judged whole and denied at the segment that completes it.",
			func(b *Builder) {
				c := b.TCP(HMI, PLC, 502)
				q := rd(3, 0, 10)
				c.C(q[:7])
				c.C(q[7:])
				c.S(mbResp(q, modbus.AppendReadRegistersResponse(nil, 3, make([]uint16, 10))))
				w := mb(1, modbus.AppendWriteSingleRegister(nil, 1, 1))
				c.C(w[:7])
				b.Expect(c.C(w[7:]), "deny", "function_not_allowed")
			}),
		mbCase("M21", "m21-pipelined", "Pipelined ADUs", "A read and a write in one segment: the read is forwarded (segment truncated), the write denied.",
			func(b *Builder) {
				c := b.TCP(HMI, PLC, 502)
				p := append(rd(3, 0, 10), mb(1, modbus.AppendWriteSingleRegister(nil, 1, 1))...)
				b.Expect(c.C(p), "deny", "function_not_allowed")
			}),
	}
}

func dnp3Cases() []Scenario {
	fn := func(fc dnp3.FunctionCode, objs ...[]byte) func(b *Builder) {
		return func(b *Builder) { dnDeny(b, appReq(2, fc, objs...), "function_not_allowed") }
	}
	return []Scenario{
		dnCase("D1", "d01-disable-unsolicited", "Disable Unsolicited Responses", "FC 21 [QD1 SID 1111201].",
			fn(dnp3.FunctionCode(21), dnp3.AppendAllHeader(nil, 60, 2))),
		dnCase("D2", "d02-unsolicited-storm", "Unsolicited response storm", "Five unsolicited responses within 10 s [QD1]. The policy allows unsolicited responses, so each passes; the fifth reaches the dnp3_unsolicited_storm detection (default 5 in 10 s from one outstation) and raises one alert event (detect:dnp3_unsolicited_storm).",
			func(b *Builder) {
				c := b.TCP(SCADA, RTU, 20000)
				pollOK(c, 1)
				last := 0
				for i := uint8(0); i < 5; i++ {
					last = c.S(dnResp(dnp3.AppendResponseHeader(nil, i, dnp3.FuncUnsolicitedResp, 0, false)))
				}
				b.Expect(last, "alert", "detect:dnp3_unsolicited_storm")
			}),
		dnCase("D3", "d03-cold-restart", "Cold Restart", "FC 13 [QD1].", fn(dnp3.FunctionCode(13))),
		dnCase("D4", "d04-warm-restart", "Warm Restart", "FC 14 [QD1].", fn(dnp3.FunctionCode(14))),
		dnCase("D5", "d05-stop-application", "Stop Application", "FC 18 [QD1].", fn(dnp3.FunctionCode(18))),
		dnCase("D6", "d06-unauthorized-read", "Unauthorized read", "A READ from link address 99, not the master [QD1].",
			func(b *Builder) {
				c := b.TCP(SCADA, RTU, 20000)
				b.Expect(c.C(dnReq(99, outstation, appReq(1, dnp3.FuncRead, dnp3.AppendAllHeader(nil, 60, 1)))), "deny", "link_address_not_allowed")
			}),
		dnCase("D7", "d07-write-class", "Unauthorized write-class functions", "FC 5 direct operate and FC 9 freeze-and-clear from the master [QD1].",
			func(b *Builder) {
				dnDeny(b, appReq(2, dnp3.FunctionCode(5), dnp3.AppendAllHeader(nil, 12, 1)), "function_not_allowed")
				dnDeny(b, appReq(2, dnp3.FunctionCode(9), dnp3.AppendAllHeader(nil, 20, 0)), "function_not_allowed")
			}),
		dnCase("D8", "d08-misc", "Unauthorized miscellaneous functions", "FC 7 immediate freeze, FC 16 initialize application, FC 23 delay measure [QD1].",
			func(b *Builder) {
				dnDeny(b, appReq(2, dnp3.FunctionCode(7), dnp3.AppendAllHeader(nil, 20, 0)), "function_not_allowed")
				dnDeny(b, appReq(2, dnp3.FunctionCode(16)), "function_not_allowed")
				dnDeny(b, appReq(2, dnp3.FunctionCode(23)), "function_not_allowed")
			}),
		dnCase("D9", "d09-broadcast", "Broadcast request", "A READ to link address 0xFFFF [QD1].",
			func(b *Builder) {
				c := b.TCP(SCADA, RTU, 20000)
				b.Expect(c.C(dnReq(master, 0xffff, appReq(1, dnp3.FuncRead, dnp3.AppendAllHeader(nil, 60, 1)))), "deny", "*")
			}),
		dnCase("D10", "d10-points-scan", "Points-list scan responses", "Five responses with IIN2 object unknown to allowed reads within 30 s [QD1]: each is well formed and paired and passes; the fifth raises the dnp3_object_scan alert (default 5 in 30 s to one master, IIN2 object unknown or parameter error).",
			func(b *Builder) {
				c := b.TCP(SCADA, RTU, 20000)
				last := 0
				for i := uint8(1); i <= 5; i++ {
					c.C(dnReq(master, outstation, appReq(i, dnp3.FuncRead, dnp3.AppendAllHeader(nil, 30, 0))))
					last = c.S(dnResp(dnp3.AppendResponseHeader(nil, i, dnp3.FuncResponse, 0x0002, false)))
				}
				b.Expect(last, "alert", "detect:dnp3_object_scan")
			}),
		dnCase("D11", "d11-function-scan", "Function-code scan responses", "Three responses with IIN2 no function code support to allowed reads within 60 s [QD1]: each passes; the third raises the dnp3_function_scan alert (default 3 in 60 s to one master).",
			func(b *Builder) {
				c := b.TCP(SCADA, RTU, 20000)
				last := 0
				for i := uint8(1); i <= 3; i++ {
					c.C(dnReq(master, outstation, appReq(i, dnp3.FuncRead, dnp3.AppendAllHeader(nil, 1, 0))))
					last = c.S(dnResp(dnp3.AppendResponseHeader(nil, i, dnp3.FuncResponse, 0x0001, false)))
				}
				b.Expect(last, "alert", "detect:dnp3_function_scan")
			}),
		dnCase("D12", "d12-non-dnp3", "Non-DNP3 on the DNP3 port", "Bytes not starting with 0x05 0x64 on TCP/20000 [QD1].",
			func(b *Builder) {
				c := b.TCP(SCADA, RTU, 20000)
				b.Expect(c.C([]byte("GET / HTTP/1.1\r\nHost: rtu\r\n\r\n")), "deny", "malformed:*")
			}),
		dnCase("D13", "d13-malformed-response", "Crain-Sistrunk malformed response", "An outstation response with a corrupted link CRC answers an allowed read [AT7]: response-side DPI denies it.",
			func(b *Builder) {
				c := b.TCP(SCADA, RTU, 20000)
				c.C(dnReq(master, outstation, appReq(1, dnp3.FuncRead, dnp3.AppendAllHeader(nil, 60, 1))))
				r := dnResp(dnp3.AppendResponseHeader(nil, 1, dnp3.FuncResponse, 0, false))
				r[len(r)-1] ^= 0xff
				b.Expect(c.S(r), "deny", "malformed:*")
			}),
		dnCase("D14", "d14-parser-anomalies", "Parser anomalies", "A request with a bad header CRC and one with a reserved function code (0x70) [SU3e][SN2].",
			func(b *Builder) {
				c := b.TCP(SCADA, RTU, 20000)
				pollOK(c, 1)
				r := dnReq(master, outstation, appReq(2, dnp3.FuncRead, dnp3.AppendAllHeader(nil, 60, 1)))
				r[8] ^= 0xff
				b.Expect(c.C(r), "deny", "malformed:*")
				dnDeny(b, appReq(2, dnp3.FunctionCode(0x70)), "*")
			}),
		dnCase("D15", "d15-object-policy", "Object-level policy", "READ of g1/g30 allowed; WRITE of g50 (time) and OPERATE of g41 (analog output) denied by object [HS5].",
			func(b *Builder) {
				c := b.TCP(SCADA, RTU, 20000)
				c.C(dnReq(master, outstation, appReq(1, dnp3.FuncRead, dnp3.AppendAllHeader(nil, 1, 0), dnp3.AppendAllHeader(nil, 30, 0))))
				c.S(dnResp(dnp3.AppendResponseHeader(nil, 1, dnp3.FuncResponse, 0, false)))
				b.Expect(c.C(dnReq(master, outstation, appReq(2, dnp3.FuncWrite, dnp3.AppendCountHeader(nil, 50, 1, 1), make([]byte, 6)))), "deny", "object_not_allowed")
				dnDeny(b, dnp3.AppendAnalogOutput(nil, 3, dnp3.FuncOperate, 0, 5), "object_not_allowed")
			}),
	}
}

func opcuaCases() []Scenario {
	return []Scenario{
		uaCase("U1", "u01-malformed", "OPC UA anomaly set", "An unknown message type and a MessageSize that disagrees with the bytes [SN6] (one connection each).",
			func(b *Builder) {
				c := b.TCP(OPCCli, OPCSrv, 4840)
				b.Expect(c.C([]byte("XYZF\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")), "deny", "malformed:*")
				c2 := b.TCP(OPCCli, OPCSrv, 4840)
				h := opcua.AppendHello(nil, opcua.Hello{ReceiveBufferSize: 65535, SendBufferSize: 65535, EndpointURL: "opc.tcp://x"})
				h[4] = 3 // MessageSize 3: smaller than the header
				h[5], h[6], h[7] = 0, 0, 0
				b.Expect(c2.C(h), "deny", "malformed:*")
			}),
		uaCase("U2", "u02-pipedream", "PIPEDREAM / INCONTROLLER scan", "An unapproved host connects to the OPC UA server [AT12]: refused at the SYN.",
			func(b *Builder) { b.Expect(b.TCPNoHandshake(Attacker, OPCSrv, 4840).SYN(), "deny", "no_conduit") }),
		{Name: "u03-security-downgrade", ID: "U3", Proto: "opcua", Title: "Security downgrade",
			Why:    "The client opens a channel with SecurityPolicy None while the policy demands Sign and Basic256Sha256: denied at OPN.",
			Policy: OPCUASignPolicy,
			Build: func(b *Builder) {
				c := b.TCP(OPCCli, OPCSrv, 4840)
				c.C(opcua.AppendHello(nil, opcua.Hello{ReceiveBufferSize: 65535, SendBufferSize: 65535, EndpointURL: "opc.tcp://192.0.2.30:4840"}))
				c.S(opcua.AppendAcknowledge(nil, opcua.Hello{ReceiveBufferSize: 65535, SendBufferSize: 65535}))
				b.Expect(c.C(opcua.AppendOpenRequest(nil, opcua.SecureHeader{RequestID: 1, SequenceNumber: 1}, opcua.ModeNone)), "deny", "*")
			}},
		uaCase("U4", "u04-write-call", "Write / Call from an HMI", "A ReadRequest passes; a WriteRequest (i=673) and, on a second channel, a CallRequest (i=712) in None mode are denied by service.",
			func(b *Builder) {
				c := b.TCP(OPCCli, OPCSrv, 4840)
				uaOpen(c, opcua.ModeNone)
				c.C(uaMsg(2, opcua.AppendReadRequest(nil, 2, opcua.StringID(2, "Line1.Temp"))))
				c.S(uaMsg(2, opcua.AppendResponse(nil, opcua.ServiceRead, 2, 0)))
				b.Expect(c.C(uaMsg(3, opcua.AppendWriteRequest(nil, 3, opcua.WriteValue{Node: opcua.StringID(2, "Line1.Setpoint"), Value: 99}))), "deny", "service_not_allowed")
				c2 := b.TCP(OPCCli, OPCSrv, 4840)
				uaOpen(c2, opcua.ModeNone)
				b.Expect(c2.C(uaMsg(2, opcua.AppendCallRequest(nil, 2, opcua.CallMethod{Object: opcua.Numeric(2, 1), Method: opcua.Numeric(2, 2)}))), "deny", "service_not_allowed")
			}),
	}
}

// LogPolicy: the PLC sends syslog to a log server; nothing else.
const LogPolicy = `version: 1
name: plc-logs
mode: enforce
action: drop
zones:
  supervisory: { port: north, networks: [192.0.2.128/25] }
  cell:        { port: south, networks: [192.0.2.0/25] }
assets:
  logsrv: { ip: 192.0.2.160, zone: supervisory }
  plc:    { ip: 192.0.2.10, zone: cell }
conduits:
  - name: plc-syslog
    from: plc
    to: logsrv
    rules:
      - udp: { ports: [514] }
`

// DNP3UDPPolicy: master 1 reads outstation 10 over UDP and accepts its
// unsolicited responses; nothing may be operated.
const DNP3UDPPolicy = `version: 1
name: scada-rtu-udp
mode: enforce
action: drop
zones:
  supervisory: { port: north, networks: [192.0.2.128/25] }
  cell:        { port: south, networks: [192.0.2.0/25] }
assets:
  scada: { ip: 192.0.2.140, zone: supervisory }
  rtu:   { ip: 192.0.2.20, zone: cell }
conduits:
  - name: scada-rtu
    from: scada
    to: rtu
    rules:
      - dnp3:
          masters: [1]
          outstations: [10]
          allow:
            - function: read
              objects: [g1, g2, g30, g60]
            - function: confirm
            - unsolicited: true
`

// DNP3UDPLearnedPolicy is what a learner that took the first speaker
// for the client drafts from a DNP3/UDP capture where the outstation
// speaks first (issue 13): a plain udp conduit from the outstation.
const DNP3UDPLearnedPolicy = `version: 1
name: learned-wrong-direction
mode: enforce
action: drop
zones:
  supervisory: { port: north, networks: [192.0.2.128/25] }
  cell:        { port: south, networks: [192.0.2.0/25] }
assets:
  scada: { ip: 192.0.2.140, zone: supervisory }
  rtu:   { ip: 192.0.2.20, zone: cell }
conduits:
  - name: rtu-to-scada
    from: rtu
    to: scada
    rules:
      - udp: { ports: [20000] }
`

func evasionCases() []Scenario {
	ev := func(id, name, title, why, pol string, build func(b *Builder)) Scenario {
		return Scenario{Name: name, ID: id, Proto: "evasion", Title: title, Why: why, Policy: pol, Build: build}
	}
	return []Scenario{
		ev("E1", "e01-one-byte-segments", "PDU split one byte per segment", "An allowed read and a forbidden write, each sent one byte per TCP segment (SCENARIOS.md 4.7): the write is judged when its last byte arrives.", ModbusPolicy,
			func(b *Builder) {
				c := b.TCP(HMI, PLC, 502)
				q := rd(3, 0, 10)
				c.Split(q, 1)
				c.S(mbResp(q, modbus.AppendReadRegistersResponse(nil, 3, make([]uint16, 10))))
				b.Expect(c.Split(mb(1, modbus.AppendWriteSingleRegister(nil, 1, 1)), 1), "deny", "function_not_allowed")
			}),
		ev("E2", "e02-pipelined-forbidden-second", "Pipelined PDUs, forbidden one second", "Read, write, read in one segment (SCENARIOS.md 4.7): only the write is denied; the first read is forwarded.", ModbusPolicy,
			func(b *Builder) {
				c := b.TCP(HMI, PLC, 502)
				p := append(rd(3, 0, 10), mb(1, modbus.AppendWriteSingleRegister(nil, 1, 1))...)
				p = append(p, rd(3, 0, 10)...)
				b.Expect(c.C(p), "deny", "function_not_allowed")
			}),
		ev("E3", "e03-overlap-different", "Retransmission overlapping inspected bytes with different content", "An allowed read, then a 'retransmission' of the same sequence range carrying a write [SU5][SN7]: evasion, deny and reset (the engine names it evasion:tcp_overlap_mismatch).", ModbusPolicy,
			func(b *Builder) {
				c := b.TCP(HMI, PLC, 502)
				seq := c.F.NextSeq(true)
				q := rd(3, 0, 10)
				c.C(q)
				w := mb(1, modbus.AppendWriteSingleRegister(nil, 1, 1))
				w[0], w[1] = q[0], q[1]
				w = append(w, make([]byte, len(q)-len(w))...)[:len(q)]
				b.Expect(b.Frame(c.F.Segment(true, seq, c.F.NextSeq(false), captureFlags(), w)), "deny", "evasion:tcp_overlap_mismatch")
			}),
		ev("E4", "e04-out-of-order", "Out-of-order segments", "The second half of a read arrives before the first; the sender retransmits it (SCENARIOS.md 4.7). The early segment is dropped (out_of_order), the retransmission completes the PDU, which is allowed.", ModbusPolicy,
			func(b *Builder) {
				c := b.TCP(HMI, PLC, 502)
				seq, ack := c.F.NextSeq(true), c.F.NextSeq(false)
				q := rd(3, 0, 10)
				b.Expect(b.Frame(c.F.Segment(true, seq+6, ack, captureFlags(), q[6:])), "deny", "out_of_order")
				c.C(q[:6])
				c.C(q[6:])
				c.S(mbResp(q, modbus.AppendReadRegistersResponse(nil, 3, make([]uint16, 10))))
			}),
		ev("E5", "e05-ip-fragments", "IP fragments to an inspected port", "A write whose MBAP header and PDU travel in two IPv4 fragments (SCENARIOS.md 4.7): fragments to inspected ports are denied.", ModbusPolicy,
			func(b *Builder) {
				c := b.TCP(HMI, PLC, 502)
				fr := Fragment(c.F.Send(true, mb(1, modbus.AppendWriteSingleRegister(nil, 1, 1))), 24)
				b.Expect(b.Frame(fr[0]), "deny", "fragment")
				b.Expect(b.Frame(fr[1]), "deny", "fragment")
			}),
		ev("E6", "e06-midstream", "Mid-stream pickup", "A connection whose handshake the gateway never saw [SU6]: in enforce mode its segments are refused (replayed with --strict-midstream).", ModbusPolicy,
			func(b *Builder) {
				c := b.TCPNoHandshake(HMI, PLC, 502)
				c.F.Advance(true, 1)
				c.F.Advance(false, 1)
				q := rd(3, 0, 10)
				b.Expect(c.C(q), "deny", "no_flow")
			}),
		ev("E7", "e07-non-protocol-502", "Non-protocol bytes on 502", "HTTP on TCP/502 [ZK3][QD1].", ModbusPolicy,
			func(b *Builder) {
				c := b.TCP(HMI, PLC, 502)
				b.Expect(c.C([]byte("GET / HTTP/1.1\r\nHost: plc\r\n\r\n")), "deny", "malformed:*")
			}),
		ev("E8", "e08-non-protocol-20000", "Non-protocol bytes on 20000", "TLS ClientHello bytes on TCP/20000 [ZK3].", DNP3Policy,
			func(b *Builder) {
				c := b.TCP(SCADA, RTU, 20000)
				b.Expect(c.C([]byte{0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03, 0, 0, 0, 0, 0}), "deny", "malformed:*")
			}),
		ev("E9", "e09-non-protocol-4840", "Non-protocol bytes on 4840", "SSH banner on TCP/4840 [ZK3].", OPCUAPolicy,
			func(b *Builder) {
				c := b.TCP(OPCCli, OPCSrv, 4840)
				b.Expect(c.C([]byte("SSH-2.0-OpenSSH_9.6\r\n")), "deny", "malformed:*")
			}),
		ev("E10", "e10-urgent-in-mbap", "Urgent byte inside the MBAP header", "A write sent with send(MSG_OOB) under TCP_CORK, the urgent byte at offset 5 (issue 13): kept inline the MBAP length reads 254, while a Linux receiver drops the byte and reads FC 6 write holding 0 = 258. Segments with URG on inspected conduits are dropped: evasion:tcp_urgent.", ModbusPolicy,
			func(b *Builder) {
				c := b.TCP(HMI, PLC, 502)
				readOK(c)
				b.Expect(b.Frame(Urgent(c.F.Send(true, []byte{0, 0x77, 0, 0, 0, 0xfe, 6, 1, 6, 0, 0, 1, 2}), 6)), "deny", "evasion:tcp_urgent")
			}),
		ev("E11", "e11-urgent-after-unit", "Urgent byte after the unit id", "The same write with the urgent byte after the unit id (issue 13): kept inline the parser reads FC 3 read holding 1536, a Linux receiver reads FC 6 write holding 0 = 258. Dropped: evasion:tcp_urgent.", ModbusPolicy,
			func(b *Builder) {
				c := b.TCP(HMI, PLC, 502)
				readOK(c)
				b.Expect(b.Frame(Urgent(c.F.Send(true, []byte{0, 0x78, 0, 0, 0, 6, 1, 3, 6, 0, 0, 1, 2}), 8)), "deny", "evasion:tcp_urgent")
			}),
		ev("E12", "e12-udp-reverse", "UDP from a responder's port to any port", "With a conduit plc -> logsrv udp/514, the log server sends from source port 514 to the PLC's Modbus (502), BACnet (47808) and SNMP (161) ports (issue 13). A UDP flow is judged from its initiator: these are new flows of the log server, refused; the PLC's own syslog flow and its answer cross.", LogPolicy,
			func(b *Builder) {
				b.UDP(PLC, LogSrv, 40100, 514, []byte("<13>plc1: boot"))
				b.UDP(LogSrv, PLC, 514, 40100, []byte("ack"))
				b.Expect(b.UDP(LogSrv, PLC, 514, 502, mb(1, modbus.AppendWriteSingleRegister(nil, 0, 258))), "deny", "no_conduit")
				b.Expect(b.UDP(LogSrv, PLC, 514, 47808, []byte{0x81, 0x0a, 0x00, 0x11, 0x01, 0x04, 0x00, 0x05, 0x01, 0x0f, 0x0c, 0x00, 0x80, 0x00, 0x01, 0x19, 0x55}), "deny", "no_conduit")
				b.Expect(b.UDP(LogSrv, PLC, 514, 161, []byte{0x30, 0x26, 0x02, 0x01, 0x01, 0x04, 0x07, 'p', 'r', 'i', 'v', 'a', 't', 'e', 0xa3, 0x18}), "deny", "no_conduit")
			}),
		ev("E13", "e13-dnp3-udp-outstation-first", "DNP3 over UDP, outstation speaks first", "The outstation's unsolicited response opens the UDP flow (issue 13): it is adopted on the conduit's DNP3 rule and inspected, each frame's direction taken from its DIR bit; the master's reads pass and its DIRECT_OPERATE from the same port is denied under the read-only policy.", DNP3UDPPolicy,
			func(b *Builder) {
				uns := dnp3.AppendLinkFrames(nil, ctrlResp, master, outstation, dnp3.AppendResponseHeader(nil, 0, dnp3.FuncUnsolicitedResp, 0, false))
				b.UDP(RTU, SCADA, 20000, 20000, uns)
				b.UDP(SCADA, RTU, 20000, 20000, dnReq(master, outstation, appReq(1, dnp3.FuncRead, dnp3.AppendAllHeader(nil, 60, 1))))
				b.UDP(RTU, SCADA, 20000, 20000, dnResp(dnp3.AppendResponseHeader(nil, 1, dnp3.FuncResponse, 0, false)))
				b.Expect(b.UDP(SCADA, RTU, 20000, 20000, dnReq(master, outstation, dnp3.AppendCROB(nil, 2, dnp3.FuncDirectOperate, 0, dnp3.CROB{Code: 0x03, Count: 1, OnMs: 100}))), "deny", "function_not_allowed")
			}),
		ev("E14", "e14-dnp3-udp-learned-plain", "DNP3 over UDP under a plain udp conduit from the outstation", "A policy learned with the first speaker taken for the client (issue 13): a plain udp conduit rtu -> scada on 20000. The outstation's datagram would open a flow on which the master's DIRECT_OPERATE rode back uninspected; DNP3 over UDP crosses only through a dnp3 rule, so the outstation's datagram is refused as dnp3_udp_not_inspected and the master's operate, with no flow to ride and no conduit of its own, as no_conduit.", DNP3UDPLearnedPolicy,
			func(b *Builder) {
				uns := dnp3.AppendLinkFrames(nil, ctrlResp, master, outstation, dnp3.AppendResponseHeader(nil, 0, dnp3.FuncUnsolicitedResp, 0, false))
				b.Expect(b.UDP(RTU, SCADA, 20000, 20000, uns), "deny", "dnp3_udp_not_inspected")
				b.Expect(b.UDP(SCADA, RTU, 20000, 20000, dnReq(master, outstation, dnp3.AppendCROB(nil, 1, dnp3.FuncDirectOperate, 0, dnp3.CROB{Code: 0x03, Count: 1, OnMs: 100}))), "deny", "no_conduit")
			}),
	}
}
