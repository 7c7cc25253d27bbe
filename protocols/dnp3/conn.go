package dnp3

import "github.com/otgw/otgw/protocols"

// Object names one object header's group and variation in offline output.
type Object struct {
	Group     int `json:"group"`
	Variation int `json:"variation"`
}

// maxAssociations bounds the transport reassemblers a Conn keeps: one per
// (source, destination) link address pair seen, oldest replaced first.
const maxAssociations = 16

type association struct {
	src, dst uint16
	stream   int // index of the Feed direction the frames arrived on
	used     bool
	r        Reassembler
}

type stream struct {
	buf      []byte // partial frame carried to the next Feed (< MaxFrameLen)
	resyncOK bool   // after a gap, garbage before the next frame is expected
	badHdr   bool   // the last frame header was corrupt: its tail is not new garbage
}

// Conn follows one DNP3 connection or UDP flow for offline tools and
// implements protocols.Conn. It emits one Record per link frame (as tshark
// reports DNP3): Dir from the link DIR bit, Fields link_src, link_dst,
// link_fc and, when the frame completes an application fragment, fc,
// objects, iin (responses) and seq. Bytes that are not a frame (garbage, a
// corrupt header) give a Record with only Anomaly set. Conn allocates per
// Record; the gateway uses Framer, LinkFrame, Reassembler and Fragment
// directly. Not safe for concurrent use.
type Conn struct {
	// Inspect, when set, is called for every link frame before its Record
	// is emitted, with the decoded frame and, when the frame completed an
	// application fragment, the fragment (else nil). Both alias the Conn.
	Inspect func(frame *LinkFrame, frag *Fragment)

	datagram bool
	framer   Framer
	streams  [3]stream
	assoc    [maxAssociations]association
	next     int // next association slot to replace
	frame    LinkFrame
	frag     Fragment
}

var _ protocols.Conn = (*Conn)(nil)

// NewConn returns a Conn for a byte stream (TCP): a frame may span Feeds.
func NewConn() *Conn { return &Conn{} }

// NewDatagramConn returns a Conn for datagrams (UDP): every Feed holds
// whole frames, and bytes left over at the end of one are reported as a
// truncated frame rather than joined with the next datagram.
func NewDatagramConn() *Conn { return &Conn{datagram: true} }

// Feed implements protocols.Conn.
func (c *Conn) Feed(dir protocols.Dir, b []byte, gap bool, emit func(protocols.Record)) {
	si := int(dir)
	if si < 0 || si >= len(c.streams) {
		si = 0
	}
	s := &c.streams[si]
	if gap {
		s.buf = s.buf[:0]
		s.resyncOK = true
		s.badHdr = false
		for i := range c.assoc {
			if c.assoc[i].used && c.assoc[i].stream == si {
				c.assoc[i].r.Reset()
			}
		}
	}
	data := b
	if len(s.buf) > 0 {
		s.buf = append(s.buf, b...)
		data = s.buf
	}
	for len(data) > 0 {
		n, _, err := c.framer.Next(data)
		if n == 0 {
			break
		}
		switch err {
		case nil:
			s.resyncOK, s.badHdr = false, false
			c.onFrame(si, data[:n], emit)
		case ErrBadStart:
			if !s.resyncOK && !s.badHdr {
				emit(protocols.Record{Dir: dir, Anomaly: AnomalyBadStart.String()})
			}
		case ErrLinkCRC:
			s.badHdr = true
			emit(protocols.Record{Dir: dir, Anomaly: AnomalyLinkCRC.String()})
		default:
			s.badHdr = true
			emit(protocols.Record{Dir: dir, Anomaly: AnomalyBadLength.String()})
		}
		data = data[n:]
	}
	if c.datagram {
		if len(data) > 0 {
			emit(protocols.Record{Dir: dir, Anomaly: AnomalyBadLength.String()})
		}
		s.buf = s.buf[:0]
		return
	}
	// Keep the partial frame; copy first because data may alias s.buf.
	if len(s.buf) > 0 {
		s.buf = s.buf[:copy(s.buf, data)]
	} else {
		s.buf = append(s.buf, data...)
	}
}

// onFrame decodes one delimited frame and emits its Record.
func (c *Conn) onFrame(si int, b []byte, emit func(protocols.Record)) {
	f := &c.frame
	err := f.Decode(b)
	rec := protocols.Record{Dir: protocols.Response}
	if f.FromMaster() {
		rec.Dir = protocols.Request
	}
	anomaly := f.Anomaly
	note := func(a Anomaly) {
		if a != AnomalyNone && (anomaly == AnomalyNone || anomaly == AnomalyBroadcast) {
			anomaly = a
		}
	}
	if err != nil && err != ErrDataCRC {
		// Framer.Next validated the header, so only ErrDataCRC is expected.
		emit(protocols.Record{Dir: rec.Dir, Anomaly: anomaly.String()})
		return
	}
	rec.Fields = append(rec.Fields,
		protocols.KV{Key: "link_src", Value: f.Src},
		protocols.KV{Key: "link_dst", Value: f.Dst},
		protocols.KV{Key: "link_fc", Value: f.Func})
	var frag *Fragment
	ud := f.UserData()
	switch {
	case err != nil:
		// The segment is lost; the transport sequence check catches the rest.
	case f.Func.carriesUserData():
		r := c.reassembler(si, f.Src, f.Dst)
		data, a := r.Add(ud)
		note(a)
		if data != nil {
			frag = &c.frag
			frag.Decode(data, f.FromMaster())
			note(frag.Anomaly)
			objs := make([]Object, frag.NumObjects)
			for i, h := range frag.Headers() {
				objs[i] = Object{Group: int(h.Group), Variation: int(h.Variation)}
			}
			rec.Fields = append(rec.Fields,
				protocols.KV{Key: "fc", Value: frag.Func},
				protocols.KV{Key: "objects", Value: objs})
			if frag.HasIIN() {
				rec.Fields = append(rec.Fields, protocols.KV{Key: "iin", Value: frag.IIN})
			}
			rec.Fields = append(rec.Fields, protocols.KV{Key: "seq", Value: frag.Seq()})
		}
	case len(ud) > 0:
		note(AnomalyUnexpectedData)
	}
	if anomaly != AnomalyNone {
		rec.Anomaly = anomaly.String()
	}
	if c.Inspect != nil {
		c.Inspect(f, frag)
	}
	emit(rec)
}

// reassembler returns the reassembler of the association src→dst.
func (c *Conn) reassembler(si int, src, dst uint16) *Reassembler {
	for i := range c.assoc {
		a := &c.assoc[i]
		if a.used && a.src == src && a.dst == dst {
			a.stream = si
			return &a.r
		}
	}
	a := &c.assoc[c.next]
	c.next = (c.next + 1) % maxAssociations
	a.src, a.dst, a.stream, a.used = src, dst, si, true
	a.r.Reset()
	return &a.r
}
