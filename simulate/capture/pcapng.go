package capture

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"time"

	"github.com/otgw/otgw/gateway/packet"
)

// pcapng block types (IETF draft-ietf-opsawg-pcapng, section 4 and 11.1).
const (
	blockSHB    = 0x0a0d0d0a // section header
	blockIDB    = 1          // interface description
	blockPB     = 2          // packet (obsolete)
	blockSPB    = 3          // simple packet
	blockNRB    = 4          // name resolution
	blockISB    = 5          // interface statistics
	blockEPB    = 6          // enhanced packet
	blockIRIG   = 7          // IRIG timestamp
	blockARINC  = 8          // ARINC 429
	blockJournl = 9          // systemd journal export
	blockDSB    = 10         // decryption secrets
	blockCustom = 0x00000bad // custom, may be copied
	blockCustNC = 0x40000bad // custom, must not be copied

	bomLE = 0x1a2b3c4d // byte-order magic as read little-endian
	bomBE = 0x4d3c2b1a
)

// minBlockLen returns the smallest total length of a block of type typ:
// 12 bytes of framing plus the block's fixed fields.
func minBlockLen(typ uint32) uint32 {
	switch typ {
	case blockSHB:
		return 28
	case blockIDB:
		return 20
	case blockEPB, blockPB:
		return 32
	case blockSPB:
		return 16
	case blockISB:
		return 24
	}
	return 12
}

func knownBlock(typ uint32) bool {
	switch typ {
	case blockSHB, blockIDB, blockPB, blockSPB, blockNRB, blockISB, blockEPB,
		blockIRIG, blockARINC, blockJournl, blockDSB, blockCustom, blockCustNC:
		return true
	}
	return false
}

// iface is one interface of the current section.
type iface struct {
	link    packet.LinkType
	snaplen uint32
	pow2    bool  // if_tsresol is a power of 2 (else of 10)
	res     uint8 // if_tsresol exponent (default 6: microseconds)
	offset  int64 // if_tsoffset, seconds
}

var pow10 = [20]uint64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
	1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

// time converts a 64-bit pcapng timestamp in the interface's units.
func (f *iface) time(ts uint64) time.Time {
	var sec, nsec uint64
	switch k := uint(f.res); {
	case f.pow2 && k == 0:
		sec = ts
	case f.pow2:
		sec = ts >> k
		hi, lo := bits.Mul64(ts&(1<<k-1), 1e9)
		nsec = hi<<(64-k) | lo>>k
	default:
		sec, nsec = ts/pow10[k], ts%pow10[k]
		if k <= 9 {
			nsec *= pow10[9-k]
		} else {
			nsec /= pow10[k-9]
		}
	}
	return time.Unix(int64(sec)+f.offset, int64(nsec)).UTC()
}

// ngFrame is a packet parsed from a block, delivered after the block has
// been consumed and its trailer checked.
type ngFrame struct {
	ok    bool
	ifid  uint32
	ts    uint64
	off   uint32 // of the frame in the block body
	cap   uint32 // captured length
	data  []byte
	orig  uint32
	ifc   *iface
	spbTS bool // simple packet: no timestamp
}

// pcapng reads blocks in file order. Damage inside a block whose framing is
// sound (a packet longer than its block, an unknown interface) skips that
// block; damaged framing (a bad length, a trailer that does not match)
// makes the reader scan forward, 4 bytes at a time, for the next block
// whose type, length and trailer are consistent, and report the bytes in
// between. A block that the file ends inside is the end.
func (r *reader) pcapng() error {
	for {
		start := r.off
		b, err := r.br.Peek(12)
		if len(b) < 12 {
			if err != nil && err != io.EOF {
				return fmt.Errorf("capture: %s: offset %d: %w", r.name, start, err)
			}
			if len(b) == 0 {
				return nil
			}
			r.damage(start, r.rest(), "truncated block: the file ends %d bytes into a block header", len(b))
			return nil
		}
		typ := binary.LittleEndian.Uint32(b)
		order := r.order
		if typ == blockSHB {
			switch binary.LittleEndian.Uint32(b[8:12]) {
			case bomLE:
				order = binary.LittleEndian
			case bomBE:
				order = binary.BigEndian
			default:
				if start == 0 {
					return fmt.Errorf("capture: %s: %w (pcapng section header with byte-order magic % x)", r.name, ErrFormat, b[8:12])
				}
				r.resync(start, true, "section header with a bad byte-order magic")
				continue
			}
		} else {
			typ = order.Uint32(b)
		}
		blen := order.Uint32(b[4:8])
		if blen < minBlockLen(typ) || blen%4 != 0 || blen > MaxBlockLen {
			if start == 0 {
				return fmt.Errorf("capture: %s: %w (pcapng section header with length %d)", r.name, ErrFormat, blen)
			}
			r.resync(start, true, fmt.Sprintf("bad length %d for a block of type %#x", blen, typ))
			continue
		}
		r.order = order
		if err := r.block(start, typ, blen); err != nil {
			if err == errStop {
				return nil
			}
			return err
		}
	}
}

