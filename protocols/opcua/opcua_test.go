package opcua

import (
	"crypto/rand"
	"errors"
	"reflect"
	"testing"

	"github.com/gopcua/opcua/ua"
	"github.com/otgw/otgw/protocols"
)

var tHdr = SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 2, RequestID: 2}

// samples are well-formed chunks of every kind, by name.
func samples() map[string][]byte {
	return map[string][]byte{
		"HEL":        AppendHello(nil, testHello),
		"ACK":        AppendAcknowledge(nil, testAck),
		"ERR":        AppendError(nil, 0x807E0000, "Bad_TcpEndpointUrlInvalid"),
		"OPN_req":    AppendOpenRequest(nil, SecureHeader{SequenceNumber: 1, RequestID: 1}, ModeNone),
		"OPN_resp":   AppendOpenResponse(nil, SecureHeader{ChannelID: 7, SequenceNumber: 1, RequestID: 1}, 1),
		"MSG_read":   AppendMessage(nil, ChunkFinal, tHdr, AppendReadRequest(nil, 2, setpoint, Numeric(0, 2258))),
		"MSG_write":  AppendMessage(nil, ChunkFinal, tHdr, AppendWriteRequest(nil, 2, WriteValue{setpoint, 1}, WriteValue{Numeric(3, 70000), 2})),
		"MSG_call":   AppendMessage(nil, ChunkFinal, tHdr, AppendCallRequest(nil, 2, CallMethod{Numeric(2, 1), StringID(2, "Reset"), []float64{1}})),
		"MSG_browse": AppendMessage(nil, ChunkFinal, tHdr, AppendBrowseRequest(nil, 2, Numeric(0, 85))),
		"MSG_resp":   AppendMessage(nil, ChunkFinal, tHdr, AppendResponse(nil, ServiceRead, 2, 0x80340000)),
		"CLO":        AppendClose(nil, tHdr),
	}
}

