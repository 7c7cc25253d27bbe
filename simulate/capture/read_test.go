package capture_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/simulate/capture"
)

// ---- crafting captures byte by byte ----

var le = binary.LittleEndian

// pcapFile builds a classic pcap: header fields as given, then records.
type pcapFile struct {
	bytes.Buffer
	bo binary.ByteOrder
}

func newPcap(magic, snaplen, link uint32) *pcapFile {
	p := &pcapFile{bo: le}
	var h [24]byte
	le.PutUint32(h[0:], magic)
	p.bo.PutUint16(h[4:], 2)
	p.bo.PutUint16(h[6:], 4)
	p.bo.PutUint32(h[16:], snaplen)
	p.bo.PutUint32(h[20:], link)
	p.Write(h[:])
	return p
}

// record writes a record header claiming caplen and orig, then data.
func (p *pcapFile) record(sec, frac, caplen, orig uint32, data []byte) *pcapFile {
	var h [16]byte
	p.bo.PutUint32(h[0:], sec)
	p.bo.PutUint32(h[4:], frac)
	p.bo.PutUint32(h[8:], caplen)
	p.bo.PutUint32(h[12:], orig)
	p.Write(h[:])
	p.Write(data)
	return p
}

func (p *pcapFile) frame(sec uint32, data []byte) *pcapFile {
	return p.record(sec, 0, uint32(len(data)), uint32(len(data)), data)
}

// ngFile builds a little-endian pcapng; ends records where each block ends.
type ngFile struct {
	bytes.Buffer
	ends []int
}

func pad4(b []byte) []byte { return append(b, make([]byte, (4-len(b)%4)%4)...) }

// block writes type, total length, body (padded), total length again.
func (n *ngFile) block(typ uint32, body []byte) *ngFile {
	body = pad4(body)
	l := uint32(12 + len(body))
	return n.raw(typ, l, body, l)
}

// raw writes a block with explicit (possibly wrong) lengths.
func (n *ngFile) raw(typ, lead uint32, body []byte, trail uint32) *ngFile {
	body = pad4(body)
	n.Write(le.AppendUint32(le.AppendUint32(nil, typ), lead))
	n.Write(body)
	n.Write(le.AppendUint32(nil, trail))
	n.ends = append(n.ends, n.Len())
	return n
}

func newNG() *ngFile {
	n := &ngFile{}
	body := le.AppendUint32(nil, 0x1a2b3c4d)
	body = le.AppendUint16(body, 1)
	body = le.AppendUint16(body, 0)
	body = le.AppendUint64(body, ^uint64(0))
	return n.block(0x0a0d0d0a, body)
}

// idb adds an interface; opts are raw option bytes (code, len, value...).
func (n *ngFile) idb(link uint16, snaplen uint32, opts ...byte) *ngFile {
	body := le.AppendUint16(nil, link)
	body = le.AppendUint16(body, 0)
	body = le.AppendUint32(body, snaplen)
	body = append(body, opts...)
	return n.block(1, body)
}

func epbBody(ifid uint32, ts uint64, caplen, orig uint32, data []byte) []byte {
	body := le.AppendUint32(nil, ifid)
	body = le.AppendUint32(body, uint32(ts>>32))
	body = le.AppendUint32(body, uint32(ts))
	body = le.AppendUint32(body, caplen)
	body = le.AppendUint32(body, orig)
	return append(body, data...)
}

func (n *ngFile) epb(ifid uint32, ts uint64, data []byte) *ngFile {
	return n.block(6, epbBody(ifid, ts, uint32(len(data)), uint32(len(data)), data))
}

// ---- frames of every link type the gateway decodes ----

func ethFrame(port uint16) []byte {
	c := capture.Endpoint{MAC: capture.MAC(1), Addr: cli.Addr}
	s := capture.Endpoint{MAC: capture.MAC(2), Addr: srv.Addr}
	c.Addr = netip.AddrPortFrom(c.Addr.Addr(), port)
	return capture.NewTCPFlow(c, s).Send(true, []byte("payload"))
}

