package dnp3

// Application control octet bits (IEEE 1815-2012 clause 4.2.2.4).
const (
	AppFIR = 0x80 // first fragment of a message
	AppFIN = 0x40 // final fragment of a message
	AppCON = 0x20 // confirmation requested
	AppUNS = 0x10 // unsolicited
	appSeq = 0x0F
)

// MaxObjects is the largest number of object headers Fragment keeps; a
// fragment with more is flagged AnomalyTooManyObjects and the walk stops.
const MaxObjects = 32

// Qualifier range specifier codes (clause 4.2.2.7.3.3).
const (
	RangeStartStop8  = 0x0
	RangeStartStop16 = 0x1
	RangeStartStop32 = 0x2
	RangeVirtual8    = 0x3
	RangeVirtual16   = 0x4
	RangeVirtual32   = 0x5
	RangeAll         = 0x6
	RangeCount8      = 0x7
	RangeCount16     = 0x8
	RangeCount32     = 0x9
	RangeFreeFormat  = 0xB
)

// ObjectHeader is one object header of a fragment (clause 4.2.2.7):
// group, variation and qualifier, with the points it covers.
//
// For start-stop qualifiers (range codes 0-5) Start and Stop are the range
// and Count its size (saturating at 2^32-1). For count qualifiers (7, 8,
// 9, 0xB) Count is the count; with an index prefix (0x17, 0x28, 0x39, ...)
// Start and Stop hold the lowest and highest index named by the objects, so
// that rules can judge the points a command touches. For qualifier 0x06
// (all points) all three are zero.
type ObjectHeader struct {
	Group, Variation, Qualifier uint8
	Start, Stop, Count          uint32
}

// RangeCode returns the range specifier code of the qualifier.
func (h ObjectHeader) RangeCode() uint8 { return h.Qualifier & 0x0F }

// PrefixCode returns the object prefix code of the qualifier.
func (h ObjectHeader) PrefixCode() uint8 { return h.Qualifier >> 4 & 0x07 }

// IsRange reports whether the qualifier gives a start-stop range.
func (h ObjectHeader) IsRange() bool { return h.RangeCode() <= RangeVirtual32 }

// Fragment is one decoded application fragment (clause 4.2). Decode fills
// it in place; it does not alias the decoded bytes. The zero value is an
// empty fragment.
type Fragment struct {
	Control uint8        // application control octet
	Func    FunctionCode // function code
	IIN     uint16       // internal indications of responses: IIN1<<8 | IIN2
	// Anomaly is AnomalyNone when the fragment is well formed; otherwise
	// the anomaly that stopped the walk, or else the first one that did
	// not (an undefined object named without data, a wrong direction).
	Anomaly    Anomaly
	NumObjects int                      // headers in Objects
	Objects    [MaxObjects]ObjectHeader // object headers in order
	// Complete: the walk read the fragment to its end, so Objects holds
	// every object header it carries. False when the header was cut short,
	// the function code is unknown (its objects are not walked) or an
	// anomaly stopped the walk (too_many_objects, bad_qualifier,
	// bad_range, truncated_object, unknown_object of a size the walk
	// needs): the headers after the last in Objects were not read.
	Complete bool
}

// FIR reports the application control FIR bit.
func (f *Fragment) FIR() bool { return f.Control&AppFIR != 0 }

// FIN reports the application control FIN bit.
func (f *Fragment) FIN() bool { return f.Control&AppFIN != 0 }

// CON reports the application control CON bit.
func (f *Fragment) CON() bool { return f.Control&AppCON != 0 }

// UNS reports the application control UNS bit.
func (f *Fragment) UNS() bool { return f.Control&AppUNS != 0 }

// Seq returns the 4-bit application sequence number.
func (f *Fragment) Seq() uint8 { return f.Control & appSeq }

// HasIIN reports whether the fragment is a response and carries IIN.
func (f *Fragment) HasIIN() bool { return f.Func.IsResponse() }

// Headers returns the decoded object headers. It aliases f.
func (f *Fragment) Headers() []ObjectHeader { return f.Objects[:f.NumObjects] }

