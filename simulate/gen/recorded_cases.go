package gen

import (
	"context"
	"fmt"

	goburrow "github.com/goburrow/modbus"
	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/otgw/otgw/protocols/modbus"
)

// override swaps in recorded traffic for a case of cases.go (see
// recorded.go): Suite applies it by catalogue id.
type override struct {
	why    string // replaces the case's Why when set
	source string // README: which libraries made the traffic
	build  func(b *Builder) error
}

// Sources named in the READMEs.
const (
	srcModbus = "Modbus traffic recorded from real libraries: the client is " + libGoburrow +
		" (TCPClientHandler), the server " + libSimonvetter + " (with simulate/peers' PLC register bank, " +
		"64 holding registers), run over 127.0.0.1 through a recording proxy and written on the suite's " +
		"documentation addresses."
	srcOPCUA = "OPC UA traffic recorded from real libraries: a " + libGopcua + " client (opcua.Client, " +
		"SecurityPolicy None) against a " + libGopcua + " server (server.Server with a map namespace), run over " +
		"127.0.0.1 through a recording proxy and written on the suite's documentation addresses. Values drawn at " +
		"run time (secure channel and token ids, sequence numbers, request ids and handles, timestamps, nonces, " +
		"session id and token, the loopback port in endpoint URLs) are replaced by fixed ones after decoding each " +
		"message with gopcua's codec; nothing else is changed."
)

// withModbus runs build with a simonvetter/modbus server that it stops
// afterwards.
func withModbus(build func(b *Builder, srv *mbServer) error) func(*Builder) error {
	return func(b *Builder) error {
		srv, err := startModbusServer()
		if err != nil {
			return err
		}
		defer srv.stop()
		return build(b, srv)
	}
}

// withUA runs build with a gopcua server that it stops afterwards.
func withUA(build func(b *Builder, srv *uaServer) error) func(*Builder) error {
	return func(b *Builder) error {
		srv, err := startUAServer()
		if err != nil {
			return err
		}
		defer srv.stop()
		return build(b, srv)
	}
}