func TestFramerNext(t *testing.T) {
	hel := AppendHello(nil, testHello)
	msg := samples()["MSG_read"]
	big := append([]byte(nil), msg...)
	big[4], big[5], big[6], big[7] = 0, 0, 0, 2 // 32 MiB
	small := append([]byte(nil), msg...)
	small[4], small[5], small[6], small[7] = 23, 0, 0, 0
	tests := []struct {
		name     string
		f        Framer
		b        []byte
		wantN    int
		wantNeed int
		wantErr  error
	}{
		{"complete HEL", Framer{}, hel, len(hel), 0, nil},
		{"HEL and more", Framer{}, append(append([]byte(nil), hel...), msg...), len(hel), 0, nil},
		{"empty", Framer{}, nil, 0, HeaderLen, nil},
		{"partial header", Framer{}, msg[:5], 0, 3, nil},
		{"partial body", Framer{}, msg[:20], 0, len(msg) - 20, nil},
		{"bad first byte", Framer{}, []byte("X"), 0, 0, ErrUnknownMessageType},
		{"bad type", Framer{}, []byte("HEX"), 0, 0, ErrUnknownMessageType},
		{"intermediate HEL", Framer{}, []byte("HELC"), 0, 0, ErrInvalidChunkType},
		{"chunk type X", Framer{}, []byte("MSGX"), 0, 0, ErrInvalidChunkType},
		{"abort MSG ok", Framer{}, []byte("MSGA"), 0, 4, nil},
		{"MSG below minimum", Framer{}, small, 0, 0, ErrInvalidMessageSize},
		{"MSG above default cap", Framer{}, big, 0, 0, ErrInvalidMessageSize},
		{"MSG above configured cap", Framer{MaxChunkSize: 30}, msg, 0, 0, ErrInvalidMessageSize},
		{"HEL above URL limit", Framer{}, []byte{'H', 'E', 'L', 'F', 0, 0x20, 0, 0}, 0, 0, ErrInvalidMessageSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, need, err := tt.f.Next(tt.b)
			if n != tt.wantN || need != tt.wantNeed || !errors.Is(err, tt.wantErr) {
				t.Errorf("Next = (%d, %d, %v), want (%d, %d, %v)", n, need, err, tt.wantN, tt.wantNeed, tt.wantErr)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	s := samples()
	tests := []struct {
		name  string
		b     []byte
		check func(t *testing.T, m *Message)
	}{
		{"HEL", s["HEL"], func(t *testing.T, m *Message) {
			want(t, "type", m.Type, TypeHEL)
			want(t, "recv", m.ReceiveBufferSize, uint32(65536))
			want(t, "url", string(m.EndpointURL), testHello.EndpointURL)
		}},
		{"ACK", s["ACK"], func(t *testing.T, m *Message) { want(t, "send", m.SendBufferSize, uint32(65536)) }},
		{"ERR", s["ERR"], func(t *testing.T, m *Message) {
			want(t, "code", m.ErrorCode, uint32(0x807E0000))
			want(t, "reason", string(m.Reason), "Bad_TcpEndpointUrlInvalid")
		}},
		{"OPN request", s["OPN_req"], func(t *testing.T, m *Message) {
			want(t, "policy", m.Policy, PolicyNone)
			want(t, "uri", string(m.PolicyURI), PolicyNone.URI())
			want(t, "cert", m.SenderCertificateLen, -1)
			want(t, "service", m.Service, ServiceOpenSecureChannel)
			want(t, "typeid", m.TypeID, uint32(446))
			want(t, "mode", m.Mode, ModeNone)
			want(t, "reqid", m.RequestID, uint32(1))
		}},
		{"OPN response", s["OPN_resp"], func(t *testing.T, m *Message) {
			want(t, "response", m.Response, true)
			want(t, "typeid", m.TypeID, uint32(449))
			want(t, "channel", m.ChannelID, uint32(7))
			want(t, "token", m.TokenID, uint32(1))
		}},
		{"Read", s["MSG_read"], func(t *testing.T, m *Message) {
			want(t, "service", m.Service, ServiceRead)
			want(t, "nodes", m.NumNodes, 0)
			want(t, "seq", m.SequenceNumber, uint32(2))
		}},
		{"Write", s["MSG_write"], func(t *testing.T, m *Message) {
			want(t, "service", m.Service, ServiceWrite)
			want(t, "nodes", m.NumNodes, 2)
			want(t, "node0", m.Nodes[0].String(), "ns=2;s=Line1.Setpoint")
			want(t, "node1", m.Nodes[1].String(), "ns=3;i=70000")
		}},
		{"Call", s["MSG_call"], func(t *testing.T, m *Message) {
			want(t, "service", m.Service, ServiceCall)
			want(t, "method", m.Nodes[0].String(), "ns=2;s=Reset")
			want(t, "object", m.Objects[0].String(), "ns=2;i=1")
		}},
		{"Browse", s["MSG_browse"], func(t *testing.T, m *Message) { want(t, "typeid", m.TypeID, uint32(527)) }},
		{"Read response", s["MSG_resp"], func(t *testing.T, m *Message) {
			want(t, "result", m.ServiceResult, uint32(0x80340000))
			want(t, "hasresult", m.HasResult, true)
		}},
		{"CLO", s["CLO"], func(t *testing.T, m *Message) { want(t, "service", m.Service, ServiceCloseSecureChannel) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Message
			if err := m.Decode(tt.b); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			tt.check(t, &m)
		})
	}
}

func want[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
}

// TestDecodeResetsEveryField decodes a rich message, then a poor one, and
// compares with decoding the poor one into a fresh Message.
func TestDecodeResetsEveryField(t *testing.T) {
	s := samples()
	for name, b := range s {
		var reused, fresh Message
		_ = reused.Decode(s["MSG_call"])
		_ = reused.Decode(s["HEL"])
		_ = reused.Decode(s["MSG_write"])
		_ = reused.Decode(b)
		_ = fresh.Decode(b)
		if !reflect.DeepEqual(reused, fresh) {
			t.Errorf("%s: reused Message differs from a fresh one:\n got  %+v\n want %+v", name, reused, fresh)
		}
	}
}

func TestDecodeTruncatedEveryLength(t *testing.T) {
	for name, b := range samples() {
		for i := 0; i < len(b); i++ {
			var m Message
			err := m.Decode(b[:i])
			if err == nil {
				t.Errorf("%s cut to %d bytes: no error", name, i)
			}
			if (err != nil) != (m.Anomaly != AnomalyNone) || AnomalyOf(err) != m.Anomaly {
				t.Errorf("%s cut to %d: err %v, anomaly %v", name, i, err, m.Anomaly)
			}
		}
	}
}

// TestEncoderAgainstGopcua decodes our encoder's bodies with gopcua's ua
// package (an independent implementation) to check both ends agree.
func TestEncoderAgainstGopcua(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		want uint32
	}{
		{"read", AppendReadRequest(nil, 1, setpoint), 631},
		{"write", AppendWriteRequest(nil, 1, WriteValue{setpoint, 3}), 673},
		{"call", AppendCallRequest(nil, 1, CallMethod{Numeric(2, 1), StringID(2, "Reset"), []float64{1}}), 712},
		{"browse", AppendBrowseRequest(nil, 1, Numeric(0, 85)), 527},
		{"read response", AppendResponse(nil, ServiceRead, 1, 0), 634},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, v, err := gopcuaDecode(tt.body)
			if err != nil {
				t.Fatalf("gopcua: %v", err)
			}
			if id != tt.want {
				t.Errorf("type id %d, want %d", id, tt.want)
			}
			switch r := v.(type) {
			case *ua.WriteRequest:
				if len(r.NodesToWrite) != 1 || r.NodesToWrite[0].NodeID.String() != "ns=2;s=Line1.Setpoint" {
					t.Errorf("gopcua sees %v", r.NodesToWrite)
				}
			case *ua.CallRequest:
				if len(r.MethodsToCall) != 1 || r.MethodsToCall[0].MethodID.String() != "ns=2;s=Reset" {
					t.Errorf("gopcua sees %v", r.MethodsToCall)
				}
			}
		})
	}
}

