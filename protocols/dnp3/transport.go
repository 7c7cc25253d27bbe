package dnp3

// Transport header bits (IEEE 1815-2012 clause 8.2.1).
const (
	TransportFIN = 0x80 // final segment of a fragment
	TransportFIR = 0x40 // first segment of a fragment
	transportSeq = 0x3F
)

// MaxFragment is the largest application fragment a Reassembler holds. The
// standard lets devices choose; 2048 octets is the customary maximum
// (IEEE 1815-2012 clause 4.2.1 recommends at least 2048 for receivers).
const MaxFragment = 2048

// Reassembler joins the transport segments of one direction of one
// master-outstation association into application fragments
// (IEEE 1815-2012 clause 8.2). It holds the fragment in a fixed buffer and
// allocates nothing. The zero value is ready and uses MaxFragment.
type Reassembler struct {
	// Limit lowers the largest fragment accepted; 0 or values above
	// MaxFragment mean MaxFragment.
	Limit int

	n          int   // bytes held
	seq        uint8 // sequence number of the last accepted segment
	active     bool  // a fragment is in progress
	discarding bool  // the fragment in progress overflowed: drop until FIR
	buf        [MaxFragment]byte
}

// Reset drops any fragment in progress (after a gap in the stream).
func (r *Reassembler) Reset() { r.n, r.active, r.discarding = 0, false, false }

// InProgress reports whether a fragment has begun but not finished.
func (r *Reassembler) InProgress() bool { return r.active }

// Add accepts one transport segment: the user data of one link frame, its
// first octet being the transport header. When the segment completes a
// fragment (FIN), Add returns it; it aliases r and is valid until the next
// Add or Reset. The rules of clause 8.2.1.2: a FIR segment starts a new
// fragment whatever its sequence number, dropping one in progress; a
// non-FIR segment must follow the previous one with the next sequence number
// (mod 64), otherwise the fragment is dropped. a reports what was wrong.
func (r *Reassembler) Add(seg []byte) (frag []byte, a Anomaly) {
	if len(seg) == 0 {
		return nil, AnomalyTransportTruncated
	}
	h := seg[0]
	payload := seg[1:]
	seq := h & transportSeq
	limit := r.Limit
	if limit <= 0 || limit > MaxFragment {
		limit = MaxFragment
	}
	switch {
	case h&TransportFIR != 0:
		r.n, r.active, r.discarding = 0, true, false
	case r.discarding:
		if (seq-r.seq)&transportSeq != 1 {
			r.Reset()
			return nil, AnomalyTransportSeq
		}
		r.seq = seq
		if h&TransportFIN != 0 {
			r.Reset()
		}
		return nil, AnomalyReassemblyOverflow
	case !r.active:
		return nil, AnomalyFragmentWithoutFIR
	case (seq-r.seq)&transportSeq != 1:
		r.Reset()
		return nil, AnomalyTransportSeq
	}
	r.seq = seq
	if r.n+len(payload) > limit {
		r.n, r.active = 0, false
		r.discarding = h&TransportFIN == 0
		return nil, AnomalyReassemblyOverflow
	}
	r.n += copy(r.buf[r.n:], payload)
	if h&TransportFIN == 0 {
		return nil, AnomalyNone
	}
	r.active = false
	return r.buf[:r.n], AnomalyNone
}
