package forensic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// pcapng block types and option codes (draft-ietf-opsawg-pcapng sections
// 3.5, 4.1-4.3).
const (
	blockSHB = 0x0a0d0d0a
	blockIDB = 1
	blockEPB = 6
	byteBOM  = 0x1a2b3c4d

	optEnd      = 0
	optComment  = 1
	shbUserAppl = 4
	ifName      = 2
	ifTsresol   = 9
	epbFlags    = 2

	// LinkEthernet is LINKTYPE_ETHERNET.
	LinkEthernet = 1
)

// EPB flags (section 4.3.1): the direction in bits 0-1.
const (
	FlagInbound  uint32 = 1
	FlagOutbound uint32 = 2
)

var le = binary.LittleEndian

// Interface describes one pcapng interface (an IDB).
type Interface struct {
	Name     string // if_name, e.g. "north (eth0)"
	LinkType uint16 // LINKTYPE_ value; LinkEthernet for the gateway's ports
	SnapLen  uint32 // 0: no limit
}

// Writer writes one pcapng section (little-endian, nanosecond timestamps)
// to an io.Writer. Each block is built in a buffer the Writer reuses and
// written with one Write call, so a reader of a growing file sees whole
// blocks; WritePacket allocates nothing once the buffer has grown to the
// largest block. A Writer is not safe for concurrent use.
type Writer struct {
	w      io.Writer
	buf    []byte
	ifaces int
	n      int64 // bytes written
}

// NewWriter writes the section header (with shb_userappl app) and one
// interface description block per interface, all with nanosecond
// resolution (if_tsresol 9).
func NewWriter(w io.Writer, app string, ifaces []Interface) (*Writer, error) {
	pw := &Writer{w: w, buf: make([]byte, 0, 2048), ifaces: len(ifaces)}
	b := pw.begin(blockSHB)
	b = le.AppendUint32(b, byteBOM)
	b = le.AppendUint16(b, 1) // major
	b = le.AppendUint16(b, 0) // minor
	b = le.AppendUint64(b, ^uint64(0))
	if app != "" {
		b = appendOpt(b, shbUserAppl, app)
	}
	b = appendEnd(b)
	if err := pw.finish(b); err != nil {
		return nil, err
	}
	for _, ifc := range ifaces {
		b := pw.begin(blockIDB)
		b = le.AppendUint16(b, ifc.LinkType)
		b = le.AppendUint16(b, 0)
		b = le.AppendUint32(b, ifc.SnapLen)
		if ifc.Name != "" {
			b = appendOpt(b, ifName, ifc.Name)
		}
		b = le.AppendUint16(b, ifTsresol)
		b = le.AppendUint16(b, 1)
		b = append(b, 9, 0, 0, 0)
		b = appendEnd(b)
		if err := pw.finish(b); err != nil {
			return nil, err
		}
	}
	return pw, nil
}

// Size returns the bytes written so far.
func (pw *Writer) Size() int64 { return pw.n }

// PacketSize returns the bytes an Enhanced Packet Block of caplen captured
// bytes and this comment takes.
func PacketSize(caplen int, comment string) int {
	n := 12 + 20 + pad4(caplen) + 8 + 4 // framing, fixed fields, data, flags option, end
	if comment != "" {
		n += 4 + pad4(len(comment))
	}
	return n
}

// ErrInterface is returned by WritePacket for an interface the section
// does not describe.
var ErrInterface = errors.New("forensic: packet on an undescribed interface")

