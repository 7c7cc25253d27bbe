package modbus

import "github.com/otgw/otgw/protocols"

// Conn follows one Modbus/TCP connection for offline tools (dissect, learn,
// replay reports): it buffers each direction, frames, decodes and pairs
// ADUs and emits one protocols.Record per ADU. The caller tells the
// direction: bytes to the server port (502) are requests, bytes from it are
// responses.
//
// Record fields, in order: tid, unit, fc (as on the wire, an exception keeps
// 0x80), exception (only when fc >= 0x80), addr and qty (when the PDU has
// them; FC 23 adds write_addr and write_qty), sub (FC 8 sub-function or FC
// 43 MEI type); values are ints. Record.Anomaly holds the anomaly name.
//
// Bytes that cannot be Modbus/TCP produce one Record with Anomaly
// "non_modbus" and no fields; the rest of that direction is ignored until
// the next gap. A gap drops the partial ADU buffered in that direction; a
// gap in the response direction lets the outstanding requests be evicted
// quietly. After a gap (or a mid-stream start) responses without a known
// request are not flagged until the first response matches a request again.
//
// Conn allocates a Fields slice per Record, which the caller may keep. Use
// NewConn; a Conn is not safe for concurrent use.
type Conn struct {
	framer Framer
	pair   Pairing
	adu    ADU
	dirs   [2]connDir
	// resyncing is set by a gap in either direction (including a capture
	// that starts mid-stream) and cleared by the first response that
	// matches a request: until then a response may answer a request the
	// capture never showed, so response_without_request and tid_mismatch
	// are not reported.
	resyncing bool
}

// connDir is the per-direction stream state.
type connDir struct {
	buf     [MaxUMASADULen]byte // partial ADU carried between Feed calls
	n       int                 // bytes in buf
	discard bool                // non-Modbus bytes seen: ignore until a gap
}

var _ protocols.Conn = (*Conn)(nil)

// NewConn returns a Conn with no buffered bytes and no outstanding requests.
func NewConn() *Conn { return &Conn{} }

// Feed implements protocols.Conn. DirUnknown is treated as a request.
func (c *Conn) Feed(dir protocols.Dir, b []byte, gap bool, emit func(protocols.Record)) {
	if dir != protocols.Response {
		dir = protocols.Request
	}
	st := &c.dirs[0]
	if dir == protocols.Response {
		st = &c.dirs[1]
	}
	if gap {
		c.resyncing = true
		st.n = 0
		st.discard = false
		if dir == protocols.Response {
			// Responses may have been lost: the requests they answered
			// would stay outstanding forever, so let them go quietly.
			c.pair.MarkStale()
		}
	}
	if st.discard {
		return
	}
	// Complete the ADU carried over from earlier segments first.
	for st.n > 0 {
		n, need, err := c.framer.Next(st.buf[:st.n])
		if err != nil {
			c.nonModbus(st, dir, emit)
			return
		}
		if n > 0 {
			c.handle(st.buf[:n], dir, emit)
			st.n = 0
			break
		}
		if len(b) == 0 {
			return
		}
		take := need
		if take > len(b) {
			take = len(b)
		}
		st.n += copy(st.buf[st.n:], b[:take])
		b = b[take:]
	}
	// Then the ADUs that lie wholly in b, without copying.
	for len(b) > 0 {
		n, _, err := c.framer.Next(b)
		if err != nil {
			c.nonModbus(st, dir, emit)
			return
		}
		if n == 0 {
			st.n = copy(st.buf[:], b) // len(b) < MaxUMASADULen: Next would have framed it
			return
		}
		c.handle(b[:n], dir, emit)
		b = b[n:]
	}
}

func (c *Conn) nonModbus(st *connDir, dir protocols.Dir, emit func(protocols.Record)) {
	st.n = 0
	st.discard = true
	emit(protocols.Record{Dir: dir, Anomaly: AnomalyNonModbus.String()})
}

// handle decodes one framed ADU, pairs it and emits its Record.
func (c *Conn) handle(b []byte, dir protocols.Dir, emit func(protocols.Record)) {
	a := &c.adu
	_ = a.Decode(b, dir) // the anomaly is reported in the Record
	var an Anomaly
	if dir == protocols.Request {
		an = c.pair.Request(a)
	} else {
		var ok bool
		_, ok, an = c.pair.Response(a)
		if ok {
			c.resyncing = false
		} else if c.resyncing && (an == AnomalyResponseWithoutRequest || an == AnomalyTIDMismatch) {
			an = AnomalyNone
		}
	}
	if a.Anomaly == AnomalyNone {
		a.Anomaly = an
	}
	emit(RecordOf(a))
}

// RecordOf builds the offline Record of a decoded ADU (see Conn for the
// fields). It allocates the Fields slice.
func RecordOf(a *ADU) protocols.Record {
	r := protocols.Record{Dir: a.Dir, Fields: make([]protocols.KV, 0, 9)}
	if a.Anomaly != AnomalyNone {
		r.Anomaly = a.Anomaly.String()
	}
	if !a.HasPDU() {
		if !a.HasHeader() {
			return r
		}
		r.Fields = append(r.Fields,
			protocols.KV{Key: "tid", Value: int(a.TransactionID)},
			protocols.KV{Key: "unit", Value: int(a.Unit)})
		return r
	}
	r.Fields = append(r.Fields,
		protocols.KV{Key: "tid", Value: int(a.TransactionID)},
		protocols.KV{Key: "unit", Value: int(a.Unit)},
		protocols.KV{Key: "fc", Value: int(a.Function)})
	if a.IsException {
		r.Fields = append(r.Fields, protocols.KV{Key: "exception", Value: int(a.Exception)})
	}
	if a.HasAddress {
		r.Fields = append(r.Fields, protocols.KV{Key: "addr", Value: int(a.Address)})
	}
	if a.HasQuantity {
		r.Fields = append(r.Fields, protocols.KV{Key: "qty", Value: int(a.Quantity)})
	}
	if a.HasWrite {
		r.Fields = append(r.Fields,
			protocols.KV{Key: "write_addr", Value: int(a.WriteAddress)},
			protocols.KV{Key: "write_qty", Value: int(a.WriteQuantity)})
	}
	if a.HasSub {
		r.Fields = append(r.Fields, protocols.KV{Key: "sub", Value: int(a.Sub)})
		if a.Func() == FuncUMAS {
			r.Fields = append(r.Fields, protocols.KV{Key: "umas", Value: UMASFunctionName(uint8(a.Sub))})
		}
	}
	return r
}
