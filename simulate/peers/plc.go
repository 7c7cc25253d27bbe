package peers

import (
	"errors"
	"sync"
	"time"

	"github.com/simonvetter/modbus"
)

// Registers is the size of each table of the PLC.
const Registers = 200

// PLC is a Modbus server's data model: four tables of Registers entries.
// Safe for concurrent use.
type PLC struct {
	mu       sync.Mutex // guards the tables and writes
	holding  [Registers]uint16
	input    [Registers]uint16
	coils    [Registers]bool
	discrete [Registers]bool
	writes   int
}

// NewPLC returns a PLC with holding register i = 1000+i, input register
// i = 2000+i, coil i = i odd, discrete input i = i even.
func NewPLC() *PLC {
	p := &PLC{}
	for i := range Registers {
		p.holding[i] = uint16(1000 + i)
		p.input[i] = uint16(2000 + i)
		p.coils[i] = i%2 == 1
		p.discrete[i] = i%2 == 0
	}
	return p
}

// Holding returns holding register addr.
func (p *PLC) Holding(addr int) uint16 { p.mu.Lock(); defer p.mu.Unlock(); return p.holding[addr] }

// Writes returns how many write requests the PLC executed.
func (p *PLC) Writes() int { p.mu.Lock(); defer p.mu.Unlock(); return p.writes }

func inRange(addr, qty uint16) bool { return int(addr)+int(qty) <= Registers }

// HandleCoils implements modbus.RequestHandler.
func (p *PLC) HandleCoils(req *modbus.CoilsRequest) ([]bool, error) {
	if !inRange(req.Addr, req.Quantity) {
		return nil, modbus.ErrIllegalDataAddress
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if req.IsWrite {
		p.writes++
		copy(p.coils[req.Addr:], req.Args)
		return nil, nil
	}
	return append([]bool(nil), p.coils[req.Addr:req.Addr+req.Quantity]...), nil
}

// HandleDiscreteInputs implements modbus.RequestHandler.
func (p *PLC) HandleDiscreteInputs(req *modbus.DiscreteInputsRequest) ([]bool, error) {
	if !inRange(req.Addr, req.Quantity) {
		return nil, modbus.ErrIllegalDataAddress
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]bool(nil), p.discrete[req.Addr:req.Addr+req.Quantity]...), nil
}

// HandleHoldingRegisters implements modbus.RequestHandler.
func (p *PLC) HandleHoldingRegisters(req *modbus.HoldingRegistersRequest) ([]uint16, error) {
	if !inRange(req.Addr, req.Quantity) {
		return nil, modbus.ErrIllegalDataAddress
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if req.IsWrite {
		p.writes++
		copy(p.holding[req.Addr:], req.Args)
	}
	return append([]uint16(nil), p.holding[req.Addr:req.Addr+req.Quantity]...), nil
}

// HandleInputRegisters implements modbus.RequestHandler.
func (p *PLC) HandleInputRegisters(req *modbus.InputRegistersRequest) ([]uint16, error) {
	if !inRange(req.Addr, req.Quantity) {
		return nil, modbus.ErrIllegalDataAddress
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]uint16(nil), p.input[req.Addr:req.Addr+req.Quantity]...), nil
}

// Serve starts a Modbus/TCP server for p on addr ("0.0.0.0:502"). The
// listening socket is created in the calling thread's network namespace.
func Serve(p *PLC, addr string) (*modbus.ModbusServer, error) {
	if p == nil {
		return nil, errors.New("peers: nil PLC")
	}
	s, err := modbus.NewServer(&modbus.ServerConfiguration{
		URL: "tcp://" + addr, Timeout: 5 * time.Minute, MaxClients: 64,
	}, p)
	if err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}
