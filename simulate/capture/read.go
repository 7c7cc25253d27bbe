package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/gopacket/gopacket/pcapgo"

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

// ErrFormat reports a file that is neither pcap nor pcapng.
var ErrFormat = errors.New("capture: not a pcap or pcapng file")

// Frame is one captured frame. Data is valid only during the callback.
type Frame struct {
	Index    int // 1-based, as Wireshark numbers frames
	Time     time.Time
	Link     packet.LinkType
	Data     []byte
	OrigLen  int // length on the wire (Data may be shorter when snapped)
	IfaceIdx int // pcapng interface id; 0 for pcap
}

// DetectFormat reads the magic number at the start of r.
func DetectFormat(magic []byte) Format {
	if len(magic) < 4 {
		return FormatUnknown
	}
	switch binary.LittleEndian.Uint32(magic) {
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1:
		return FormatPcap
	case 0x0a0d0d0a:
		return FormatPcapNG
	}
	return FormatUnknown
}

// ReadFrames calls fn for every frame of the capture at path, in file order.
// An error from fn stops the read and is returned. Errors name the file and,
// for a damaged record, the frame number.
func ReadFrames(path string, fn func(*Frame) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return ReadFramesFrom(f, path, fn)
}

// ReadFramesFrom is ReadFrames on an open reader; name is used in errors.
func ReadFramesFrom(r io.Reader, name string, fn func(*Frame) error) error {
	br := bufio.NewReaderSize(r, 1<<16)
	magic, err := br.Peek(4)
	if err != nil {
		return fmt.Errorf("capture: %s: %w (file too short: %v)", name, ErrFormat, err)
	}
	var fr Frame
	switch DetectFormat(magic) {
	case FormatPcap:
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return fmt.Errorf("capture: %s: %w", name, err)
		}
		fr.Link = packet.LinkType(pr.LinkType())
		for i := 1; ; i++ {
			data, ci, err := pr.ZeroCopyReadPacketData()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) {
					return fmt.Errorf("capture: %s: frame %d: truncated record: %w", name, i, err)
				}
				return fmt.Errorf("capture: %s: frame %d: %w", name, i, err)
			}
			fr.Index, fr.Time, fr.Data, fr.OrigLen = i, ci.Timestamp, data, ci.Length
			if err := fn(&fr); err != nil {
				return err
			}
		}
	case FormatPcapNG:
		nr, err := pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			return fmt.Errorf("capture: %s: %w", name, err)
		}
		for i := 1; ; i++ {
			data, ci, err := nr.ZeroCopyReadPacketData()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("capture: %s: frame %d: %w", name, i, err)
			}
			fr.Index, fr.Time, fr.Data, fr.OrigLen = i, ci.Timestamp, data, ci.Length
			fr.IfaceIdx = ci.InterfaceIndex
			fr.Link = packet.LinkType(nr.LinkType())
			if iface, err := nr.Interface(ci.InterfaceIndex); err == nil {
				fr.Link = packet.LinkType(iface.LinkType)
			}
			if err := fn(&fr); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("capture: %s: %w (magic % x)", name, ErrFormat, magic)
}
