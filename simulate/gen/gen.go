// Package gen generates the scenario suite simulate/scenarios/<case>/
// (README.md, input.pcap, policy.yaml, expect.yaml) from the catalogue in
// SCENARIOS.md: Modbus M1-M21, DNP3 D1-D15, OPC UA U1-U4 and the generic
// evasions. Captures are built frame by frame with simulate/capture
// (TCPFlow gives correct sequence/acknowledgement numbers and checksums)
// from traffic recorded between real protocol libraries where one exists
// (goburrow/modbus and simonvetter/modbus, gopcua client and server: see
// recorded.go and Suite) and from the project's protocol encoders
// (protocols/modbus, protocols/dnp3, protocols/opcua) and hand-crafted
// malformed or evasive bytes for DNP3 and the rest.
//
// Run `go test ./simulate/gen -run TestGenerate -update` to rewrite the
// folders; the scenarios test (simulate/scenarios) replays each through the
// engine and compares the verdict events with expect.yaml.
package gen

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/otgw/otgw/simulate/capture"
)

// Expect is one expected verdict event. Reason may end in "*" to match a
// prefix (e.g. "malformed:*" when the anomaly name is the parser's).
type Expect struct {
	Frame   int
	Verdict string
	Reason  string
}

// Scenario is one case of the suite.
type Scenario struct {
	Name    string // folder name, e.g. "m01-force-listen-only"
	ID      string // catalogue id, e.g. "M1"
	Proto   string // modbus, dnp3, opcua, evasion
	Title   string
	Why     string // what and why, with the source key of SCENARIOS.md
	Policy  string // policy YAML
	Build   func(b *Builder)
	Expects []Expect // filled by Build
	Source  string   // README: where the traffic comes from; "" for the project's encoders
}

// Hosts of the suite (RFC 5737 documentation addresses).
var (
	HMI      = ep(1, "192.0.2.130")
	Eng      = ep(2, "192.0.2.131")
	SCADA    = ep(3, "192.0.2.140")
	OPCCli   = ep(4, "192.0.2.150")
	LogSrv   = ep(5, "192.0.2.160")
	Attacker = ep(9, "192.0.2.200")
	PLC      = ep(10, "192.0.2.10")
	RTU      = ep(20, "192.0.2.20")
	OPCSrv   = ep(30, "192.0.2.30")
)

func ep(mac byte, ip string) netip.Addr {
	_ = mac
	return netip.MustParseAddr(ip)
}

var macs = map[netip.Addr]byte{}

func init() {
	for i, a := range []netip.Addr{HMI, Eng, SCADA, OPCCli, Attacker, PLC, RTU, OPCSrv} {
		macs[a] = byte(i + 1)
	}
	macs[LogSrv] = 9
}

// Builder writes one capture and records expectations.
type Builder struct {
	w       *capture.Writer
	buf     bytes.Buffer
	n       int
	sport   uint16
	expects []Expect
	err     error // set by a build that failed (a recording)
}

// Frame writes one frame and returns its 1-based number.
func (b *Builder) Frame(f []byte) int {
	if err := b.w.WriteFrame(f); err != nil {
		panic(err) // in-memory writer
	}
	b.n++
	return b.n
}

// Expect records an expected event at frame.
func (b *Builder) Expect(frame int, verdict, reason string) {
	b.expects = append(b.expects, Expect{frame, verdict, reason})
}

// Conn is one TCP connection of a scenario.
type Conn struct {
	b *Builder
	F *capture.TCPFlow
}

// TCP opens a connection (handshake written) from client to server:port,
// with a fresh client port.
func (b *Builder) TCP(client, server netip.Addr, port uint16) *Conn {
	c := b.TCPNoHandshake(client, server, port)
	for _, f := range c.F.Handshake() {
		b.Frame(f)
	}
	return c
}

// TCPNoHandshake returns a connection without writing its handshake.
func (b *Builder) TCPNoHandshake(client, server netip.Addr, port uint16) *Conn {
	b.sport++
	cl := capture.Endpoint{MAC: capture.MAC(macs[client]), Addr: netip.AddrPortFrom(client, 40000+b.sport)}
	sv := capture.Endpoint{MAC: capture.MAC(macs[server]), Addr: netip.AddrPortFrom(server, port)}
	return &Conn{b: b, F: capture.NewTCPFlow(cl, sv)}
}

// C sends payload from the client and returns the frame number.
func (c *Conn) C(payload []byte) int { return c.b.Frame(c.F.Send(true, payload)) }

// S sends payload from the server.
func (c *Conn) S(payload []byte) int { return c.b.Frame(c.F.Send(false, payload)) }

// Split sends payload from the client in pieces of n bytes; it returns the
// frame of the last piece.
func (c *Conn) Split(payload []byte, n int) int {
	last := 0
	for len(payload) > 0 {
		k := min(n, len(payload))
		last = c.C(payload[:k])
		payload = payload[k:]
	}
	return last
}

// SYN writes only the client's SYN (a connection the gateway refuses).
func (c *Conn) SYN() int {
	return c.b.Frame(c.F.Segment(true, c.F.NextSeq(true), 0, capture.TCPFlags{SYN: true}, nil))
}

// UDP writes one datagram.
func (b *Builder) UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) int {
	s := capture.Endpoint{MAC: capture.MAC(macs[src]), Addr: netip.AddrPortFrom(src, sport)}
	d := capture.Endpoint{MAC: capture.MAC(macs[dst]), Addr: netip.AddrPortFrom(dst, dport)}
	return b.Frame(capture.UDPDatagram(s, d, payload))
}