// linkFrames returns one frame per link type, each carrying an IPv4/TCP
// segment from cli's address with source port 40000+link.
func linkFrames() map[packet.LinkType][]byte {
	ip := func(lt packet.LinkType) []byte { return ethFrame(40000 + uint16(lt))[14:] }
	sll := append([]byte{0, 0, 0, 1, 0, 6, 2, 0, 0x5e, 0, 0, 1, 0, 0, 0x08, 0x00}, ip(packet.LinkSLL)...)
	sll2 := append([]byte{0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0x5e, 0, 0, 1, 0, 0}, ip(packet.LinkSLL2)...)
	return map[packet.LinkType][]byte{
		packet.LinkEthernet: ethFrame(40000 + uint16(packet.LinkEthernet)),
		packet.LinkRaw:      ip(packet.LinkRaw),
		packet.LinkSLL:      sll,
		packet.LinkSLL2:     sll2,
		packet.LinkNull:     append([]byte{2, 0, 0, 0}, ip(packet.LinkNull)...),
		packet.LinkLoop:     append([]byte{0, 0, 0, 2}, ip(packet.LinkLoop)...),
	}
}

type readFrame struct {
	link packet.LinkType
	data string
	orig int
	t    time.Time
	ifc  int
}

func readAll(t *testing.T, b []byte) ([]readFrame, capture.Summary, error) {
	t.Helper()
	var out []readFrame
	s, err := capture.ReadFrom(bytes.NewReader(b), "crafted", func(f *capture.Frame) error {
		if f.Index != len(out)+1 {
			t.Errorf("frame index %d, want %d", f.Index, len(out)+1)
		}
		// Frame.Offset: the frame's bytes are there in the file.
		if f.Offset < 0 || f.Offset+int64(len(f.Data)) > int64(len(b)) || !bytes.Equal(b[f.Offset:f.Offset+int64(len(f.Data))], f.Data) {
			t.Errorf("frame %d: offset %d does not hold its %d bytes", f.Index, f.Offset, len(f.Data))
		}
		out = append(out, readFrame{f.Link, string(f.Data), f.OrigLen, f.Time, f.IfaceIdx})
		return nil
	})
	return out, s, err
}

// TestPcapngMixedLinkTypes: one section with an interface per link type,
// frames interleaved: every frame is read with its own interface's link
// type and decodes (pcapgo's default options skip all interfaces whose
// link type differs from the first one's).
func TestPcapngMixedLinkTypes(t *testing.T) {
	frames := linkFrames()
	order := []packet.LinkType{packet.LinkEthernet, packet.LinkRaw, packet.LinkSLL, packet.LinkSLL2, packet.LinkNull, packet.LinkLoop}
	n := newNG()
	for i, lt := range order {
		if i == 2 {
			// Nanosecond timestamps on this interface (if_tsresol 9).
			n.idb(uint16(lt), 262144, 9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0)
		} else {
			n.idb(uint16(lt), 262144)
		}
	}
	for round := range 2 {
		for i := len(order) - 1; i >= 0; i-- {
			ts := uint64(1_700_000_000+round) * 1_000_000
			if i == 2 {
				ts *= 1000
			}
			n.epb(uint32(i), ts+7, frames[order[i]])
		}
	}
	got, s, err := readAll(t, n.Bytes())
	if err != nil || s.Damaged != 0 {
		t.Fatalf("read: %v, %+v", err, s)
	}
	if len(got) != 2*len(order) {
		t.Fatalf("got %d frames, want %d", len(got), 2*len(order))
	}
	var p packet.Packet
	for k, g := range got {
		i := len(order) - 1 - k%len(order)
		lt := order[i]
		if g.link != lt || g.ifc != i || g.data != string(frames[lt]) {
			t.Errorf("frame %d: link %d iface %d, want link %d iface %d and the frame's bytes", k+1, g.link, g.ifc, lt, i)
			continue
		}
		if err := p.Decode([]byte(g.data), g.link); err != nil || p.SrcPort != 40000+uint16(lt) || p.Src != cli.Addr.Addr() {
			t.Errorf("frame %d (link %d): decode %v, src %v:%d", k+1, lt, err, p.Src, p.SrcPort)
		}
		want := time.Unix(int64(1_700_000_000+k/len(order)), 7000).UTC()
		if i == 2 {
			want = want.Add(-7000 + 7)
		}
		if !g.t.Equal(want) {
			t.Errorf("frame %d: time %v, want %v", k+1, g.t, want)
		}
	}
}