// block reads one block whose header (type, length) has been checked.
func (r *reader) block(start int64, typ, blen uint32) error {
	n := int(min(blen, bufSize))
	b, err := r.br.Peek(n)
	if len(b) < n {
		if err != nil && err != io.EOF {
			return fmt.Errorf("capture: %s: offset %d: %w", r.name, start, err)
		}
		// Either the file was cut inside this block, or its length is
		// wrong and whole blocks follow: look for one before calling it
		// the end.
		have := len(b)
		r.resync(start, true, fmt.Sprintf("block of type %#x claims %d bytes, the file has %d", typ, blen, have),
			fmt.Sprintf("truncated block: the file ends %d bytes into a %d-byte block of type %#x", have, blen, typ))
		return nil
	}
	big := blen > bufSize
	if !big {
		if tr := r.order.Uint32(b[blen-4:]); tr != blen {
			r.resync(start, true, fmt.Sprintf("block of type %#x: length %d at its end, %d at its start", typ, tr, blen))
			return nil
		}
	}
	body := b[8:]
	if !big {
		body = b[8 : blen-4]
	}
	bodyLen := blen - 12
	var pf ngFrame
	reason := ""
	switch typ {
	case blockSHB:
		if v := r.order.Uint16(body[4:6]); v != 1 {
			reason = fmt.Sprintf("section header: unsupported pcapng version %d", v)
		}
		r.ifaces = r.ifaces[:0]
	case blockIDB:
		reason = r.idb(body)
	case blockEPB, blockPB:
		reason = r.packetBlock(typ, body, bodyLen, &pf)
	case blockSPB:
		reason = r.simplePacket(body, bodyLen, &pf)
	}
	if big {
		// Larger than the read buffer: read the frame into the frame
		// buffer, skip the rest, then check the trailer.
		done := uint32(0)
		if pf.ok {
			if _, err := r.skip(int64(8 + pf.off)); err != nil {
				return r.truncated(err, start, typ, blen)
			}
			pf.data = r.frameBuf(int(pf.cap))
			if _, err := r.full(pf.data); err != nil {
				return r.truncated(err, start, typ, blen)
			}
			done = 8 + pf.off + pf.cap
		}
		if _, err := r.skip(int64(blen - 4 - done)); err != nil {
			return r.truncated(err, start, typ, blen)
		}
		var tr [4]byte
		if _, err := r.full(tr[:]); err != nil {
			return r.truncated(err, start, typ, blen)
		}
		if got := r.order.Uint32(tr[:]); got != blen {
			r.resync(start, false, fmt.Sprintf("block of type %#x: length %d at its end, %d at its start", typ, got, blen))
			return nil
		}
	} else {
		if pf.ok {
			pf.data = body[pf.off : pf.off+pf.cap]
		}
		if _, err := r.skip(int64(blen)); err != nil {
			return err // the bytes were peeked: only an I/O error
		}
	}
	if reason != "" {
		r.damage(start, int64(blen), "%s", reason)
		return nil
	}
	if !pf.ok {
		return nil
	}
	var t time.Time
	if !pf.spbTS {
		t = pf.ifc.time(pf.ts)
	}
	return r.deliver(t, pf.ifc.link, pf.data, pf.orig, int(pf.ifid), start+8+int64(pf.off))
}

func (r *reader) truncated(err error, start int64, typ, blen uint32) error {
	if err != io.ErrUnexpectedEOF {
		return err
	}
	r.damage(start, r.off-start, "truncated block: the file ends %d bytes into a %d-byte block of type %#x", r.off-start, blen, typ)
	return errStop
}

// idb records an interface; body holds at least the 8 fixed bytes.
func (r *reader) idb(body []byte) string {
	if len(r.ifaces) >= MaxInterfaces {
		return fmt.Sprintf("more than %d interfaces in one section", MaxInterfaces)
	}
	f := iface{link: packet.LinkType(r.order.Uint16(body[0:2])), snaplen: r.order.Uint32(body[4:8]), res: 6}
	reason := ""
	opts := body[8:]
	for len(opts) >= 4 {
		code, l := r.order.Uint16(opts[0:2]), int(r.order.Uint16(opts[2:4]))
		if code == 0 || l > len(opts)-4 {
			break
		}
		v := opts[4 : 4+l]
		switch {
		case code == 9 && l == 1: // if_tsresol
			k := v[0] & 0x7f
			if pow2 := v[0]&0x80 != 0; (pow2 && k <= 63) || (!pow2 && k <= 19) {
				f.pow2, f.res = pow2, k
			} else {
				reason = fmt.Sprintf("interface %d: unsupported if_tsresol %#x", len(r.ifaces), v[0])
			}
		case code == 14 && l == 8: // if_tsoffset
			f.offset = int64(r.order.Uint64(v))
		}
		adv := 4 + (l+3)&^3
		if adv > len(opts) {
			break
		}
		opts = opts[adv:]
	}
	// The interface is kept even with a bad option so that the ids of
	// the following interfaces stay right.
	r.ifaces = append(r.ifaces, f)
	if reason != "" {
		r.damage(r.off, 0, "%s (timestamps read as microseconds)", reason)
	}
	return ""
}

