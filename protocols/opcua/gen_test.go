package opcua

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/simulate/capture"
)

var update = flag.Bool("update", false, "rewrite testdata/*.pcap and *.golden")

// gen builds one generated capture: a single OPC UA TCP connection between
// documentation addresses.
type gen struct {
	buf  bytes.Buffer
	w    *capture.Writer
	flow *capture.TCPFlow
	seq  uint32 // next SequenceNumber, client side
	sseq uint32 // server side
	h    SecureHeader
}

func newGen(t *testing.T) *gen {
	t.Helper()
	g := &gen{seq: 1, sseq: 1}
	w, err := capture.NewWriter(&g.buf)
	if err != nil {
		t.Fatal(err)
	}
	g.w = w
	g.flow = capture.NewTCPFlow(
		capture.Endpoint{MAC: capture.MAC(1), Addr: netip.MustParseAddrPort("192.0.2.130:50100")},
		capture.Endpoint{MAC: capture.MAC(2), Addr: netip.MustParseAddrPort("192.0.2.10:4840")})
	for _, f := range g.flow.Handshake() {
		g.frame(f)
	}
	return g
}

func (g *gen) frame(f []byte) {
	if err := g.w.WriteFrame(f); err != nil {
		panic(err) // bytes.Buffer does not fail
	}
}

// send writes payload from one side as one segment.
func (g *gen) send(fromClient bool, payload []byte) { g.frame(g.flow.Send(fromClient, payload)) }

// req returns the next client header for request id.
func (g *gen) req(id uint32) SecureHeader {
	h := g.h
	h.SequenceNumber, h.RequestID = g.seq, id
	g.seq++
	return h
}

func (g *gen) resp(id uint32) SecureHeader {
	h := g.h
	h.SequenceNumber, h.RequestID = g.sseq, id
	g.sseq++
	return h
}

var (
	testHello = Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536, EndpointURL: "opc.tcp://192.0.2.10:4840/otgw"}
	testAck   = Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536}
	setpoint  = StringID(2, "Line1.Setpoint")
)

// open runs HEL/ACK and an OPN exchange (policy None, mode None) with the
// given ACK.
func (g *gen) open(ack Hello) {
	g.send(true, AppendHello(nil, testHello))
	g.send(false, AppendAcknowledge(nil, ack))
	g.send(true, AppendOpenRequest(nil, g.req(1), ModeNone))
	g.h = SecureHeader{ChannelID: 7, TokenID: 1}
	g.send(false, AppendOpenResponse(nil, g.resp(1), 1))
}