// Decode decodes one application fragment, as Reassembler returns it.
// fromMaster is the link DIR bit: it decides whether the objects of a
// READ-like request carry data and flags a function sent the wrong way.
// Decode resets every field first and allocates nothing. It returns nil
// when the fragment is well formed; otherwise the error matching
// f.Anomaly (ErrFragment, ErrBadFunction or ErrObjects) and f holds what
// was parsed before the problem. AnomalyWrongDirection alone is not an
// error: the bytes are well formed, it is the policy's call.
func (f *Fragment) Decode(b []byte, fromMaster bool) error {
	f.Control, f.Func, f.IIN, f.Anomaly, f.NumObjects, f.Complete = 0, 0, 0, AnomalyNone, 0, false
	if len(b) < 2 {
		f.Anomaly = AnomalyTruncatedHeader
		return ErrFragment
	}
	f.Control = b[0]
	f.Func = FunctionCode(b[1])
	p := 2
	if f.Func.IsResponse() {
		if len(b) < 4 {
			f.Anomaly = AnomalyTruncatedHeader
			return ErrFragment
		}
		f.IIN = uint16(b[2])<<8 | uint16(b[3])
		p = 4
	}
	if !f.Func.Known() {
		f.Anomaly = AnomalyUnknownFunction
		return ErrBadFunction
	}
	if a := f.walk(b[p:], fromMaster); a != AnomalyNone {
		f.Anomaly = a
		return ErrObjects
	}
	if f.Func.carriesNoObjects() && p < len(b) {
		f.Anomaly = AnomalyUnexpectedData
		return ErrObjects
	}
	if fromMaster == f.Func.IsResponse() && f.Func != FuncConfirm {
		f.Anomaly = AnomalyWrongDirection
	}
	return nil
}

// walk decodes the object headers in b, skipping object data; it sets
// Complete when it reaches the end of b.
func (f *Fragment) walk(b []byte, fromMaster bool) Anomaly {
	noData := fromMaster && f.Func.carriesNoObjectData()
	// soft holds an anomaly that does not stop the walk: an object the
	// library does not define, named where it carries no data.
	soft := AnomalyNone
	p := 0
	for p < len(b) {
		if f.NumObjects == MaxObjects {
			return AnomalyTooManyObjects
		}
		if len(b)-p < 3 {
			return AnomalyTruncatedObject
		}
		h := &f.Objects[f.NumObjects]
		*h = ObjectHeader{Group: b[p], Variation: b[p+1], Qualifier: b[p+2]}
		f.NumObjects++
		p += 3
		q := h.Qualifier
		prefix := q >> 4 & 0x07
		rc := q & 0x0F
		if q&0x80 != 0 || prefix == 7 {
			return AnomalyBadQualifier
		}
		// Range field.
		var count uint64
		switch rc {
		case RangeStartStop8, RangeStartStop16, RangeStartStop32,
			RangeVirtual8, RangeVirtual16, RangeVirtual32:
			w := 1 << (rc % 3)
			if len(b)-p < 2*w {
				return AnomalyTruncatedObject
			}
			h.Start = uint32(le(b[p:], w))
			h.Stop = uint32(le(b[p+w:], w))
			p += 2 * w
			if h.Start > h.Stop {
				return AnomalyBadRange
			}
			count = uint64(h.Stop) - uint64(h.Start) + 1
			h.Count = uint32(min(count, 1<<32-1))
			if prefix != 0 {
				return AnomalyBadQualifier
			}
		case RangeAll:
			if prefix != 0 {
				return AnomalyBadQualifier
			}
		case RangeCount8, RangeCount16, RangeCount32, RangeFreeFormat:
			w := 1
			if rc == RangeCount16 {
				w = 2
			} else if rc == RangeCount32 {
				w = 4
			}
			if len(b)-p < w {
				return AnomalyTruncatedObject
			}
			h.Count = uint32(le(b[p:], w))
			count = uint64(h.Count)
			p += w
			if rc == RangeFreeFormat && prefix == 0 {
				return AnomalyBadQualifier
			}
		default:
			return AnomalyBadQualifier
		}
		if kind, _ := objectSize(h.Group, h.Variation); kind == kindUnknown && h.Variation != 0 &&
			(rc == RangeAll || (noData && prefix == 0)) {
			if soft == AnomalyNone {
				soft = AnomalyUnknownObject
			}
			continue
		}
		n, a := f.objectData(h, b[p:], prefix, rc, count, noData)
		p += n
		if a != AnomalyNone {
			return a
		}
	}
	f.Complete = true
	return soft
}