// TestPcapVariants: byte orders, nanosecond and modified pcap headers.
func TestPcapVariants(t *testing.T) {
	data := ethFrame(40001)
	for _, tc := range []struct {
		name  string
		magic uint32
		bo    binary.ByteOrder
		frac  uint32
		want  time.Duration
	}{
		{"little endian usec", 0xa1b2c3d4, le, 5, 5 * time.Microsecond},
		{"big endian usec", 0xd4c3b2a1, binary.BigEndian, 5, 5 * time.Microsecond},
		{"little endian nsec", 0xa1b23c4d, le, 5, 5},
		{"big endian nsec", 0x4d3cb2a1, binary.BigEndian, 5, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &pcapFile{bo: tc.bo}
			var h [24]byte
			le.PutUint32(h[0:], tc.magic)
			tc.bo.PutUint32(h[16:], 65535)
			tc.bo.PutUint32(h[20:], 1|0x10000000) // FCS bits above the link type
			p.Write(h[:])
			p.record(100, tc.frac, uint32(len(data)), 1500, data)
			got, s, err := readAll(t, p.Bytes())
			if err != nil || s.Damaged != 0 || len(got) != 1 {
				t.Fatalf("got %d frames, %v, %+v", len(got), err, s)
			}
			g := got[0]
			if g.link != packet.LinkEthernet || g.data != string(data) || g.orig != 1500 || !g.t.Equal(time.Unix(100, 0).Add(tc.want)) {
				t.Errorf("got link %d orig %d time %v", g.link, g.orig, g.t)
			}
		})
	}
	t.Run("modified pcap", func(t *testing.T) {
		p := newPcap(0xa1b2cd34, 65535, 1)
		var h [24]byte
		le.PutUint32(h[8:], uint32(len(data)))
		le.PutUint32(h[12:], uint32(len(data)))
		p.Write(h[:])
		p.Write(data)
		got, s, err := readAll(t, p.Bytes())
		if err != nil || s.Damaged != 0 || len(got) != 1 || got[0].data != string(data) {
			t.Fatalf("got %d frames, %v, %+v", len(got), err, s)
		}
	})
}

// maxReadAlloc bounds what one read of a crafted capture may allocate: the
// read buffer (64 KiB), one frame buffer (at most MaxFrameLen) and change.
const maxReadAlloc = 1 << 20

// TestHugeLengths: lengths of 4 GiB, 2 GiB (negative as a 32-bit int) and
// just above the limit, in every length field, are damage, never a panic
// and never a large allocation, on 64-bit and 32-bit targets alike.
func TestHugeLengths(t *testing.T) {
	good := ethFrame(40002)
	gl := uint32(len(good))
	huge := []uint32{0xffffffff, 0xfffffffc, 0x80000000, 0x7ffffffc, capture.MaxFrameLen + 4, capture.MaxBlockLen + 4}
	type tc struct {
		name       string
		file       []byte
		wantFrames int
		wantDamage bool
	}
	var cases []tc
	for _, h := range huge {
		cases = append(cases,
			tc{fmt.Sprintf("pcap snaplen %#x", h), newPcap(0xa1b2c3d4, h, 1).frame(1, good).Bytes(), 1, false},
			tc{fmt.Sprintf("pcap caplen %#x", h), newPcap(0xa1b2c3d4, 65535, 1).frame(1, good).record(2, 0, h, h, good).frame(3, good).Bytes(), 1, true},
			tc{fmt.Sprintf("pcap origlen %#x", h), newPcap(0xa1b2c3d4, 65535, 1).record(1, 0, gl, h, good).Bytes(), 1, false},
			tc{fmt.Sprintf("pcapng idb snaplen %#x", h), newNG().idb(1, h).epb(0, 1, good).Bytes(), 1, false},
			tc{fmt.Sprintf("pcapng epb caplen %#x", h), newNG().idb(1, 0).epb(0, 1, good).block(6, epbBody(0, 2, h, h, good)).epb(0, 3, good).Bytes(), 2, true},
			tc{fmt.Sprintf("pcapng epb origlen %#x", h), newNG().idb(1, 0).block(6, epbBody(0, 2, gl, h, good)).Bytes(), 1, false},
			tc{fmt.Sprintf("pcapng block length %#x", h), newNG().idb(1, 0).epb(0, 1, good).raw(6, h, epbBody(0, 2, gl, gl, good), h).epb(0, 3, good).Bytes(), 2, true},
			tc{fmt.Sprintf("pcapng spb origlen %#x", h), newNG().idb(1, 0).block(3, append(le.AppendUint32(nil, h), good...)).Bytes(), 1, false},
			tc{fmt.Sprintf("pcapng shb length %#x", h), append(newNG().idb(1, 0).epb(0, 1, good).Bytes(),
				newNG().raw(0x0a0d0d0a, h, le.AppendUint32(nil, 0x1a2b3c4d), h).Bytes()...), 1, true},
		)
	}
	// A block length that is large but within MaxBlockLen and past the end
	// of the file: the file ends inside it.
	cases = append(cases, tc{"pcapng block past the end", newNG().idb(1, 0).epb(0, 1, good).raw(6, capture.MaxBlockLen, epbBody(0, 2, gl, gl, good), 0).Bytes(), 1, true})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []readFrame
			var s capture.Summary
			var err error
			n := testenv.Allocated(func() { got, s, err = readAll(t, c.file) })
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if len(got) != c.wantFrames || (s.Damaged > 0) != c.wantDamage {
				t.Errorf("got %d frames, damage %v; want %d frames, damage %v", len(got), s.Damage, c.wantFrames, c.wantDamage)
			}
			for i, g := range got {
				// A simple packet block's frame runs to the end of the
				// block when the original length is larger: padding too.
				if !strings.HasPrefix(g.data, string(good)) || len(g.data) > len(good)+3 || g.orig < 0 {
					t.Errorf("frame %d: %d bytes, orig %d", i+1, len(g.data), g.orig)
				}
			}
			if n > maxReadAlloc {
				t.Errorf("allocated %d bytes, want at most %d", n, maxReadAlloc)
			}
		})
	}
}