// WritePacket writes one Enhanced Packet Block: data as captured, origLen
// the frame's length on the wire, flags the epb_flags word (FlagInbound),
// comment an opt_comment ("" for none).
func (pw *Writer) WritePacket(iface int, t time.Time, data []byte, origLen int, flags uint32, comment string) error {
	if iface < 0 || iface >= pw.ifaces {
		return ErrInterface
	}
	ts := uint64(t.UnixNano())
	b := pw.begin(blockEPB)
	b = le.AppendUint32(b, uint32(iface))
	b = le.AppendUint32(b, uint32(ts>>32))
	b = le.AppendUint32(b, uint32(ts))
	b = le.AppendUint32(b, uint32(len(data)))
	b = le.AppendUint32(b, uint32(max(origLen, len(data))))
	b = append(b, data...)
	b = appendPad(b, len(data))
	if comment != "" {
		b = appendOpt(b, optComment, comment)
	}
	b = le.AppendUint16(b, epbFlags)
	b = le.AppendUint16(b, 4)
	b = le.AppendUint32(b, flags)
	b = appendEnd(b)
	return pw.finish(b)
}

// begin starts a block in the reused buffer: type and a length to patch.
func (pw *Writer) begin(typ uint32) []byte {
	b := le.AppendUint32(pw.buf[:0], typ)
	return le.AppendUint32(b, 0)
}

// finish patches the block's length at both ends and writes it.
func (pw *Writer) finish(b []byte) error {
	n := uint32(len(b) + 4)
	le.PutUint32(b[4:8], n)
	b = le.AppendUint32(b, n)
	pw.buf = b
	k, err := pw.w.Write(b)
	pw.n += int64(k)
	if err == nil && k != len(b) {
		err = io.ErrShortWrite
	}
	return err
}

func pad4(n int) int { return (n + 3) &^ 3 }

func appendPad(b []byte, n int) []byte {
	for i := n; i < pad4(n); i++ {
		b = append(b, 0)
	}
	return b
}

// appendOpt appends a string option; values longer than an option can
// hold (65535 bytes) are cut.
func appendOpt(b []byte, code uint16, v string) []byte {
	if len(v) > 0xffff {
		v = v[:0xffff]
	}
	b = le.AppendUint16(b, code)
	b = le.AppendUint16(b, uint16(len(v)))
	b = append(b, v...)
	return appendPad(b, len(v))
}

func appendEnd(b []byte) []byte { return le.AppendUint32(b, 0) }

// Packet is one Enhanced Packet Block as Reader returns it.
type Packet struct {
	Index   int // 1-based in the file, as Wireshark numbers frames
	Iface   int
	Time    time.Time
	Data    []byte
	OrigLen int
	Flags   uint32
	Comment string // the first opt_comment, "" when none
}

// MaxBlock bounds one block Reader accepts.
const MaxBlock = 1 << 20

