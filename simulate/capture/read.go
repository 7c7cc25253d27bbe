package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/otgw/otgw/gateway/packet"
)

// Format is a capture file format.
type Format uint8

// Formats.
const (
	FormatUnknown Format = iota
	FormatPcap
	FormatPcapNG
)

// String returns "pcap", "pcapng" or "unknown".
func (f Format) String() string {
	switch f {
	case FormatPcap:
		return "pcap"
	case FormatPcapNG:
		return "pcapng"
	}
	return "unknown"
}

// Limits of the reader. Every length read from a file is compared with them
// as an unsigned 32-bit number before it is converted to int or used to
// size anything, so a crafted length can neither overflow int on 32-bit
// targets nor make the reader allocate more than about MaxFrameLen.
const (
	// MaxFrameLen is the largest captured frame accepted: Wireshark's
	// WTAP_MAX_PACKET_SIZE_STANDARD. A record that claims more is damage.
	MaxFrameLen = 262144
	// MaxBlockLen is the largest pcapng block accepted (Wireshark's
	// MAX_BLOCK_SIZE). Blocks are skipped, never buffered whole, so this
	// bounds only how far one block header can make the reader skip.
	MaxBlockLen = 16 << 20
	// MaxInterfaces bounds the interfaces of one pcapng section.
	MaxInterfaces = 1 << 16
	// maxDamageKept is how many damage reports a Summary keeps in full.
	maxDamageKept = 64
	// bufSize is the read buffer (replay reads several files at once, one
	// buffer each). A block that fits is checked whole (its trailer)
	// before its frame is delivered, and resynchronisation after damage
	// can only land on such a block; larger blocks are read through.
	bufSize = 1 << 16
)

var (
	// ErrFormat reports a file that is neither pcap nor pcapng.
	ErrFormat = errors.New("capture: not a pcap or pcapng file")
	// ErrDamaged is matched by the *DamageError of ReadFrames: the
	// capture was read up to (and, for pcapng, past) damage.
	ErrDamaged = errors.New("capture: damaged capture")
)

// Frame is one captured frame. Data is valid only during the callback.
type Frame struct {
	Index    int // 1-based, as Wireshark numbers frames
	Time     time.Time
	Link     packet.LinkType // per frame: pcapng interfaces may differ
	Data     []byte
	OrigLen  int // length on the wire (Data may be shorter when snapped)
	IfaceIdx int // pcapng interface id within its section; 0 for pcap
	// Offset is where Data starts in the file (in the stream ReadFrom
	// reads): reading len(Data) bytes there gives Data again.
	Offset int64
}

// Damage is one place where a capture could not be read as written.
type Damage struct {
	Offset int64  // byte offset of the damaged record or block
	After  int    // frames read before it (the damage follows frame After)
	Lost   int64  // bytes of the file not read as frames because of it
	Reason string // what is wrong, e.g. "truncated record: 12 of 60 bytes"
}

// String formats the damage as "offset N after frame F: reason (L bytes skipped)".
func (d Damage) String() string {
	return fmt.Sprintf("offset %d after frame %d: %s (%d bytes skipped)", d.Offset, d.After, d.Reason, d.Lost)
}

// Summary says what a read found.
type Summary struct {
	Format  Format
	Frames  int      // frames delivered
	Bytes   int64    // bytes of the file read
	Damaged int      // damage reports, possibly more than len(Damage)
	Damage  []Damage // the first reports, in file order
	Lost    int64    // bytes not read as frames, over all damage
}

// Warning returns "" for an undamaged capture, else one line saying how
// much was lost and where the first damage is.
func (s Summary) Warning() string {
	if s.Damaged == 0 {
		return ""
	}
	places := "1 place"
	if s.Damaged > 1 {
		places = fmt.Sprintf("%d places", s.Damaged)
	}
	return fmt.Sprintf("damaged capture: %d frames read, %d bytes skipped at %s; first at %v",
		s.Frames, s.Lost, places, s.Damage[0])
}

// DamageError is what ReadFrames returns for a capture it read only in
// part; every readable frame was delivered before it is returned.
type DamageError struct {
	Name    string
	Summary Summary
}

func (e *DamageError) Error() string { return "capture: " + e.Name + ": " + e.Summary.Warning() }

// Is reports whether target is ErrDamaged.
func (e *DamageError) Is(target error) bool { return target == ErrDamaged }

