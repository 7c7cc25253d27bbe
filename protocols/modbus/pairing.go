package modbus

// MaxOutstanding bounds the requests a Pairing remembers per connection.
// The TCP guide (§4.2) lets a client pipeline requests; real clients keep
// one to a handful outstanding, so 16 leaves room without letting a client
// grow gateway state.
const MaxOutstanding = 16

// Outstanding is what Pairing remembers of a request.
type Outstanding struct {
	TransactionID uint16
	Unit          uint8
	Function      uint8
	Table         Table
	Address       uint16
	Quantity      uint16
	WriteAddress  uint16 // FC 23
	WriteQuantity uint16 // FC 23
	Value         uint16 // FC 5/6 value, FC 22 AND mask
	OrMask        uint16 // FC 22
	Sub           uint16 // FC 8 sub-function, FC 43 MEI type
	seq           uint64
	stale         bool // outstanding before a gap: may be evicted silently
}

// Number is the request's number in its Pairing (Pairing.Next), unique
// per connection: the key of its transaction.
func (o *Outstanding) Number() uint64 { return o.seq }

// AddressOf returns the address of the i-th value of the response to this
// request (the i-th register of an FC 3/4/23 read, the i-th bit of FC 1/2),
// and whether i lies inside the requested quantity.
func (o *Outstanding) AddressOf(i int) (uint16, bool) {
	if i < 0 || i >= int(o.Quantity) {
		return 0, false
	}
	return uint16(int(o.Address) + i), true
}

// Pairing matches responses to requests on one connection by transaction id
// (TCP guide §4.2). It is the pairing state of Session, which reports what
// it matched (Session.Paired, Session.Exchange): nothing outside this
// package pairs Modbus requests and responses. It holds at most MaxOutstanding requests in a fixed
// table and allocates nothing. The zero value is ready. A Pairing belongs to
// one connection and is not safe for concurrent use.
type Pairing struct {
	slots [MaxOutstanding]Outstanding
	used  [MaxOutstanding]bool
	n     int
	seq   uint64 // insertion counter, to find the oldest entry
}

// Len returns the number of outstanding requests.
func (p *Pairing) Len() int { return p.n }

// CheckOldest compares a response with the oldest outstanding request as
// Response does with the request it pairs (unit, function, byte count,
// echo), without removing it: for a response whose transaction id matched
// none (AnomalyTIDMismatch) that the caller may take as the answer to
// that request. AnomalyResponseWithoutRequest when nothing is outstanding.
func (p *Pairing) CheckOldest(a *ADU) Anomaly {
	if i := p.oldest(); i >= 0 {
		return check(&p.slots[i], a)
	}
	return AnomalyResponseWithoutRequest
}

func (p *Pairing) oldest() int {
	best := -1
	for i := range p.slots {
		if p.used[i] && (best < 0 || p.slots[i].seq < p.slots[best].seq) {
			best = i
		}
	}
	return best
}

// TakeOldest removes and returns the oldest outstanding request: the one a
// caller takes as answered by a response whose transaction id matched none
// (AnomalyTIDMismatch) when it accepts such responses from a device that
// numbers its answers wrongly. ok is false when nothing is outstanding.
func (p *Pairing) TakeOldest() (req Outstanding, ok bool) {
	best := p.oldest()
	if best < 0 {
		return Outstanding{}, false
	}
	p.used[best] = false
	p.n--
	return p.slots[best], true
}

// Reset forgets every outstanding request (after a reconnect). Request
// numbers (Next) keep counting: a request after a reset never takes the
// number of one before it.
func (p *Pairing) Reset() { *p = Pairing{seq: p.seq} }

// Next returns the number Request gives the next request it records. A
// response's request (Response, TakeOldest) keeps its number in
// Outstanding.Number.
func (p *Pairing) Next() uint64 { return p.seq + 1 }

// OldestNumber returns the number of the oldest outstanding request, the
// one TakeOldest would remove; ok is false when nothing is outstanding.
func (p *Pairing) OldestNumber() (n uint64, ok bool) {
	if i := p.oldest(); i >= 0 {
		return p.slots[i].seq, true
	}
	return 0, false
}

// MarkStale marks every outstanding request as possibly unanswerable (the
// response stream had a gap, so their responses may be lost). Stale
// requests still match responses, but when the table is full they are
// evicted first and without AnomalyTooManyOutstanding.
func (p *Pairing) MarkStale() {
	for i := range p.slots {
		p.slots[i].stale = true
	}
}