// smallCaptures returns a pcap and a pcapng of three frames each, with the
// offsets where each record ends.
func smallCaptures() (pcap []byte, pcapEnds []int, ng []byte, ngEnds []int) {
	p := newPcap(0xa1b2c3d4, 65535, 1)
	pcapEnds = []int{24}
	n := newNG().idb(1, 0).idb(101, 0)
	for i := range 3 {
		f := ethFrame(40010 + uint16(i))
		p.frame(uint32(i), f)
		pcapEnds = append(pcapEnds, p.Len())
		if i == 1 {
			n.epb(1, uint64(i), f[14:])
		} else {
			n.epb(0, uint64(i), f)
		}
	}
	// A custom block after the last frame: skipped, and cutting inside
	// it loses no frame.
	n.block(0x40000bad, []byte("custom data"))
	return p.Bytes(), pcapEnds, n.Bytes(), n.ends
}

// TestTruncatedAtEveryOffset cuts a small pcap and a small pcapng at every
// byte: every whole frame before the cut is read, the partial one is
// reported as damage with the right offset and size, nothing panics.
func TestTruncatedAtEveryOffset(t *testing.T) {
	pc, pcEnds, ng, ngEnds := smallCaptures()
	run := func(t *testing.T, file []byte, ends []int, headerEnd, firstFrame int) {
		for cut := 0; cut <= len(file); cut++ {
			got, s, err := readAll(t, file[:cut])
			if cut < 4 || (headerEnd == 24 && cut < 24) {
				if err == nil {
					t.Errorf("cut %d: no error for a file without a whole header", cut)
				}
				continue
			}
			if err != nil {
				t.Errorf("cut %d: %v", cut, err)
				continue
			}
			whole, last := 0, 0
			for i, e := range ends {
				if e <= cut {
					last = e
					if i >= firstFrame && whole < 3 {
						whole = min(i-firstFrame+1, 3)
					}
				}
			}
			if len(got) != whole || s.Frames != whole {
				t.Errorf("cut %d: %d frames, want %d", cut, len(got), whole)
			}
			wantDamage := cut != last
			if (s.Damaged == 1) != wantDamage || (wantDamage && (s.Damage[0].Offset != int64(last) || s.Lost != int64(cut-last))) {
				t.Errorf("cut %d: damage %+v lost %d, want damage %v at %d losing %d", cut, s.Damage, s.Lost, wantDamage, last, cut-last)
			}
			if s.Bytes != int64(cut) {
				t.Errorf("cut %d: read %d bytes", cut, s.Bytes)
			}
		}
	}
	t.Run("pcap", func(t *testing.T) { run(t, pc, pcEnds, 24, 1) })
	t.Run("pcapng", func(t *testing.T) { run(t, ng, ngEnds, 0, 3) })
}