// DetectFormat reads the magic number at the start of a file.
func DetectFormat(magic []byte) Format {
	if len(magic) < 4 {
		return FormatUnknown
	}
	switch binary.LittleEndian.Uint32(magic) {
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1, 0xa1b2cd34, 0x34cdb2a1:
		return FormatPcap
	case 0x0a0d0d0a:
		return FormatPcapNG
	}
	return FormatUnknown
}

// Read calls fn for every frame of the capture at path, in file order, and
// says what it read. Damage is not an error: the frames before it (pcap)
// or around it (pcapng, which resynchronises on the next valid block) are
// delivered, and the Summary lists where and how much was skipped, as
// tshark reads up to the damage. Errors are for files that are not
// captures, for I/O failures and for errors returned by fn.
func Read(path string, fn func(*Frame) error) (Summary, error) {
	f, err := os.Open(path)
	if err != nil {
		return Summary{}, err
	}
	defer f.Close()
	return ReadFrom(f, path, fn)
}

// ReadFrom is Read on an open reader; name is used in errors.
func ReadFrom(r io.Reader, name string, fn func(*Frame) error) (Summary, error) {
	rd := &reader{br: bufio.NewReaderSize(r, bufSize), name: name, fn: fn}
	err := rd.run()
	return rd.sum, err
}

// ReadFrames is Read for callers that treat damage as failure: after
// delivering every readable frame it returns a *DamageError (matching
// ErrDamaged) when the capture was damaged.
func ReadFrames(path string, fn func(*Frame) error) error {
	s, err := Read(path, fn)
	return damageErr(path, s, err)
}

// ReadFramesFrom is ReadFrames on an open reader; name is used in errors.
func ReadFramesFrom(r io.Reader, name string, fn func(*Frame) error) error {
	s, err := ReadFrom(r, name, fn)
	return damageErr(name, s, err)
}

func damageErr(name string, s Summary, err error) error {
	if err == nil && s.Damaged > 0 {
		return &DamageError{Name: name, Summary: s}
	}
	return err
}

// reader holds the state of one read. Lengths from the file stay uint32
// until they are checked against the limits above.
type reader struct {
	br   *bufio.Reader
	name string
	fn   func(*Frame) error
	off  int64 // offset of the next unread byte
	sum  Summary
	buf  []byte // frame bytes, grown on demand up to MaxFrameLen
	fr   Frame

	order  binary.ByteOrder // pcapng: byte order of the current section
	ifaces []iface          // pcapng: interfaces of the current section
}

// errStop ends a read after damage that cannot be skipped; run turns it
// into a normal end.
var errStop = errors.New("capture: stop")

func (r *reader) run() error {
	magic, err := r.br.Peek(4)
	if err != nil {
		return fmt.Errorf("capture: %s: %w (file too short: %v)", r.name, ErrFormat, err)
	}
	switch DetectFormat(magic) {
	case FormatPcap:
		r.sum.Format = FormatPcap
		err = r.pcap()
	case FormatPcapNG:
		r.sum.Format = FormatPcapNG
		err = r.pcapng()
	default:
		return fmt.Errorf("capture: %s: %w (magic % x)", r.name, ErrFormat, magic)
	}
	r.sum.Bytes = r.off
	if err == errStop {
		return nil
	}
	return err
}

// full reads len(b) bytes; n is how many it got before EOF.
func (r *reader) full(b []byte) (int, error) {
	n, err := io.ReadFull(r.br, b)
	r.off += int64(n)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return n, io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, fmt.Errorf("capture: %s: offset %d: %w", r.name, r.off, err)
	}
	return n, nil
}

// skip discards n bytes; it returns how many it discarded.
func (r *reader) skip(n int64) (int64, error) {
	var done int64
	for done < n {
		step := min(n-done, 1<<30)
		k, err := r.br.Discard(int(step))
		done += int64(k)
		r.off += int64(k)
		if err == io.EOF {
			return done, io.ErrUnexpectedEOF
		}
		if err != nil {
			return done, fmt.Errorf("capture: %s: offset %d: %w", r.name, r.off, err)
		}
	}
	return done, nil
}

// rest discards the remainder of the file and returns its length.
func (r *reader) rest() int64 {
	n, _ := io.Copy(io.Discard, r.br)
	r.off += n
	return n
}

// frameBuf returns the frame buffer resized to n (n <= MaxFrameLen).
func (r *reader) frameBuf(n int) []byte {
	if cap(r.buf) < n {
		r.buf = make([]byte, n, max(n, min(2*cap(r.buf), MaxFrameLen), 2048))
	}
	return r.buf[:n]
}