// Fragment splits an Ethernet/IPv4 frame's IP payload at off (a multiple
// of 8) into two fragments, as a host evading inspection would.
func Fragment(frame []byte, off int) [][]byte {
	const l3 = 14
	ihl := int(frame[l3]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(frame[l3+2:]))
	payload := frame[l3+ihl : l3+total]
	mk := func(part []byte, fragOff int, more bool) []byte {
		out := append([]byte(nil), frame[:l3+ihl]...)
		out = append(out, part...)
		ip := out[l3:]
		binary.BigEndian.PutUint16(ip[2:], uint16(ihl+len(part)))
		binary.BigEndian.PutUint16(ip[4:], 0x4242)
		v := uint16(fragOff / 8)
		if more {
			v |= 0x2000
		}
		binary.BigEndian.PutUint16(ip[6:], v)
		ip[10], ip[11] = 0, 0
		var sum uint32
		for i := 0; i < ihl; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
		if len(out) < 60 {
			out = append(out, make([]byte, 60-len(out))...)
		}
		return out
	}
	return [][]byte{mk(payload[:off], 0, true), mk(payload[off:], off, false)}
}

// Urgent sets URG and the urgent pointer ptr on an Ethernet/IPv4 TCP frame
// and fixes its checksum: the segment a Linux client sends for
// send(fd, buf, ptr, MSG_OOB), whose last byte (buf[ptr-1]) is urgent
// (RFC 6093 section 3: Linux points past the urgent byte).
func Urgent(frame []byte, ptr uint16) []byte {
	const l3 = 14
	ihl := int(frame[l3]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(frame[l3+2:]))
	l4 := frame[l3+ihl : l3+total]
	l4[13] |= 0x20
	binary.BigEndian.PutUint16(l4[18:], ptr)
	l4[16], l4[17] = 0, 0
	var sum uint32
	ip := frame[l3:]
	for _, w := range [][]byte{ip[12:20], {0, 6, byte(len(l4) >> 8), byte(len(l4))}, l4} {
		for i := 0; i+1 < len(w); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(w[i:]))
		}
		if len(w)%2 == 1 {
			sum += uint32(w[len(w)-1]) << 8
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(l4[16:], ^uint16(sum))
	return frame
}

func discardBuilder() (*Builder, error) {
	b := &Builder{}
	w, err := capture.NewWriter(&b.buf)
	b.w = w
	return b, err
}

// Generate builds the scenario's capture and expectations.
func (s *Scenario) Generate() ([]byte, error) {
	b := &Builder{}
	w, err := capture.NewWriter(&b.buf)
	if err != nil {
		return nil, err
	}
	b.w = w
	s.Build(b)
	s.Expects = b.expects
	if b.err != nil {
		return nil, b.err
	}
	return b.buf.Bytes(), nil
}

// ExpectYAML renders expect.yaml.
func (s *Scenario) ExpectYAML() []byte {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# %s %s: expected verdict events of `otgw replay --strict-midstream` (frame, verdict, reason).\n", s.ID, s.Title)
	sb.WriteString("# A reason ending in * matches by prefix. Generated by simulate/gen; do not edit.\n")
	if len(s.Expects) == 0 {
		sb.WriteString("events: []\n")
		return []byte(sb.String())
	}
	sb.WriteString("events:\n")
	for _, e := range s.Expects {
		fmt.Fprintf(&sb, "  - {frame: %d, verdict: %s, reason: %q}\n", e.Frame, e.Verdict, e.Reason)
	}
	return []byte(sb.String())
}

// README renders README.md.
func (s *Scenario) README() []byte {
	from := "from the project's encoders and crafted frames"
	src := ""
	if s.Source != "" {
		from = "from recorded library traffic"
		src = "Traffic: " + s.Source + "\n\n"
	}
	return []byte(fmt.Sprintf("# %s: %s\n\nCatalogue: %s (/work/shared/SCENARIOS.md), protocol: %s.\n\n%s\n\n%sGenerated by `simulate/gen` (`go test ./simulate/gen -run TestGenerate -update`)\n%s; `expect.yaml` lists the verdict events\nthe engine must produce when `input.pcap` is replayed under `policy.yaml`.\n",
		s.ID, s.Title, s.ID, s.Proto, s.Why, src, from))
}

// Suite returns the suite of All with the recorded cases of overrides
// swapped in: their traffic comes from real libraries (recorded.go).
func Suite() []Scenario {
	s := All()
	ov := overrides()
	for i := range s {
		o, ok := ov[s[i].ID]
		if !ok {
			continue
		}
		if o.why != "" {
			s[i].Why = o.why
		}
		s[i].Source = o.source
		build, crafted := o.build, s[i].Build
		s[i].Build = func(b *Builder) {
			// The crafted build still runs, into a discarded capture, so
			// that the Modbus transaction ids it draws from cases.go's
			// counter stay drawn: the cases after it keep their bytes.
			if d, err := discardBuilder(); err == nil {
				crafted(d)
			}
			if err := build(b); err != nil {
				b.err = fmt.Errorf("recording: %w", err)
			}
		}
	}
	return s
}

// WriteAll writes every scenario folder under dir.
func WriteAll(dir string) error { return WriteCases(dir, nil) }

// WriteCases writes the folders under dir of the scenarios keep accepts
// (all when keep is nil); a file whose content is unchanged is left alone.
func WriteCases(dir string, keep func(*Scenario) bool) error {
	for _, s := range Suite() {
		pc, err := s.Generate() // every case, in order: the crafted ones share a counter
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		if keep != nil && !keep(&s) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		d := filepath.Join(dir, s.Name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		for name, data := range map[string][]byte{"input.pcap": pc, "policy.yaml": []byte(s.Policy),
			"expect.yaml": s.ExpectYAML(), "README.md": s.README()} {
			p := filepath.Join(d, name)
			if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, data) {
				continue
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}