// TestDamagedBlocks: pcapng damage is reported with its offset and the
// read goes on at the next whole block.
func TestDamagedBlocks(t *testing.T) {
	f := [4][]byte{ethFrame(40020), ethFrame(40021), ethFrame(40022), ethFrame(40023)}
	body := epbBody(0, 2, uint32(len(f[1])), uint32(len(f[1])), f[1])
	bl := uint32(12 + len(pad4(body)))
	type tc struct {
		name   string
		bad    func(n *ngFile) // writes the damaged part in place of frame 2
		frames []int           // which of f are read
		reason string
	}
	for _, c := range []tc{
		{"trailer does not match", func(n *ngFile) { n.raw(6, bl, body, 999) }, []int{0, 2, 3}, "length 999 at its end"},
		{"length not a multiple of 4", func(n *ngFile) { n.raw(6, bl+1, body, bl+1) }, []int{0, 2, 3}, "bad length"},
		{"length below the minimum", func(n *ngFile) { n.raw(6, 12, body, 12) }, []int{0, 2, 3}, "bad length 12"},
		{"garbage between blocks", func(n *ngFile) { n.Write(bytes.Repeat([]byte{0xee}, 20)) }, []int{0, 1, 2, 3}, "bad length"},
		{"unknown interface", func(n *ngFile) { n.epb(7, 2, f[1]) }, []int{0, 2, 3}, "interface 7"},
		{"packet longer than its block", func(n *ngFile) { n.block(6, epbBody(0, 2, uint32(len(f[1])+100), 0, f[1])) }, []int{0, 2, 3}, "room for"},
		{"bad byte-order magic in a later section", func(n *ngFile) {
			n.raw(0x0a0d0d0a, 28, append(le.AppendUint32(nil, 0x11223344), make([]byte, 12)...), 28)
		}, []int{0, 2, 3}, "byte-order magic"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNG().idb(1, 0).epb(0, 1, f[0])
			at := n.Len()
			c.bad(n)
			if c.name == "garbage between blocks" {
				n.epb(0, 2, f[1])
			}
			n.epb(0, 3, f[2]).epb(0, 4, f[3])
			got, s, err := readAll(t, n.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, i := range c.frames {
				want = append(want, string(f[i]))
			}
			var gotData []string
			for _, g := range got {
				gotData = append(gotData, g.data)
			}
			if strings.Join(gotData, "|") != strings.Join(want, "|") {
				t.Errorf("got %d frames, want frames %v", len(got), c.frames)
			}
			if s.Damaged != 1 || s.Damage[0].Offset != int64(at) || s.Damage[0].After != 1 || !strings.Contains(s.Damage[0].Reason, c.reason) {
				t.Errorf("damage %+v, want one at offset %d after frame 1 saying %q", s.Damage, at, c.reason)
			}
			if w := s.Warning(); !strings.Contains(w, fmt.Sprintf("offset %d", at)) {
				t.Errorf("warning %q does not name offset %d", w, at)
			}
			err = capture.ReadFramesFrom(bytes.NewReader(n.Bytes()), "x.pcapng", func(*capture.Frame) error { return nil })
			var de *capture.DamageError
			if !errors.Is(err, capture.ErrDamaged) || !errors.As(err, &de) || de.Summary.Frames != len(c.frames) {
				t.Errorf("ReadFramesFrom: %v, want a DamageError after %d frames", err, len(c.frames))
			}
		})
	}
}

func TestNotACapture(t *testing.T) {
	badBOM := append([]byte{0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0}, make([]byte, 20)...)
	for _, b := range [][]byte{nil, []byte("abc"), []byte("hello world"), badBOM} {
		if _, _, err := readAll(t, b); !errors.Is(err, capture.ErrFormat) {
			t.Errorf("% x: got %v, want ErrFormat", b, err)
		}
	}
}

// FuzzRead: any input is read without panic; what is delivered is
// consistent with the summary and within the limits.
func FuzzRead(f *testing.F) {
	pc, _, ng, _ := smallCaptures()
	f.Add(pc)                                                                                   // three frames, pcap
	f.Add(ng)                                                                                   // three frames on two interfaces, pcapng
	f.Add(pc[:len(pc)-7])                                                                       // truncated pcap
	f.Add(ng[:len(ng)-30])                                                                      // truncated pcapng
	f.Add(newPcap(0xa1b2c3d4, 0xffffffff, 1).record(0, 0, 0xffffffff, 0xffffffff, nil).Bytes()) // 4 GiB record
	bad := newNG().idb(1, 0).raw(6, 0x80000000, nil, 0).epb(0, 1, ethFrame(1)).Bytes()
	f.Add(bad) // a block length of 2 GiB, then a whole block
	mixed := newNG()
	for lt, fr := range linkFrames() {
		mixed.idb(uint16(lt), 0).epb(uint32(len(mixed.ends)-2), 1, fr)
	}
	f.Add(mixed.Bytes()) // every link type
	f.Fuzz(func(t *testing.T, b []byte) {
		n := 0
		s, err := capture.ReadFrom(bytes.NewReader(b), "fuzz", func(fr *capture.Frame) error {
			n++
			if fr.Index != n || len(fr.Data) > capture.MaxFrameLen || fr.OrigLen < 0 {
				t.Fatalf("frame %d: index %d, %d bytes, orig %d", n, fr.Index, len(fr.Data), fr.OrigLen)
			}
			return nil
		})
		if err != nil && n > 0 && !errors.Is(err, capture.ErrFormat) {
			t.Fatalf("error %v after %d frames", err, n)
		}
		if s.Frames != n || s.Bytes > int64(len(b)) || s.Lost > int64(len(b)) || s.Damaged < len(s.Damage) {
			t.Fatalf("summary %+v after %d frames of a %d-byte input", s, n, len(b))
		}
	})
}

