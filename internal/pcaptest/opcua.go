package pcaptest

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/simulate/capture"
)

// UAHello is the Hello of the OPC UA captures and live clients of the
// tests: the server is 192.0.2.130:4840.
var UAHello = opcua.Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536, EndpointURL: "opc.tcp://192.0.2.130:4840"}

// UAWriteBody is the body of a Write request of at most msgSize bytes:
// as many values (1) as fit, written to the nodes
// ns=2;s=<prefix>00000000, <prefix>00000001, …
func UAWriteBody(msgSize int, prefix string) []byte {
	one := opcua.WriteValue{Node: opcua.StringID(2, prefix+"00000000"), Value: 1}
	per := len(opcua.AppendWriteRequest(nil, 3, one, one)) - len(opcua.AppendWriteRequest(nil, 3, one))
	vals := make([]opcua.WriteValue, msgSize/per)
	for i := range vals {
		vals[i] = opcua.WriteValue{Node: opcua.StringID(2, fmt.Sprintf("%s%08d", prefix, i)), Value: 1}
	}
	return opcua.AppendWriteRequest(make([]byte, 0, msgSize+4096), 3, vals...)
}

// UAWriter writes OPC UA connections to a capture file (frames 10 µs
// apart); any error fails the test.
type UAWriter struct {
	t  testing.TB
	f  *os.File
	bw *bufio.Writer
	w  *capture.Writer
}

// NewUAWriter creates the capture file path.
func NewUAWriter(t testing.TB, path string) *UAWriter {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	w, err := capture.NewWriter(bw)
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	w.Step = 10 * time.Microsecond
	return &UAWriter{t: t, f: f, bw: bw, w: w}
}

func (u *UAWriter) write(fr []byte) {
	u.t.Helper()
	if err := u.w.WriteFrame(fr); err != nil {
		u.t.Fatal(err)
	}
}

// Open writes connection i (192.0.2.1, port 30000+i, to UAHello's
// server): the TCP handshake, Hello and Acknowledge, and an
// OpenSecureChannel request (security None) and its response (channel 7,
// token 1). It returns the flow.
func (u *UAWriter) Open(i int) *capture.TCPFlow {
	u.t.Helper()
	srv := capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.130:4840")}
	fl := capture.NewTCPFlow(capture.Endpoint{MAC: capture.MAC(1), Addr: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), uint16(30000+i))}, srv)
	for _, fr := range fl.Handshake() {
		u.write(fr)
	}
	u.write(fl.Send(true, opcua.AppendHello(nil, UAHello)))
	u.write(fl.Send(false, opcua.AppendAcknowledge(nil, UAHello)))
	u.write(fl.Send(true, opcua.AppendOpenRequest(nil, opcua.SecureHeader{SequenceNumber: 1, RequestID: 1}, opcua.ModeNone)))
	u.write(fl.Send(false, opcua.AppendOpenResponse(nil, opcua.SecureHeader{ChannelID: 7, SequenceNumber: 1, RequestID: 1}, 1)))
	return fl
}

// SendChunk writes one chunk from the client of fl in 1460-byte
// segments, then the server's acknowledgement.
func (u *UAWriter) SendChunk(fl *capture.TCPFlow, chunk []byte) {
	u.t.Helper()
	for c := chunk; len(c) > 0; {
		k := min(len(c), 1460)
		u.write(fl.Send(true, c[:k]))
		c = c[k:]
	}
	u.write(fl.Segment(false, fl.NextSeq(false), fl.NextSeq(true), capture.TCPFlags{ACK: true}, nil))
}

// Close flushes and closes the capture file.
func (u *UAWriter) Close() {
	u.t.Helper()
	if err := u.bw.Flush(); err != nil {
		u.t.Fatal(err)
	}
	if err := u.f.Close(); err != nil {
		u.t.Fatal(err)
	}
}
