package gen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net/netip"
	"strconv"
	"time"

	goburrow "github.com/goburrow/modbus"
	svmodbus "github.com/simonvetter/modbus"

	"github.com/otgw/otgw/simulate/peers"
)

// Library versions of the recorded traffic, as in go.mod (a test checks
// them against it).
const (
	libGoburrow    = "github.com/goburrow/modbus v0.1.0"
	libSimonvetter = "github.com/simonvetter/modbus v1.6.3"
)

// recHolding is the number of holding registers of the recorded PLC: the
// policy lets the HMI read holding 0-99, so a read above 63 is allowed by
// the gateway and answered by the server library with exception 02
// (Illegal Data Address).
const recHolding = 64

// recPLC is the server's data model: simulate/peers' PLC with recHolding
// holding registers.
type recPLC struct{ *peers.PLC }

// HandleHoldingRegisters implements svmodbus.RequestHandler.
func (p recPLC) HandleHoldingRegisters(req *svmodbus.HoldingRegistersRequest) ([]uint16, error) {
	if int(req.Addr)+int(req.Quantity) > recHolding {
		return nil, svmodbus.ErrIllegalDataAddress
	}
	return p.PLC.HandleHoldingRegisters(req)
}

// mbServer is a simonvetter/modbus server on 127.0.0.1.
type mbServer struct {
	s    *svmodbus.ModbusServer
	addr string
}

func startModbusServer() (*mbServer, error) {
	var err error
	for range 3 { // the port may be taken between freePort and Start
		var port int
		if port, err = freePort(); err != nil {
			continue
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		var s *svmodbus.ModbusServer
		s, err = svmodbus.NewServer(&svmodbus.ServerConfiguration{
			URL: "tcp://" + addr, Timeout: time.Minute, MaxClients: 8,
			Logger: log.New(io.Discard, "", 0),
		}, recPLC{peers.NewPLC()})
		if err != nil {
			return nil, err
		}
		if err = s.Start(); err == nil {
			return &mbServer{s: s, addr: addr}, nil
		}
	}
	return nil, fmt.Errorf("gen: modbus server: %w", err)
}

func (m *mbServer) stop() { _ = m.s.Stop() }

// mbCall is one call of the goburrow client (one step of a recording).
type mbCall func(c goburrow.Client) error

// record runs calls, one step each, from a goburrow TCP client with unit
// id unit, on one connection to m through a recording proxy. A Modbus
// exception from the server is an answer like any other; any other error
// (timeout, closed connection) fails the recording.
func (m *mbServer) record(unit byte, calls ...mbCall) (*recording, error) {
	p, err := startProxy(m.addr)
	if err != nil {
		return nil, err
	}
	h := goburrow.NewTCPClientHandler(p.Addr())
	h.SlaveId = unit
	h.Timeout = recTimeout
	h.IdleTimeout = time.Minute
	err = h.Connect()
	if err == nil {
		c := goburrow.NewClient(h)
		for i, call := range calls {
			p.mark()
			if cerr := call(c); cerr != nil {
				var me *goburrow.ModbusError
				if !errors.As(cerr, &me) {
					err = fmt.Errorf("gen: goburrow call %d: %w", i, cerr)
					break
				}
			}
		}
		_ = h.Close()
	}
	r, ferr := p.finish(mbapLen)
	if err == nil {
		err = ferr
	}
	if err != nil {
		return nil, err
	}
	if len(r.steps) != len(calls) {
		return nil, fmt.Errorf("gen: recorded %d steps, want %d", len(r.steps), len(calls))
	}
	return r, nil
}

// mbapLen is the length of the Modbus/TCP ADU at the start of b (MBAP
// length field + the 6 bytes before it, Modbus Messaging on TCP/IP v1.0b
// section 3.1.3).
func mbapLen(b []byte) int {
	if len(b) < 6 {
		return 0
	}
	return 6 + int(binary.BigEndian.Uint16(b[4:]))
}

// Calls of the recorded cases.
func readHolding(addr, qty uint16) mbCall {
	return func(c goburrow.Client) error { _, err := c.ReadHoldingRegisters(addr, qty); return err }
}

func readCoils(addr, qty uint16) mbCall {
	return func(c goburrow.Client) error { _, err := c.ReadCoils(addr, qty); return err }
}

func writeRegister(addr, v uint16) mbCall {
	return func(c goburrow.Client) error { _, err := c.WriteSingleRegister(addr, v); return err }
}

func writeRegisters(addr uint16, vs ...uint16) mbCall {
	return func(c goburrow.Client) error {
		_, err := c.WriteMultipleRegisters(addr, uint16(len(vs)), u16s(vs))
		return err
	}
}

func u16s(vs []uint16) []byte {
	b := make([]byte, 0, 2*len(vs))
	for _, v := range vs {
		b = binary.BigEndian.AppendUint16(b, v)
	}
	return b
}

// mbRecorded is the common shape of the recorded Modbus cases: the
// recording's steps but the last are played whole (request and the
// server's answer), the last one's request is expected to be denied.
func mbRecorded(b *Builder, srv *mbServer, client netip.Addr, unit byte, reason string, calls ...mbCall) error {
	r, err := srv.record(unit, calls...)
	if err != nil {
		return err
	}
	c := b.TCP(client, PLC, 502)
	c.play(r, 0, len(calls)-1)
	b.Expect(c.request(r, len(calls)-1), "deny", reason)
	return nil
}