// TestBlocksLargerThanTheBuffer: frames and blocks larger than the 64 KiB
// read buffer are read through (frame copied, rest skipped, trailer
// checked after), with the same damage rules.
func TestBlocksLargerThanTheBuffer(t *testing.T) {
	bigFrame := bytes.Repeat([]byte{0xab}, 200_000)
	small := ethFrame(40030)
	withOpts := append(epbBody(0, 2, uint32(len(small)), uint32(len(small)), pad4(append([]byte(nil), small...))), make([]byte, 150_000)...)
	t.Run("pcap", func(t *testing.T) {
		got, s, err := readAll(t, newPcap(0xa1b2c3d4, 262144, 1).frame(1, bigFrame).frame(2, small).Bytes())
		if err != nil || s.Damaged != 0 || len(got) != 2 || got[0].data != string(bigFrame) || got[1].data != string(small) {
			t.Fatalf("got %d frames, %v, %+v", len(got), err, s)
		}
	})
	t.Run("pcapng", func(t *testing.T) {
		n := newNG().idb(1, 0).epb(0, 1, bigFrame).block(6, withOpts).epb(0, 3, small)
		got, s, err := readAll(t, n.Bytes())
		if err != nil || s.Damaged != 0 || len(got) != 3 || got[0].data != string(bigFrame) || got[1].data != string(small) {
			t.Fatalf("got %d frames, %v, %+v", len(got), err, s)
		}
	})
	t.Run("pcapng trailer mismatch", func(t *testing.T) {
		n := newNG().idb(1, 0).epb(0, 1, small)
		at := n.Len()
		body := epbBody(0, 2, uint32(len(bigFrame)), uint32(len(bigFrame)), bigFrame)
		n.raw(6, uint32(12+len(pad4(body))), body, 4)
		n.epb(0, 3, small)
		got, s, err := readAll(t, n.Bytes())
		if err != nil || len(got) != 2 || s.Damaged != 1 || s.Damage[0].Offset != int64(at) || !strings.Contains(s.Damage[0].Reason, "length 4 at its end") {
			t.Fatalf("got %d frames, %v, %+v", len(got), err, s)
		}
	})
	t.Run("pcapng truncated", func(t *testing.T) {
		n := newNG().idb(1, 0).epb(0, 1, small)
		at := n.Len()
		n.epb(0, 2, bigFrame)
		cut := n.Bytes()[:at+100_000]
		got, s, err := readAll(t, cut)
		if err != nil || len(got) != 1 || s.Damaged != 1 || s.Damage[0].Offset != int64(at) || s.Lost != 100_000 {
			t.Fatalf("got %d frames, %v, %+v", len(got), err, s)
		}
	})
}

// TestReadAllocatesPerFileNotPerFrame: reading allocates the read and
// frame buffers once per file, nothing per frame.
func TestReadAllocatesPerFileNotPerFrame(t *testing.T) {
	p := newPcap(0xa1b2c3d4, 65535, 1)
	n := newNG().idb(1, 0).idb(101, 0)
	for i := range 1000 {
		f := ethFrame(uint16(i))
		p.frame(uint32(i), f)
		n.epb(uint32(i%2), uint64(i), f)
	}
	for name, b := range map[string][]byte{"pcap": p.Bytes(), "pcapng": n.Bytes()} {
		frames := 0
		allocs := testing.AllocsPerRun(5, func() {
			frames = 0
			if _, err := capture.ReadFrom(bytes.NewReader(b), name, func(*capture.Frame) error { frames++; return nil }); err != nil {
				t.Fatal(err)
			}
		})
		if frames != 1000 || allocs > 10 {
			t.Errorf("%s: %d frames, %.0f allocations per read; want 1000 frames and at most 10", name, frames, allocs)
		}
	}
}