// generators make every capture in testdata; the name is the file stem.
var generators = map[string]func(g *gen){
	// A complete session: Read, Write (two nodes), Call, Browse, CLO.
	"session": func(g *gen) {
		g.open(testAck)
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(2), AppendReadRequest(nil, 2, Numeric(0, 2258), setpoint)))
		g.send(false, AppendMessage(nil, ChunkFinal, g.resp(2), AppendResponse(nil, ServiceRead, 2, 0)))
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(3), AppendWriteRequest(nil, 3,
			WriteValue{setpoint, 42.5}, WriteValue{Numeric(3, 1001), 1})))
		g.send(false, AppendMessage(nil, ChunkFinal, g.resp(3), AppendResponse(nil, ServiceWrite, 3, 0)))
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(4), AppendCallRequest(nil, 4,
			CallMethod{Object: Numeric(2, 5000), Method: StringID(2, "Line1.Reset"), Args: []float64{1, 2}})))
		g.send(false, AppendMessage(nil, ChunkFinal, g.resp(4), AppendResponse(nil, ServiceCall, 4, 0)))
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(5), AppendBrowseRequest(nil, 5, Numeric(0, 85))))
		g.send(false, AppendMessage(nil, ChunkFinal, g.resp(5), AppendResponse(nil, ServiceBrowse, 5, 0)))
		g.send(true, AppendClose(nil, g.req(6)))
	},
	// A Write of 20 nodes in 40-byte chunks (C...F), then a message
	// aborted after its first chunk.
	"multichunk": func(g *gen) {
		g.open(testAck)
		vals := make([]WriteValue, 20)
		for i := range vals {
			vals[i] = WriteValue{StringID(2, fmt.Sprintf("Line1.Valve%02d", i)), float64(i)}
		}
		body := AppendWriteRequest(nil, 2, vals...)
		h := g.req(2)
		g.send(true, AppendChunks(nil, h, body, 200))
		g.seq += uint32(len(body)/200 + 1)
		g.send(false, AppendMessage(nil, ChunkFinal, g.resp(2), AppendResponse(nil, ServiceWrite, 2, 0)))
		body = AppendReadRequest(nil, 3, setpoint)
		g.send(true, AppendMessage(nil, ChunkIntermediate, g.req(3), body[:30]))
		g.send(true, AppendAbort(nil, g.req(3), 0x80AB0000, "aborted by client"))
	},
	// A Write request delivered one byte per TCP segment.
	"byte_per_segment": func(g *gen) {
		g.open(testAck)
		msg := AppendMessage(nil, ChunkFinal, g.req(2), AppendWriteRequest(nil, 2, WriteValue{setpoint, 7}))
		for i := range msg {
			g.send(true, msg[i:i+1])
		}
		g.send(false, AppendMessage(nil, ChunkFinal, g.resp(2), AppendResponse(nil, ServiceWrite, 2, 0)))
	},
	// Several messages in one segment, both directions.
	"pipelined": func(g *gen) {
		g.open(testAck)
		var b []byte
		b = AppendMessage(b, ChunkFinal, g.req(2), AppendReadRequest(nil, 2, setpoint))
		b = AppendMessage(b, ChunkFinal, g.req(3), AppendWriteRequest(nil, 3, WriteValue{setpoint, 1}))
		b = AppendMessage(b, ChunkFinal, g.req(4), AppendBrowseRequest(nil, 4, Numeric(0, 85)))
		g.send(true, b)
		var r []byte
		r = AppendMessage(r, ChunkFinal, g.resp(2), AppendResponse(nil, ServiceRead, 2, 0))
		r = AppendMessage(r, ChunkFinal, g.resp(3), AppendResponse(nil, ServiceWrite, 3, 0))
		r = AppendMessage(r, ChunkFinal, g.resp(4), AppendResponse(nil, ServiceBrowse, 4, 0))
		g.send(false, r)
	},
	// ERR from the server in answer to HEL.
	"error": func(g *gen) {
		g.send(true, AppendHello(nil, testHello))
		g.send(false, AppendError(nil, 0x807E0000, "Bad_TcpEndpointUrlInvalid"))
	},
}