func (r *reader) damage(off, lost int64, format string, args ...any) {
	r.sum.Damaged++
	r.sum.Lost += lost
	if len(r.sum.Damage) < maxDamageKept {
		r.sum.Damage = append(r.sum.Damage, Damage{Offset: off, After: r.sum.Frames, Lost: lost, Reason: fmt.Sprintf(format, args...)})
	}
}

// deliver hands one frame to fn.
func (r *reader) deliver(t time.Time, link packet.LinkType, data []byte, orig uint32, iface int, off int64) error {
	r.sum.Frames++
	// Field by field: a composite literal is built on the stack and
	// copied, whose reads of the just written words stall (a tenth of
	// reading a capture).
	f := &r.fr
	f.Index, f.Time, f.Link, f.Data = r.sum.Frames, t, link, data
	f.OrigLen, f.IfaceIdx, f.Offset = clampLen(orig), iface, off
	return r.fn(f)
}

// clampLen converts a 32-bit length to int without overflow on 32-bit
// targets (where int(uint32) of a value >= 2^31 is negative).
func clampLen(n uint32) int {
	if n > 1<<31-1 {
		return 1<<31 - 1
	}
	return int(n)
}

// pcap reads a classic libpcap file: a 24-byte header, then records with a
// 16-byte header (24 for Kuznetzov's modified format). A record cannot be
// skipped without trusting its length, so the read stops at the first
// damaged record, as tshark does.
func (r *reader) pcap() error {
	var hdr [24]byte
	if n, err := r.full(hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return fmt.Errorf("capture: %s: file ends inside the pcap header (%d of 24 bytes): %w", r.name, n, err)
		}
		return err
	}
	var bo binary.ByteOrder = binary.LittleEndian
	nsec, recLen := false, 16
	switch binary.LittleEndian.Uint32(hdr[:4]) {
	case 0xa1b2c3d4:
	case 0xa1b23c4d:
		nsec = true
	case 0xa1b2cd34:
		recLen = 24
	case 0xd4c3b2a1:
		bo = binary.BigEndian
	case 0x4d3cb2a1:
		bo, nsec = binary.BigEndian, true
	case 0x34cdb2a1:
		bo, recLen = binary.BigEndian, 24
	}
	// The link type is the low 16 bits; the upper bits carry FCS
	// information (pcap draft, "LinkType and additional information").
	link := packet.LinkType(bo.Uint32(hdr[20:24]) & 0xffff)
	var rh [24]byte
	for {
		start := r.off
		n, err := r.full(rh[:recLen])
		if err == io.ErrUnexpectedEOF {
			if n > 0 {
				r.damage(start, int64(n), "truncated record header: %d of %d bytes", n, recLen)
			}
			return nil
		}
		if err != nil {
			return err
		}
		caplen, orig := bo.Uint32(rh[8:12]), bo.Uint32(rh[12:16])
		if caplen > MaxFrameLen {
			lost := int64(recLen) + r.rest()
			r.damage(start, lost, "record length %d exceeds the limit %d", caplen, MaxFrameLen)
			return nil
		}
		// A frame that fits the read buffer is delivered from it, not
		// copied (Frame.Data is valid only during the callback).
		inBuf := caplen <= bufSize
		var data []byte
		if inBuf {
			data, err = r.peek(int(caplen))
			n = len(data)
		} else {
			data = r.frameBuf(int(caplen))
			n, err = r.full(data)
		}
		if err != nil {
			if err == io.ErrUnexpectedEOF {
				r.damage(start, int64(recLen+n), "truncated record: %d of %d bytes", n, caplen)
				return nil
			}
			return err
		}
		frac := int64(bo.Uint32(rh[4:8]))
		if !nsec {
			frac *= 1000
		}
		t := time.Unix(int64(bo.Uint32(rh[0:4])), frac).UTC()
		err = r.deliver(t, link, data, orig, 0, start+int64(recLen))
		if inBuf {
			_, _ = r.br.Discard(len(data)) // peeked: in the buffer
		}
		if err != nil {
			return err
		}
	}
}

// peek returns the next n bytes (n <= bufSize) in the read buffer, to be
// discarded by the caller once read; at the end of the file, the bytes
// there were (discarded) and io.ErrUnexpectedEOF. It counts them read.
func (r *reader) peek(n int) ([]byte, error) {
	b, err := r.br.Peek(n)
	r.off += int64(len(b))
	if err == nil {
		return b, nil
	}
	k, _ := r.br.Discard(len(b))
	if err == io.EOF {
		return b[:k], io.ErrUnexpectedEOF
	}
	return b[:k], fmt.Errorf("capture: %s: offset %d: %w", r.name, r.off, err)
}