// Request records a decoded request. Requests that reuse an outstanding
// transaction id are kept too (clients that pipeline with one id, or retry
// with the same id, exist in the field); Response matches them oldest
// first. When the table is full the oldest request is forgotten and
// AnomalyTooManyOutstanding is returned; otherwise AnomalyNone. ADUs whose
// header did not decode are ignored.
func (p *Pairing) Request(a *ADU) Anomaly {
	if !a.HasPDU() {
		return AnomalyNone // no PDU to remember
	}
	o := Outstanding{
		TransactionID: a.TransactionID,
		Unit:          a.Unit,
		Function:      a.Function,
		Table:         a.Table,
		Address:       a.Address,
		Quantity:      a.Quantity,
		WriteAddress:  a.WriteAddress,
		WriteQuantity: a.WriteQuantity,
		Value:         a.Value,
		Sub:           a.Sub,
	}
	if a.Function == FuncMaskWriteRegister {
		o.Value, o.OrMask = a.AndMask, a.OrMask
	}
	p.seq++
	o.seq = p.seq
	free, oldest := -1, -1
	for i := range p.slots {
		if !p.used[i] {
			if free < 0 {
				free = i
			}
			continue
		}
		if oldest < 0 || older(&p.slots[i], &p.slots[oldest]) {
			oldest = i
		}
	}
	if free >= 0 {
		p.slots[free], p.used[free] = o, true
		p.n++
		return AnomalyNone
	}
	stale := p.slots[oldest].stale
	p.slots[oldest] = o
	if stale {
		return AnomalyNone
	}
	return AnomalyTooManyOutstanding
}

// Response matches a decoded response to its request and removes the
// request from the table. Among requests with the response's transaction
// id it takes the oldest one with the same unit and function, else the
// oldest one. It returns the request (ok reports whether one matched) and
// the first pairing anomaly: AnomalyResponseWithoutRequest when nothing is
// outstanding, AnomalyTIDMismatch when no outstanding request has the
// transaction id, AnomalyUnitMismatch, AnomalyFunctionMismatch,
// AnomalyByteCountMismatch when a read response does not carry the
// requested quantity, AnomalyEchoMismatch when a write or diagnostics
// response does not echo its request.
func (p *Pairing) Response(a *ADU) (req Outstanding, ok bool, an Anomaly) {
	if !a.HasPDU() {
		return Outstanding{}, false, AnomalyNone
	}
	if p.n == 0 {
		return Outstanding{}, false, AnomalyResponseWithoutRequest
	}
	best, any := -1, -1
	fc := a.Func()
	for i := range p.slots {
		if !p.used[i] || p.slots[i].TransactionID != a.TransactionID {
			continue
		}
		s := &p.slots[i]
		if any < 0 || s.seq < p.slots[any].seq {
			any = i
		}
		if s.Unit == a.Unit && s.Function == fc && (best < 0 || s.seq < p.slots[best].seq) {
			best = i
		}
	}
	if best < 0 {
		best = any
	}
	if best < 0 {
		return Outstanding{}, false, AnomalyTIDMismatch
	}
	req = p.slots[best]
	p.used[best] = false
	p.n--
	return req, true, check(&req, a)
}

// older orders eviction: stale entries first, then by age.
func older(a, b *Outstanding) bool {
	if a.stale != b.stale {
		return a.stale
	}
	return a.seq < b.seq
}

// check compares a response with its request.
func check(req *Outstanding, a *ADU) Anomaly {
	if a.Unit != req.Unit {
		return AnomalyUnitMismatch
	}
	if a.Func() != req.Function {
		return AnomalyFunctionMismatch
	}
	if a.IsException || a.Anomaly != AnomalyNone {
		return AnomalyNone
	}
	switch req.Function {
	case FuncReadCoils, FuncReadDiscreteInputs:
		if int(a.ByteCount) != (int(req.Quantity)+7)/8 {
			return AnomalyByteCountMismatch
		}
	case FuncReadHoldingRegisters, FuncReadInputRegisters, FuncReadWriteMultipleRegisters:
		if int(a.ByteCount) != 2*int(req.Quantity) {
			return AnomalyByteCountMismatch
		}
	case FuncWriteSingleCoil, FuncWriteSingleRegister:
		if a.Address != req.Address || a.Value != req.Value {
			return AnomalyEchoMismatch
		}
	case FuncWriteMultipleCoils, FuncWriteMultipleRegisters:
		if a.Address != req.Address || a.Quantity != req.Quantity {
			return AnomalyEchoMismatch
		}
	case FuncMaskWriteRegister:
		if a.Address != req.Address || a.AndMask != req.Value || a.OrMask != req.OrMask {
			return AnomalyEchoMismatch
		}
	case FuncDiagnostics, FuncEncapsulatedInterface:
		if a.Sub != req.Sub {
			return AnomalyEchoMismatch
		}
	}
	return AnomalyNone
}