// packetBlock parses an enhanced packet block (or the obsolete packet
// block, whose interface id is 16 bits followed by a drop count).
func (r *reader) packetBlock(typ uint32, body []byte, bodyLen uint32, pf *ngFrame) string {
	ifid := r.order.Uint32(body[0:4])
	if typ == blockPB {
		ifid = uint32(r.order.Uint16(body[0:2]))
	}
	caplen := r.order.Uint32(body[12:16])
	if caplen > bodyLen-20 {
		return fmt.Sprintf("packet of %d bytes in a block with room for %d", caplen, bodyLen-20)
	}
	if caplen > MaxFrameLen {
		return fmt.Sprintf("packet length %d exceeds the limit %d", caplen, MaxFrameLen)
	}
	if ifid >= uint32(len(r.ifaces)) {
		return fmt.Sprintf("packet on interface %d, but the section describes %d", ifid, len(r.ifaces))
	}
	pf.ok, pf.ifid, pf.ifc = true, ifid, &r.ifaces[ifid]
	pf.ts = uint64(r.order.Uint32(body[4:8]))<<32 | uint64(r.order.Uint32(body[8:12]))
	pf.orig = r.order.Uint32(body[16:20])
	pf.off, pf.cap = 20, caplen
	return ""
}

// simplePacket parses a simple packet block: interface 0, no timestamp,
// captured length min(original length, snap length, room in the block).
func (r *reader) simplePacket(body []byte, bodyLen uint32, pf *ngFrame) string {
	if len(r.ifaces) == 0 {
		return "simple packet block before any interface description"
	}
	orig := r.order.Uint32(body[0:4])
	caplen := min(orig, bodyLen-4)
	if s := r.ifaces[0].snaplen; s != 0 {
		caplen = min(caplen, s)
	}
	if caplen > MaxFrameLen {
		return fmt.Sprintf("packet length %d exceeds the limit %d", caplen, MaxFrameLen)
	}
	pf.ok, pf.ifc, pf.spbTS, pf.orig = true, &r.ifaces[0], true, orig
	pf.off, pf.cap = 4, caplen
	return ""
}

// resync reports damage at start and scans forward for the next block
// that looks whole (known type, sane length, matching trailer, within
// the read buffer). skipFirst moves past the damaged block's first word
// (the reader is still at start); otherwise the scan begins where the
// reader is. The damage says reason and where reading resumed, or
// notFound (default: reason) when no whole block follows.
func (r *reader) resync(start int64, skipFirst bool, reason string, notFound ...string) {
	none := reason + "; no valid block after it"
	if len(notFound) > 0 {
		none = notFound[0]
	}
	if skipFirst {
		if _, err := r.skip(4); err != nil {
			r.damage(start, r.off-start, "%s", none)
			return
		}
	}
	for {
		b, _ := r.br.Peek(12)
		if len(b) < 12 {
			r.rest()
			r.damage(start, r.off-start, "%s", none)
			return
		}
		if r.candidate(b) {
			r.damage(start, r.off-start, "%s; reading again at offset %d", reason, r.off)
			return
		}
		if _, err := r.skip(4); err != nil {
			r.damage(start, r.off-start, "%s", none)
			return
		}
	}
}

// candidate reports whether b (12 bytes at the reader) starts a whole block.
func (r *reader) candidate(b []byte) bool {
	order := r.order
	typ := binary.LittleEndian.Uint32(b)
	if typ == blockSHB {
		switch binary.LittleEndian.Uint32(b[8:12]) {
		case bomLE:
			order = binary.LittleEndian
		case bomBE:
			order = binary.BigEndian
		default:
			return false
		}
	} else {
		typ = order.Uint32(b)
	}
	blen := order.Uint32(b[4:8])
	if !knownBlock(typ) || blen < minBlockLen(typ) || blen%4 != 0 || blen > bufSize {
		return false
	}
	whole, _ := r.br.Peek(int(blen))
	return len(whole) == int(blen) && order.Uint32(whole[blen-4:]) == blen
}