// gopcuaDecode wraps ua.DecodeService, which can panic on hostile input.
func gopcuaDecode(b []byte) (id uint32, v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errors.New("gopcua panicked")
		}
	}()
	eid, v, err := ua.DecodeService(b)
	if err != nil {
		return 0, nil, err
	}
	return eid.NodeID.IntID(), v, nil
}

func TestServiceByName(t *testing.T) {
	tests := []struct {
		in   string
		want Service
		ok   bool
	}{
		{"read", ServiceRead, true},
		{"write", ServiceWrite, true},
		{"browse_next", ServiceBrowseNext, true},
		{"BrowseNext", ServiceBrowseNext, true},
		{"translate_browse_paths", ServiceTranslateBrowsePaths, true},
		{"TranslateBrowsePathsToNodeIds", ServiceTranslateBrowsePaths, true},
		{"create_monitored_items", ServiceCreateMonitoredItems, true},
		{"631", ServiceRead, true},
		{"634", ServiceUnknown, false}, // a response id is not a service name
		{"frobnicate", ServiceUnknown, false},
	}
	for _, tt := range tests {
		got, ok := ServiceByName(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ServiceByName(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	for s := Service(1); s < serviceCount; s++ {
		got, ok := ServiceByName(s.String())
		if !ok || got != s {
			t.Errorf("ServiceByName(%q) = %v, %v", s.String(), got, ok)
		}
		if id := s.ResponseTypeID(); id != 0 {
			if g, resp, ok := ServiceByTypeID(id); g != s || !resp || !ok {
				t.Errorf("ServiceByTypeID(%d) = %v %v %v", id, g, resp, ok)
			}
		}
	}
}

func TestNodeIDText(t *testing.T) {
	for _, s := range []string{"i=85", "ns=2;s=Line1.Setpoint", "ns=1;i=4000000000",
		"ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a", "ns=3;b=M/RbKBsRVkePCePcx24oRA=="} {
		n, err := ParseNodeID(s)
		if err != nil {
			t.Errorf("ParseNodeID(%q): %v", s, err)
			continue
		}
		if got := n.String(); got != s {
			t.Errorf("round trip %q -> %q", s, got)
		}
		var m Message
		b := AppendMessage(nil, ChunkFinal, tHdr, AppendWriteRequest(nil, 1, WriteValue{n, 0}))
		if err := m.Decode(b); err != nil || m.NumNodes != 1 || !m.Nodes[0].Equal(n) {
			t.Errorf("%s: wire round trip: err %v nodes %v", s, err, m.NodeList())
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"", `bad NodeId "" (want [ns=N;]i=|s=|g=|b=)`},
		{"ns=2", `bad NodeId "ns=2": missing ';' after namespace`},
		{"ns=x;i=1", `bad NodeId "ns=x;i=1": namespace "x"`},
		{"q=1", `bad NodeId "q=1" (want [ns=N;]i=|s=|g=|b=)`},
		{"i=-1", `bad NodeId "i=-1": numeric id "-1"`},
		{"g=123", `bad NodeId "g=123": GUID "123"`},
		{"s=", `bad NodeId "s=": empty string id`},
		{"b=!!", `bad NodeId "b=!!": opaque id is not base64`},
	} {
		_, err := ParseNodeID(tt.in)
		if err == nil {
			t.Errorf("ParseNodeID(%q) accepted", tt.in)
			continue
		}
		if !errors.Is(err, ErrBadNodeIDString) || err.Error() != tt.want {
			t.Errorf("ParseNodeID(%q): error %q (Is ErrBadNodeIDString: %v), want %q", tt.in, err, errors.Is(err, ErrBadNodeIDString), tt.want)
		}
	}
}

func TestAnomalyNames(t *testing.T) {
	seen := map[string]bool{}
	for a := AnomalyNone + 1; a < anomalyCount; a++ {
		name := a.String()
		if name == "" || seen[name] {
			t.Errorf("anomaly %d: bad or duplicate name %q", a, name)
		}
		seen[name] = true
		if got, ok := AnomalyByName(name); !ok || got != a {
			t.Errorf("AnomalyByName(%q) = %v", name, got)
		}
		if AnomalyOf(a.Err()) != a {
			t.Errorf("AnomalyOf(%v.Err()) mismatch", a)
		}
	}
}

// secureOpen returns an OPN chunk under policy whose part after the
// security header is random bytes, as an encrypted OPN looks.
func secureOpen(policy SecurityPolicy, channelID uint32) []byte {
	b, s := startChunk(nil, "OPN", ChunkFinal)
	b = appendU32(b, channelID)
	b = appendString(b, policy.URI())
	b = appendString(b, string(make([]byte, 900))) // certificate
	b = appendString(b, string(make([]byte, 20)))  // thumbprint
	junk := make([]byte, 256)
	rand.Read(junk)
	return endChunk(append(b, junk...), s)
}

func TestChannelInfersMode(t *testing.T) {
	random := make([]byte, 200)
	rand.Read(random)
	random[0] = 0x07 // not a NodeId encoding: cannot be a plaintext body
	tests := []struct {
		name        string
		body        []byte
		wantMode    SecurityMode
		wantService Service
	}{
		{"readable body means Sign", AppendReadRequest(nil, 2, setpoint), ModeSign, ServiceRead},
		{"unreadable body means SignAndEncrypt", random, ModeSignAndEncrypt, ServiceUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Channel
			var m Message
			steps := []struct {
				dir protocols.Dir
				b   []byte
			}{
				{protocols.Request, AppendHello(nil, testHello)},
				{protocols.Response, AppendAcknowledge(nil, testAck)},
				{protocols.Request, secureOpen(PolicyBasic256Sha256, 0)},
				{protocols.Response, secureOpen(PolicyBasic256Sha256, 9)},
			}
			for i, s := range steps {
				if err := c.Decode(s.dir, s.b, &m); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			if !m.Encrypted || m.HasTypeID {
				t.Errorf("secured OPN: Encrypted %v HasTypeID %v", m.Encrypted, m.HasTypeID)
			}
			h := SecureHeader{ChannelID: 9, TokenID: 1, SequenceNumber: 2, RequestID: 2}
			body := append(append([]byte(nil), tt.body...), make([]byte, 32)...) // + signature
			if err := c.Decode(protocols.Request, AppendMessage(nil, ChunkFinal, h, body), &m); err != nil {
				t.Fatalf("MSG: %v", err)
			}
			mode, inferred := c.Mode()
			want(t, "mode", mode, tt.wantMode)
			want(t, "inferred", inferred, true)
			want(t, "service", m.Service, tt.wantService)
			want(t, "message mode", m.Mode, tt.wantMode)
			want(t, "policy", m.Policy, PolicyBasic256Sha256)
			want(t, "encrypted", m.Encrypted, tt.wantMode == ModeSignAndEncrypt)
		})
	}
}

func TestChannelNegotiatedChunkSize(t *testing.T) {
	var c Channel
	var m Message
	ack := testAck
	ack.ReceiveBufferSize = 8192
	_ = c.Decode(protocols.Request, AppendHello(nil, testHello), &m)
	_ = c.Decode(protocols.Response, AppendAcknowledge(nil, ack), &m)
	_ = c.Decode(protocols.Request, AppendOpenRequest(nil, SecureHeader{SequenceNumber: 1, RequestID: 1}, ModeNone), &m)
	_ = c.Decode(protocols.Response, AppendOpenResponse(nil, SecureHeader{ChannelID: 7, SequenceNumber: 1, RequestID: 1}, 1), &m)
	nodes := make([]NodeID, 400)
	for i := range nodes {
		nodes[i] = StringID(2, "Line1.SomewhatLongNodeName")
	}
	big := AppendMessage(nil, ChunkFinal, tHdr, AppendReadRequest(nil, 2, nodes...))
	err := c.Decode(protocols.Request, big, &m)
	if !errors.Is(err, ErrInvalidMessageSize) || m.Service != ServiceRead {
		t.Errorf("chunk of %d bytes over an 8192-byte buffer: err %v, service %v", len(big), err, m.Service)
	}
}

func TestAllocs(t *testing.T) {
	s := samples()
	var f Framer
	var m Message
	for name, b := range s {
		if n := testing.AllocsPerRun(100, func() { _, _, _ = f.Next(b) }); n != 0 {
			t.Errorf("Framer.Next(%s): %v allocs", name, n)
		}
		if n := testing.AllocsPerRun(100, func() { _ = m.Decode(b) }); n != 0 {
			t.Errorf("Message.Decode(%s): %v allocs", name, n)
		}
	}
	// Channel.Decode on a multi-chunk Write once its buffer has grown.
	var c Channel
	chunks := AppendChunks(nil, tHdr, AppendWriteRequest(nil, 2, WriteValue{setpoint, 1}, WriteValue{setpoint, 2}), 30)
	c.state, c.policy, c.mode, c.channelID, c.haveID = stOpen, PolicyNone, ModeNone, 7, true
	run := func() {
		for b := chunks; len(b) > 0; {
			n, _, _ := f.Next(b)
			_ = c.Decode(protocols.Request, b[:n], &m)
			b = b[n:]
		}
	}
	run()
	if m.NumNodes != 2 {
		t.Fatalf("reassembled Write: %d nodes", m.NumNodes)
	}
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("Channel.Decode multi-chunk: %v allocs", n)
	}
}

// TestChannelBudgetChargesGrowthGarbage: a Write body buffer costs
// Budget twice its capacity (the buffer and the garbage its growth left),
// a refused growth fails the message as message_too_large, and the end of
// a large message gives every byte back.
func TestChannelBudgetChargesGrowthGarbage(t *testing.T) {
	var f Framer
	var m Message
	vals := make([]WriteValue, 3000)
	for i := range vals {
		vals[i] = WriteValue{setpoint, float64(i)}
	}
	body := AppendWriteRequest(nil, 2, vals...)
	chunks := AppendChunks(nil, tHdr, body, 8192)
	feed := func(c *Channel) (last Anomaly) {
		for b := chunks; len(b) > 0; {
			n, _, _ := f.Next(b)
			_ = c.Decode(protocols.Request, b[:n], &m)
			if m.Anomaly != AnomalyNone {
				last = m.Anomaly
			}
			b = b[n:]
		}
		return last
	}
	open := func(c *Channel) {
		c.state, c.policy, c.mode, c.channelID, c.haveID = stOpen, PolicyNone, ModeNone, 7, true
	}

	var charged, peak int64
	var c Channel
	c.Budget = func(d int64) bool { charged += d; peak = max(peak, charged); return true }
	open(&c)
	feed(&c)
	if m.Service != ServiceWrite {
		t.Fatalf("reassembled message: service %v", m.Service)
	}
	// The buffer grew by doubling from 4 KiB to the first power of two
	// times 4 KiB that holds the body.
	want := int64(4096)
	for want < int64(len(body)) {
		want *= 2
	}
	if peak != 2*want {
		t.Errorf("peak charge %d for a %d-byte body, want %d (twice the %d-byte buffer)", peak, len(body), 2*want, want)
	}
	if charged != 0 {
		t.Errorf("%d bytes still charged after the message ended", charged)
	}

	// A budget that holds the buffer but not its garbage refuses.
	var d Channel
	charged = 0
	d.Budget = func(delta int64) bool {
		if charged+delta > want+want/2 {
			return false
		}
		charged += delta
		return true
	}
	open(&d)
	if a := feed(&d); a != AnomalyMessageTooLarge {
		t.Errorf("buffer over the budget: anomaly %v, want message_too_large", a)
	}
	// The buffer it had (keepBuffer) stays for the next message, until
	// Release.
	if charged != 2*keepBuffer {
		t.Errorf("%d bytes charged after the refused message, want %d (the kept %d-byte buffer)", charged, 2*keepBuffer, keepBuffer)
	}
	d.Release()
	if charged != 0 {
		t.Errorf("%d bytes still charged after Release", charged)
	}
}