// overrides lists the cases whose traffic is recorded from real libraries.
// DNP3 (no Go library) and the malformed and evasive cases keep the
// project's encoders and crafted bytes.
func overrides() map[string]override {
	return map[string]override{
		"M6": {
			why:    "A host that is no asset of any conduit reads holding registers [QD1]: its SYN is refused (no conduit), so no byte of its request exists past the gateway. Before it, the HMI's allowed polling passes: holding 0-9, coils 0-15, and holding 90-99, which the policy allows but the PLC does not have, answered by the server with exception 02 (Illegal Data Address) that the gateway forwards as the paired response.",
			source: srcModbus + " The attacker's SYN is built by the generator (nothing of it reaches a server).",
			build: withModbus(func(b *Builder, srv *mbServer) error {
				r, err := srv.record(1, readHolding(0, 10), readCoils(0, 16), readHolding(90, 10))
				if err != nil {
					return err
				}
				b.TCP(HMI, PLC, 502).play(r, 0, 3)
				b.Expect(b.TCPNoHandshake(Attacker, PLC, 502).SYN(), "deny", "no_conduit")
				return nil
			}),
		},
		"M7": {
			source: srcModbus,
			build: withModbus(func(b *Builder, srv *mbServer) error {
				for _, w := range []mbCall{
					func(c goburrow.Client) error { _, err := c.WriteSingleCoil(1, 0xFF00); return err },
					writeRegister(1, 5),
					func(c goburrow.Client) error { _, err := c.WriteMultipleCoils(0, 2, []byte{0x01}); return err },
					writeRegisters(0, 1, 2),
					func(c goburrow.Client) error { _, err := c.MaskWriteRegister(0, 0xff00, 0x0001); return err },
				} {
					if err := mbRecorded(b, srv, HMI, 1, "function_not_allowed", readHolding(0, 10), w); err != nil {
						return err
					}
				}
				return nil
			}),
		},
		"M15": {
			source: srcModbus,
			build: withModbus(func(b *Builder, srv *mbServer) error {
				if err := mbRecorded(b, srv, Eng, 1, "address_out_of_range",
					readHolding(0, 10), writeRegister(45, 500), writeRegisters(200, 1, 2, 3)); err != nil {
					return err
				}
				if err := mbRecorded(b, srv, Eng, 1, "value_out_of_range", writeRegister(45, 5000)); err != nil {
					return err
				}
				return mbRecorded(b, srv, HMI, 1, "function_not_allowed", readHolding(0, 10), writeRegister(45, 500))
			}),
		},
		"M16": {
			source: srcModbus + " Neither library sends FC 21 (write file record): that request is the project's encoder's (protocols/modbus), sent after a recorded read on the same connection; FC 23 is goburrow's ReadWriteMultipleRegisters.",
			build: withModbus(func(b *Builder, srv *mbServer) error {
				// FC 21 after a recorded allowed read, with the transaction
				// id that follows goburrow's.
				r, err := srv.record(1, readHolding(0, 10))
				if err != nil {
					return err
				}
				c := b.TCP(HMI, PLC, 502)
				c.play(r, 0, 1)
				fc21 := modbus.AppendWriteFileRecord(nil, []modbus.FileRecord{{RefType: 6, File: 1, Record: 0, Length: 1}}, [][]uint16{{7}})
				b.Expect(c.C(modbus.AppendRequest(nil, 2, 1, fc21)), "deny", "function_not_allowed")
				return mbRecorded(b, srv, HMI, 1, "function_not_allowed", readHolding(0, 10),
					func(c goburrow.Client) error {
						_, err := c.ReadWriteMultipleRegisters(0, 2, 40, 1, u16s([]uint16{1}))
						return err
					})
			}),
		},
		"U3": {
			why:    "The client opens a channel with SecurityPolicy None while the policy demands Sign and Basic256Sha256: denied at OPN, so the server never sees it.",
			source: srcOPCUA + " The capture holds the client's HEL, the server's ACK and the client's OPN.",
			build: withUA(func(b *Builder, srv *uaServer) error {
				r, err := srv.record()
				if err != nil {
					return err
				}
				ms := r.step(0)
				if len(ms) < 3 || string(ms[0].b[:3]) != "HEL" || string(ms[1].b[:3]) != "ACK" || string(ms[2].b[:3]) != "OPN" || !ms[2].client {
					return fmt.Errorf("gen: gopcua connect does not start HEL, ACK, OPN")
				}
				c := b.TCP(OPCCli, OPCSrv, 4840)
				c.msg(ms[0])
				c.msg(ms[1])
				b.Expect(c.msg(ms[2]), "deny", "*")
				return nil
			}),
		},
		"U4": {
			why:    "A gopcua client connects in None mode (session services are implied by any opcua rule), reads the server's NamespaceArray (gopcua does on Connect) and a tag: allowed. Its WriteRequest (i=673) and, on a second channel, its CallRequest (i=712) are denied by service.",
			source: srcOPCUA,
			build: withUA(func(b *Builder, srv *uaServer) error {
				ns := srv.ns
				read := func(ctx context.Context, c *opcua.Client) error {
					_, err := c.Read(ctx, &ua.ReadRequest{
						NodesToRead:        []*ua.ReadValueID{{NodeID: ua.NewStringNodeID(ns, uaTemp), AttributeID: ua.AttributeIDValue}},
						TimestampsToReturn: ua.TimestampsToReturnBoth,
					})
					return err
				}
				write := func(ctx context.Context, c *opcua.Client) error {
					v, err := ua.NewVariant(99.0)
					if err != nil {
						return err
					}
					_, err = c.Write(ctx, &ua.WriteRequest{NodesToWrite: []*ua.WriteValue{{
						NodeID: ua.NewStringNodeID(ns, uaSetpoint), AttributeID: ua.AttributeIDValue,
						Value: &ua.DataValue{EncodingMask: ua.DataValueValue, Value: v},
					}}})
					return err
				}
				call := func(ctx context.Context, c *opcua.Client) error {
					_, err := c.Call(ctx, &ua.CallMethodRequest{ObjectID: ua.NewNumericNodeID(ns, 1), MethodID: ua.NewNumericNodeID(ns, 2)})
					return err
				}
				r, err := srv.record(read, write)
				if err != nil {
					return err
				}
				c := b.TCP(OPCCli, OPCSrv, 4840)
				c.play(r, 0, 2)
				b.Expect(c.request(r, 2), "deny", "service_not_allowed")
				r2, err := srv.record(call)
				if err != nil {
					return err
				}
				c2 := b.TCP(OPCCli, OPCSrv, 4840)
				c2.play(r2, 0, 1)
				b.Expect(c2.request(r2, 1), "deny", "service_not_allowed")
				return nil
			}),
		},
		"M17": {
			source: srcModbus + " Each unit id is one goburrow connection (TCPClientHandler.SlaveId).",
			build: withModbus(func(b *Builder, srv *mbServer) error {
				for u := byte(1); u <= 5; u++ {
					r, err := srv.record(u, readCoils(0, 8))
					if err != nil {
						return err
					}
					c := b.TCP(HMI, PLC, 502)
					if u == 1 {
						c.play(r, 0, 1)
						continue
					}
					b.Expect(c.request(r, 0), "deny", "unit_not_allowed")
				}
				return nil
			}),
		},
	}
}
