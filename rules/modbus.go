package rules

import (
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/modbus"
)

func init() { registerAdapter(protocols.ProtoModbus, setModbus) }

// setModbus is the Modbus section's adapter (PDU.Set): the ADU, and the
// session's pairing.
func setModbus(p *PDU, s protocols.Session) bool {
	ss, ok := s.(*modbus.Session)
	if !ok {
		p.Malformed(protocols.ProtoModbus, s.Dir(), protocols.AnomalyNone)
		return false
	}
	p.SetModbus(ss.ADU(), ss.Dir())
	if p.Anomaly == protocols.AnomalyNone {
		p.Anomaly = ss.PairingAnomaly().Tagged()
	}
	if ss.Dir() == protocols.Response {
		p.Modbus.PairedRequest = ss.Paired()
	}
	return true
}

// SetModbus fills p from a decoded Modbus ADU (Modbus Application Protocol
// v1.1b3 section 6): unit, function, the read range, the write range and
// the written register values. Pairing (PairedRequest, pairing anomalies)
// is the session's: see Set.
func (p *PDU) SetModbus(a *modbus.ADU, dir protocols.Dir) {
	p.reset(protocols.ProtoModbus, dir)
	p.Anomaly = a.Anomaly.Tagged()
	m := &p.Modbus
	m.Unit = a.Unit
	m.FC = a.Function
	m.Sub = a.Sub
	m.Addr, m.Qty = a.Address, a.Quantity
	m.WriteAddr, m.WriteQty = 0, 0
	m.PairedRequest = false
	m.Exception = 0
	if a.IsException {
		m.Exception = uint8(a.Exception)
	}
	m.NValues = 0
	m.Unread = false
	fc := a.Func()
	if a.HasWrite {
		m.WriteAddr, m.WriteQty = a.WriteAddress, a.WriteQuantity
	}
	if fc == modbus.FuncWriteSingleCoil || fc == modbus.FuncWriteSingleRegister {
		m.Qty = 1
	}
	if dir != protocols.Response {
		m.Unread = modbusUnread(a)
		switch fc {
		case modbus.FuncWriteMultipleCoils, modbus.FuncWriteMultipleRegisters:
			m.Qty = modbusWriteReach(a, a.Quantity, 5)
		case modbus.FuncReadWriteMultipleRegisters:
			m.WriteQty = modbusWriteReach(a, a.WriteQuantity, 9)
		}
		switch fc {
		case modbus.FuncWriteSingleRegister, modbus.FuncWriteMultipleRegisters, modbus.FuncReadWriteMultipleRegisters:
			regs := a.Registers()
			n := min(len(regs), MaxValues)
			copy(m.Values[:n], regs[:n])
			m.NValues = uint8(n)
		}
	}
}

// modbusUnread reports whether a request ends before the fields after its
// function code that rules judge: the address (and quantity) of the table
// functions, the sub-function of FC 8 and FC 43. ADU.Decode reads them
// all or none; a tolerated anomaly (truncated) must not let the zero
// values stand for them.
func modbusUnread(a *modbus.ADU) bool {
	if !a.HasPDU() {
		return true
	}
	switch a.Function {
	case 1, 2, 3, 4, 5, 6, 15, 16, 22, 23:
		return !a.HasAddress
	case 8, 43:
		return !a.HasSub
	}
	return false
}

// modbusWriteReach returns how many coils or registers a write of FC 15,
// 16 or 23 may reach (the write part for FC 23), its data starting at
// offset data of the PDU after the function code: the quantity when the
// byte count and the data agree with it (MAP section 6.11, 6.12, 6.17),
// else the most that the quantity, the byte count or the data bytes
// present could make a server write. A tolerated byte_count_mismatch or
// quantity_out_of_range then cannot hide written registers from the rule.
func modbusWriteReach(a *modbus.ADU, qty uint16, data int) uint16 {
	if !a.HasByteCount {
		return qty
	}
	bc, n := int(a.ByteCount), max(len(a.Data)-data, 0)
	reach := int(qty)
	if a.Function == modbus.FuncWriteMultipleCoils {
		if bc == (reach+7)/8 && n == bc {
			return qty
		}
		reach = max(reach, 8*bc, 8*n)
	} else {
		reach = max(reach, (bc+1)/2, (n+1)/2)
	}
	return uint16(min(reach, 0xFFFF))
}