// anomalyGenerators make anomaly_<name>.pcap: a valid start, then one
// message that must be reported with that anomaly.
var anomalyGenerators = map[Anomaly]func(g *gen){
	AnomalyInvalidMessageSize: func(g *gen) {
		g.open(testAck)
		m := AppendMessage(nil, ChunkFinal, g.req(2), AppendReadRequest(nil, 2, setpoint))
		binary.LittleEndian.PutUint32(m[4:], 12) // below the MSG minimum
		g.send(true, m)
	},
	AnomalyUnknownMessageType: func(g *gen) {
		g.open(testAck)
		m := AppendMessage(nil, ChunkFinal, g.req(2), AppendReadRequest(nil, 2, setpoint))
		copy(m, "XYZ")
		g.send(true, m)
	},
	AnomalyInvalidChunkType: func(g *gen) {
		g.send(true, AppendHello(nil, testHello))
		g.send(false, AppendAcknowledge(nil, testAck))
		m := AppendOpenRequest(nil, g.req(1), ModeNone)
		m[3] = 'C' // OPN is always F (§6.7.2.2)
		g.send(true, m)
	},
	AnomalyAbnormalStringLength: func(g *gen) {
		m := AppendHello(nil, testHello)
		binary.LittleEndian.PutUint32(m[28:], 0xFFFFFFF0) // EndpointUrl length -16
		g.send(true, m)
	},
	AnomalyAbnormalArrayLength: func(g *gen) {
		g.open(testAck)
		body := AppendWriteRequest(nil, 2, WriteValue{setpoint, 1})
		off := len(AppendRequest(nil, ServiceWrite, 2))
		binary.LittleEndian.PutUint32(body[off:], 1000000)
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(2), body))
	},
	AnomalyBadProtocolVersion: func(g *gen) {
		h := testHello
		h.ProtocolVersion = 1
		g.send(true, AppendHello(nil, h))
	},
	AnomalyTooManyChunks: func(g *gen) {
		ack := testAck
		ack.MaxChunkCount = 2
		g.open(ack)
		body := AppendReadRequest(nil, 2, setpoint, setpoint, setpoint)
		g.send(true, AppendChunks(nil, g.req(2), body, 40))
	},
	AnomalyMessageTooLarge: func(g *gen) {
		ack := testAck
		ack.MaxMessageSize = 64
		g.open(ack)
		body := AppendReadRequest(nil, 2, setpoint, setpoint, setpoint)
		g.send(true, AppendChunks(nil, g.req(2), body, 50))
	},
	AnomalyTruncated: func(g *gen) {
		g.open(testAck)
		body := AppendWriteRequest(nil, 2, WriteValue{setpoint, 1})
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(2), body[:len(body)-5]))
	},
	AnomalyUnknownService: func(g *gen) {
		g.open(testAck)
		body := AppendNodeID(nil, Numeric(0, 9999))
		body = appendRequestHeader(body, 2)
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(2), body))
	},
	AnomalyMsgBeforeOpen: func(g *gen) {
		g.send(true, AppendHello(nil, testHello))
		g.send(false, AppendAcknowledge(nil, testAck))
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(2), AppendReadRequest(nil, 2, setpoint)))
	},
	AnomalyBadChannelID: func(g *gen) {
		g.open(testAck)
		h := g.req(2)
		h.ChannelID = 99
		g.send(true, AppendMessage(nil, ChunkFinal, h, AppendReadRequest(nil, 2, setpoint)))
	},
	AnomalyBadNodeID: func(g *gen) {
		g.open(testAck)
		body := AppendWriteRequest(nil, 2, WriteValue{setpoint, 1})
		off := len(AppendRequest(nil, ServiceWrite, 2)) + 4
		body[off] = 0x07 // no such NodeId encoding
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(2), body))
	},
	AnomalyTooManyNodes: func(g *gen) {
		g.open(testAck)
		vals := make([]WriteValue, MaxNodes+1)
		for i := range vals {
			vals[i] = WriteValue{Numeric(2, uint32(i)), 0}
		}
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(2), AppendWriteRequest(nil, 2, vals...)))
	},
	AnomalyBadSecurityMode: func(g *gen) {
		g.send(true, AppendHello(nil, testHello))
		g.send(false, AppendAcknowledge(nil, testAck))
		g.send(true, AppendOpenRequest(nil, g.req(1), ModeSignAndEncrypt)) // under policy None
	},
	AnomalyUnknownSecurityPolicy: func(g *gen) {
		g.send(true, AppendHello(nil, testHello))
		g.send(false, AppendAcknowledge(nil, testAck))
		m := AppendOpenRequest(nil, g.req(1), ModeNone)
		m = bytes.Replace(m, []byte("SecurityPolicy#None"), []byte("SecurityPolicy#Nope"), 1)
		g.send(true, m)
	},
	AnomalyBadEncoding: func(g *gen) {
		g.open(testAck)
		body := AppendWriteRequest(nil, 2, WriteValue{setpoint, 1})
		body[len(body)-9] = 30 // Variant type 30 does not exist
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(2), body))
	},
	AnomalyUnexpectedMessage: func(g *gen) {
		g.open(testAck)
		g.send(true, AppendHello(nil, testHello)) // a second HEL
	},
	AnomalyInterleavedChunks: func(g *gen) {
		g.open(testAck)
		body := AppendReadRequest(nil, 2, setpoint)
		g.send(true, AppendMessage(nil, ChunkIntermediate, g.req(2), body[:20]))
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(3), AppendReadRequest(nil, 3, setpoint)))
	},
	AnomalySecurityModeMismatch: func(g *gen) {
		// Basic256Sha256 with encrypted OPNs; the client's first MSG
		// looks like ciphertext (the channel is inferred SignAndEncrypt),
		// its second is a plaintext Write continuing the sequence numbers.
		g.send(true, AppendHello(nil, testHello))
		g.send(false, AppendAcknowledge(nil, testAck))
		fill := pattern(1)
		g.send(true, encryptedOpen(PolicyBasic256Sha256, 0, fill))
		g.send(false, encryptedOpen(PolicyBasic256Sha256, 7, fill))
		g.h = SecureHeader{ChannelID: 7, TokenID: 1}
		g.seq = 52
		body := fill(make([]byte, 16*6-8)) // 6 cipher blocks after the sequence header's place
		body[0] = 0x07
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(2), body))
		body = AppendWriteRequest(nil, 3, WriteValue{setpoint, 1})
		body = append(body, fill(make([]byte, 32))...) // signature
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(3), body))
	},
	AnomalyGap: func(g *gen) {
		g.open(testAck)
		m := AppendMessage(nil, ChunkFinal, g.req(2), AppendReadRequest(nil, 2, setpoint))
		g.send(true, m[:10])
		g.flow.Advance(true, len(m)-10) // the rest is never captured
		g.send(true, AppendMessage(nil, ChunkFinal, g.req(3), AppendReadRequest(nil, 3, setpoint)))
	},
}