// objectData returns the octets of object data (with prefixes) that follow
// header h in b, or an anomaly when they cannot be sized or run past b.
func (f *Fragment) objectData(h *ObjectHeader, b []byte, prefix, rc uint8, count uint64, noData bool) (int, Anomaly) {
	kind, size := objectSize(h.Group, h.Variation)
	if kind == kindNoData {
		return 0, AnomalyNone
	}
	// FREEZE_AT_TIME carries its time and interval object (g50v2).
	if noData && (f.Func == FuncFreezeAtTime || f.Func == FuncFreezeAtTimeNR) && h.Group == 50 {
		noData = false
	}
	// Free format (range code 0xB, clause 4.2.2.7.3.3) and the object size
	// prefixes 4-6: each object is preceded by its size, so the walk needs
	// no library entry. Range code 0xB with an index prefix code (0x1B,
	// 0x2B, 0x3B) is read the same way, the prefix width giving the size
	// field, because such qualifiers are seen with g120 and g70 objects.
	if rc == RangeFreeFormat || prefix >= 4 {
		w := 1 << ((prefix - 1) % 3)
		p := 0
		for i := uint64(0); i < count; i++ {
			if len(b)-p < w {
				return p, AnomalyTruncatedObject
			}
			sz := le(b[p:], w)
			p += w
			if uint64(len(b)-p) < sz {
				return p, AnomalyTruncatedObject
			}
			p += int(sz)
		}
		return p, AnomalyNone
	}
	if kind == kindFreeOnly && !noData {
		return 0, AnomalyBadQualifier
	}
	if prefix == 0 {
		if noData {
			return 0, AnomalyNone
		}
		switch kind {
		case kindFixed:
			need := count * uint64(size)
			if uint64(len(b)) < need {
				return len(b), AnomalyTruncatedObject
			}
			return int(need), AnomalyNone
		case kindPacked:
			need := (count*uint64(size) + 7) / 8
			if uint64(len(b)) < need {
				return len(b), AnomalyTruncatedObject
			}
			return int(need), AnomalyNone
		case kindAttr:
			return attrData(b, count, 0)
		}
		return 0, AnomalyUnknownObject
	}
	// Index prefix (1, 2, 3): index then object, count times. Track the
	// index range for rules.
	w := 1 << (prefix - 1)
	if !noData {
		switch kind {
		case kindPacked:
			return 0, AnomalyBadQualifier
		case kindAttr:
			return attrData(b, count, w)
		case kindUnknown:
			return 0, AnomalyUnknownObject
		}
	}
	each := w
	if !noData {
		each += size
	}
	p := 0
	for i := uint64(0); i < count; i++ {
		if len(b)-p < each {
			return p, AnomalyTruncatedObject
		}
		idx := uint32(le(b[p:], w))
		if i == 0 || idx < h.Start {
			h.Start = idx
		}
		if i == 0 || idx > h.Stop {
			h.Stop = idx
		}
		p += each
	}
	return p, AnomalyNone
}

// attrData walks count device attribute objects (g0, clause A.1): an
// optional index prefix of w octets, then data type, length and value.
func attrData(b []byte, count uint64, w int) (int, Anomaly) {
	p := 0
	for i := uint64(0); i < count; i++ {
		if len(b)-p < w+2 {
			return p, AnomalyTruncatedObject
		}
		n := int(b[p+w+1])
		p += w + 2
		if len(b)-p < n {
			return p, AnomalyTruncatedObject
		}
		p += n
	}
	return p, AnomalyNone
}

// le reads a w-octet (1, 2 or 4) little-endian unsigned integer.
func le(b []byte, w int) uint64 {
	switch w {
	case 1:
		return uint64(b[0])
	case 2:
		return uint64(b[0]) | uint64(b[1])<<8
	}
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24
}