// Read parses a pcapng stream of one or more sections (either byte order)
// and returns its Enhanced Packet Blocks, the names of its interfaces and
// an error naming the byte offset of the first malformed block. Blocks of
// other types are skipped.
func Read(r io.Reader) ([]Packet, []Interface, error) {
	var (
		pkts   []Packet
		ifaces []Interface
		res    []uint8          // per interface of the current section: if_tsresol
		order  binary.ByteOrder = le
		off    int64
		hdr    [12]byte
	)
	for {
		if _, err := io.ReadFull(r, hdr[:8]); err != nil {
			if err == io.EOF {
				return pkts, ifaces, nil
			}
			return pkts, ifaces, fmt.Errorf("forensic: offset %d: truncated block header", off)
		}
		typ := le.Uint32(hdr[0:4])
		if typ == blockSHB {
			if _, err := io.ReadFull(r, hdr[8:12]); err != nil {
				return pkts, ifaces, fmt.Errorf("forensic: offset %d: truncated section header", off)
			}
			switch le.Uint32(hdr[8:12]) {
			case byteBOM:
				order = binary.LittleEndian
			case 0x4d3c2b1a:
				order = binary.BigEndian
			default:
				return pkts, ifaces, fmt.Errorf("forensic: offset %d: bad byte-order magic %x", off, hdr[8:12])
			}
			res = res[:0]
		} else if off == 0 {
			return pkts, ifaces, fmt.Errorf("forensic: offset 0: not pcapng (block type %#x)", typ)
		}
		blen := order.Uint32(hdr[4:8])
		minLen := uint32(12)
		if typ == blockSHB {
			minLen = 28
		}
		if blen < minLen || blen%4 != 0 || blen > MaxBlock {
			return pkts, ifaces, fmt.Errorf("forensic: offset %d: bad block length %d", off, blen)
		}
		body := make([]byte, blen-8)
		got := 0
		if typ == blockSHB {
			got = copy(body, hdr[8:12])
		}
		if _, err := io.ReadFull(r, body[got:]); err != nil {
			return pkts, ifaces, fmt.Errorf("forensic: offset %d: truncated block of %d bytes", off, blen)
		}
		if order.Uint32(body[len(body)-4:]) != blen {
			return pkts, ifaces, fmt.Errorf("forensic: offset %d: trailing length differs from %d", off, blen)
		}
		body = body[:len(body)-4]
		switch typ {
		case blockIDB:
			if len(body) < 8 {
				return pkts, ifaces, fmt.Errorf("forensic: offset %d: short interface block", off)
			}
			ifc := Interface{LinkType: order.Uint16(body[0:2]), SnapLen: order.Uint32(body[4:8])}
			tsres := uint8(6)
			eachOpt(order, body[8:], func(code uint16, v []byte) {
				switch {
				case code == ifName:
					ifc.Name = string(v)
				case code == ifTsresol && len(v) == 1:
					tsres = v[0]
				}
			})
			ifaces = append(ifaces, ifc)
			res = append(res, tsres)
		case blockEPB:
			if len(body) < 20 {
				return pkts, ifaces, fmt.Errorf("forensic: offset %d: short packet block", off)
			}
			id := order.Uint32(body[0:4])
			if int(id) >= len(res) {
				return pkts, ifaces, fmt.Errorf("forensic: offset %d: packet on undescribed interface %d", off, id)
			}
			caplen := order.Uint32(body[12:16])
			if int(caplen) > len(body)-20 {
				return pkts, ifaces, fmt.Errorf("forensic: offset %d: %d captured bytes in a %d-byte block", off, caplen, blen)
			}
			p := Packet{Index: len(pkts) + 1, Iface: int(id), OrigLen: int(order.Uint32(body[16:20])),
				Data: body[20 : 20+caplen], Time: tsTime(uint64(order.Uint32(body[4:8]))<<32|uint64(order.Uint32(body[8:12])), res[id])}
			opts := body[min(len(body), 20+pad4(int(caplen))):]
			eachOpt(order, opts, func(code uint16, v []byte) {
				switch {
				case code == optComment && p.Comment == "":
					p.Comment = string(v)
				case code == epbFlags && len(v) == 4:
					p.Flags = order.Uint32(v)
				}
			})
			pkts = append(pkts, p)
		}
		off += int64(blen)
	}
}

// eachOpt calls fn for each option up to opt_endofopt or the end of b.
func eachOpt(order binary.ByteOrder, b []byte, fn func(code uint16, v []byte)) {
	for len(b) >= 4 {
		code, l := order.Uint16(b[0:2]), int(order.Uint16(b[2:4]))
		if code == optEnd || 4+l > len(b) {
			return
		}
		fn(code, b[4:4+l])
		b = b[min(len(b), 4+pad4(l)):]
	}
}

// tsTime converts a timestamp in units of if_tsresol (section 4.2: the
// high bit selects a power of two, else of ten) to a time.
func tsTime(ts uint64, res uint8) time.Time {
	if res&0x80 != 0 {
		k := res & 0x7f
		if k >= 64 {
			return time.Unix(0, 0)
		}
		sec := ts >> k
		frac := ts & (1<<k - 1)
		return time.Unix(int64(sec), int64(float64(frac)/float64(uint64(1)<<k)*1e9))
	}
	if res > 19 {
		return time.Unix(0, 0)
	}
	div := uint64(1)
	for range res {
		div *= 10
	}
	sec, frac := ts/div, ts%div
	ns := frac
	switch {
	case res < 9:
		for range 9 - res {
			ns *= 10
		}
	case res > 9:
		for range res - 9 {
			ns /= 10
		}
	}
	return time.Unix(int64(sec), int64(ns))
}