// allCaptures returns every generated capture by file name.
func allCaptures(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for name, fn := range generators {
		g := newGen(t)
		fn(g)
		out[name+".pcap"] = g.buf.Bytes()
	}
	for a := AnomalyNone + 1; a < anomalyCount; a++ {
		fn, ok := anomalyGenerators[a]
		if !ok {
			t.Fatalf("no generator for anomaly %s", a)
		}
		g := newGen(t)
		fn(g)
		out["anomaly_"+a.String()+".pcap"] = g.buf.Bytes()
	}
	return out
}

// TestTestdataUpToDate regenerates every capture and compares it with
// testdata (go test -run TestTestdataUpToDate -update rewrites them).
func TestTestdataUpToDate(t *testing.T) {
	for name, b := range allCaptures(t) {
		path := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		old, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(old, b) {
			t.Errorf("%s is stale or missing: run go test ./protocols/opcua -run TestTestdataUpToDate -update", path)
		}
	}
}

// dissectLines renders the records of a capture as JSON lines (frame, dir,
// fields, anomaly), the golden format.
func dissectLines(t *testing.T, path string) []string {
	t.Helper()
	var lines []string
	conns := map[uint64]*Session{}
	_, err := capture.ReadStreams(path, capture.Options{}, func(s *capture.Segment) error {
		c := conns[s.Conn]
		if c == nil {
			c = newSession()
			conns[s.Conn] = c
		}
		dir := protocols.Request
		if s.Src.Port() == DefaultPort {
			dir = protocols.Response
		}
		feed(c, dir, s.Payload, s.Gap, func(r protocols.Record) {
			var sb strings.Builder
			fmt.Fprintf(&sb, `{"frame":%d,"dir":%q`, s.Frame, r.Dir)
			for _, kv := range r.Fields {
				v, _ := json.Marshal(kv.Value)
				fmt.Fprintf(&sb, `,%q:%s`, kv.Key, v)
			}
			if r.Anomaly != "" {
				fmt.Fprintf(&sb, `,"anomaly":%q`, r.Anomaly)
			}
			sb.WriteString("}")
			lines = append(lines, sb.String())
		})
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return lines
}

// TestGolden dissects every generated capture and compares with its
// .golden file; anomaly_<name>.pcap must also report <name>.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.pcap"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata captures (%v): run with -update", err)
	}
	sort.Strings(files)
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".pcap")
		t.Run(name, func(t *testing.T) {
			got := strings.Join(dissectLines(t, file), "\n") + "\n"
			golden := strings.TrimSuffix(file, ".pcap") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("%s differs from %s:\ngot:\n%s\nwant:\n%s", file, golden, got, want)
			}
			if a, ok := strings.CutPrefix(name, "anomaly_"); ok {
				if !strings.Contains(got, `"anomaly":"`+a+`"`) {
					t.Errorf("anomaly %s not reported:\n%s", a, got)
				}
			} else if strings.Contains(got, `"anomaly"`) {
				t.Errorf("anomaly in a well-formed capture:\n%s", got)
			}
		})
	}
}

// pattern returns a function that fills b with bytes that look random but
// are deterministic (xorshift from seed), so that generated captures are
// reproducible.
func pattern(seed uint32) func(b []byte) []byte {
	x := seed*2654435761 + 1
	return func(b []byte) []byte {
		for i := range b {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			b[i] = byte(x)
		}
		return b
	}
}

// encryptedOpen returns an OPN chunk under policy whose part after the
// asymmetric security header is 512 bytes from fill, as an encrypted OPN
// looks (§6.7.2.3).
func encryptedOpen(policy SecurityPolicy, channelID uint32, fill func([]byte) []byte) []byte {
	b, s := startChunk(nil, "OPN", ChunkFinal)
	b = appendU32(b, channelID)
	b = appendString(b, policy.URI())
	b = appendString(b, string(make([]byte, 600))) // certificate
	b = appendString(b, string(make([]byte, 20)))  // thumbprint
	return endChunk(append(b, fill(make([]byte, 512))...), s)
}
