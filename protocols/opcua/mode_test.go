package opcua

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/otgw/otgw/protocols"
)

// The tests of this file drive a Channel through an encrypted OPN
// (Basic256Sha256) and check how the MessageSecurityMode is inferred and
// kept consistent (see Channel).

const sigLen = 32 // HMAC-SHA256, Basic256Sha256

// secureChannel returns a Channel after HEL/ACK and an encrypted OPN
// exchange under Basic256Sha256 (channel 7).
func secureChannel(t *testing.T) *Channel {
	t.Helper()
	var c Channel
	var m Message
	fill := pattern(99)
	for i, s := range []struct {
		dir protocols.Dir
		b   []byte
	}{
		{protocols.Request, AppendHello(nil, testHello)},
		{protocols.Response, AppendAcknowledge(nil, testAck)},
		{protocols.Request, encryptedOpen(PolicyBasic256Sha256, 0, fill)},
		{protocols.Response, encryptedOpen(PolicyBasic256Sha256, 7, fill)},
	} {
		if err := c.Decode(s.dir, s.b, &m); err != nil {
			t.Fatalf("handshake step %d: %v", i, err)
		}
	}
	if mode, _ := c.Mode(); mode != ModeInvalid {
		t.Fatalf("mode %v before any MSG", mode)
	}
	return &c
}

// signed returns a mode-Sign MSG chunk: h, body, a signature.
func signed(h SecureHeader, body []byte, fill func([]byte) []byte) []byte {
	body = append(append([]byte(nil), body...), fill(make([]byte, sigLen))...)
	return AppendMessage(nil, ChunkFinal, h, body)
}

// ciphered returns a SignAndEncrypt-looking MSG chunk of channel 7: after
// the symmetric security header, blocks*16 bytes from fill (the encrypted
// sequence header, body, padding and signature).
func ciphered(blocks int, fill func([]byte) []byte) []byte {
	b, s := startChunk(nil, "MSG", ChunkFinal)
	b = appendU32(b, 7)
	b = appendU32(b, 1)
	ct := fill(make([]byte, 16*blocks))
	ct[8] = 0x07 // where a plaintext body's type id would start: no NodeId encoding
	return endChunk(append(b, ct...), s)
}

func hdr(seq, req uint32) SecureHeader {
	return SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: seq, RequestID: req}
}

// TestChannelInfersModeFirstChunk: the first MSG after an encrypted OPN
// decides the mode on plaintext evidence.
func TestChannelInfersModeFirstChunk(t *testing.T) {
	fill := pattern(3)
	unknownWithHeader := append(AppendNodeID(nil, Numeric(0, 9999)), AppendRequest(nil, ServiceRead, 2)[4:]...)
	randomBody := fill(make([]byte, 100))
	randomBody[0] = 0x07
	tests := []struct {
		name    string
		chunk   []byte
		mode    SecurityMode
		anomaly Anomaly
	}{
		{"known request means Sign", signed(hdr(52, 2), AppendReadRequest(nil, 2, setpoint), fill), ModeSign, AnomalyNone},
		{"unknown type id with a RequestHeader means Sign", signed(hdr(52, 2), unknownWithHeader, fill), ModeSign, AnomalyUnknownService},
		{"length not whole blocks means Sign", signed(hdr(52, 2), randomBody, fill), ModeSign, AnomalyBadNodeID},
		{"whole blocks that do not read means SignAndEncrypt", ciphered(8, fill), ModeSignAndEncrypt, AnomalyNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := secureChannel(t)
			var m Message
			err := c.Decode(protocols.Request, tt.chunk, &m)
			want(t, "anomaly", m.Anomaly, tt.anomaly)
			want(t, "err", AnomalyOf(err), tt.anomaly)
			mode, inferred := c.Mode()
			want(t, "mode", mode, tt.mode)
			want(t, "inferred", inferred, true)
			want(t, "message mode", m.Mode, tt.mode)
			want(t, "encrypted", m.Encrypted, tt.mode == ModeSignAndEncrypt)
		})
	}
}

// TestChannelModeMismatch: a channel inferred SignAndEncrypt whose later
// chunk shows plaintext is security_mode_mismatch; the chunk is decoded
// as plaintext (its service and NodeIds are known) and the channel is
// Sign from then on.
func TestChannelModeMismatch(t *testing.T) {
	fill := pattern(5)
	write := AppendWriteRequest(nil, 3, WriteValue{StringID(2, "Line1.Forbidden"), 1})
	pad := func(body []byte) []byte {
		// body + signature after the sequence header: whole blocks, so
		// that only the sequence number or the body can tell.
		for (8+len(body)+sigLen)%16 != 0 {
			body = append(body, 0)
		}
		return body
	}
	tests := []struct {
		name  string
		chunk []byte
	}{
		{"sequence number continues", signed(hdr(53, 3), pad(append([]byte{0x07}, fill(make([]byte, 60))...)), fill)},
		{"Write continues the sequence number", signed(hdr(53, 3), pad(write), fill)},
		{"Write with a sequence number that does not continue", signed(hdr(900, 3), pad(write), fill)},
		{"length not whole blocks", signed(hdr(900, 3), append(write, 1), fill)},
		{"Write whose type id has flag bits, read as expanded", signed(hdr(900, 3), pad(flagged(write, 0x40)), fill)},
		{"Write whose type id has flag bits, ignored", signed(hdr(900, 3), pad(flagged(write, 0x80)), fill)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := secureChannel(t)
			var m Message
			first := ciphered(8, fill)
			binary.LittleEndian.PutUint32(first[16:], 52) // as if the sequence number were plaintext
			if err := c.Decode(protocols.Request, first, &m); err != nil {
				t.Fatalf("first MSG: %v", err)
			}
			if mode, _ := c.Mode(); mode != ModeSignAndEncrypt {
				t.Fatalf("first MSG: mode %v, want SignAndEncrypt", mode)
			}
			err := c.Decode(protocols.Request, tt.chunk, &m)
			if !errors.Is(err, ErrSecurityModeMismatch) {
				t.Fatalf("err %v, want security_mode_mismatch", err)
			}
			mode, inferred := c.Mode()
			want(t, "mode", mode, ModeSign)
			want(t, "inferred", inferred, true)
			want(t, "message mode", m.Mode, ModeSign)
			want(t, "encrypted", m.Encrypted, false)
			if m.Service == ServiceWrite && m.Anomaly == AnomalySecurityModeMismatch && m.NumNodes > 0 {
				if m.NumNodes != 1 || m.Nodes[0].String() != "ns=2;s=Line1.Forbidden" {
					t.Errorf("Write nodes %v", m.NodeList())
				}
			}
			// From then on the channel is read as plaintext, for good.
			err = c.Decode(protocols.Request, signed(hdr(1000, 4), AppendReadRequest(nil, 4, setpoint), fill), &m)
			if err != nil || m.Service != ServiceRead || m.Encrypted || m.Mode != ModeSign {
				t.Errorf("next chunk: err %v service %v encrypted %v mode %v", err, m.Service, m.Encrypted, m.Mode)
			}
			err = c.Decode(protocols.Request, ciphered(8, fill), &m)
			if err == nil || m.Encrypted {
				t.Errorf("ciphertext after the mismatch: err %v encrypted %v, want read as plaintext and refused", err, m.Encrypted)
			}
		})
	}
}

// TestChannelSignAndEncryptStays: legitimate SignAndEncrypt traffic in
// both directions, across a token renewal, raises nothing: ciphertext of
// whole blocks whose sequence number field does not continue.
func TestChannelSignAndEncryptStays(t *testing.T) {
	c := secureChannel(t)
	var m Message
	fill := pattern(11)
	for i := range 2000 {
		dir := protocols.Request
		if i%2 == 1 {
			dir = protocols.Response
		}
		b := ciphered(1+i%40, fill)
		if i == 1000 {
			b = encryptedOpen(PolicyBasic256Sha256, 7, fill) // renewal
		}
		if err := c.Decode(dir, b, &m); err != nil {
			t.Fatalf("chunk %d (%v): %v", i, dir, err)
		}
		if m.Type == TypeMSG && (!m.Encrypted || m.HasTypeID) {
			t.Fatalf("chunk %d: encrypted %v type id %v", i, m.Encrypted, m.HasTypeID)
		}
	}
	mode, inferred := c.Mode()
	want(t, "mode", mode, ModeSignAndEncrypt)
	want(t, "inferred", inferred, true)
}

// TestChannelModeMismatchAfterRenewal: an encrypted OPN renewal takes one
// sequence number (§6.7.2.4): a plaintext chunk after it still counts as
// continuing the client's numbers.
func TestChannelModeMismatchAfterRenewal(t *testing.T) {
	c := secureChannel(t)
	var m Message
	fill := pattern(13)
	first := ciphered(8, fill)
	binary.LittleEndian.PutUint32(first[16:], 52)
	_ = c.Decode(protocols.Request, first, &m)
	if err := c.Decode(protocols.Request, encryptedOpen(PolicyBasic256Sha256, 7, fill), &m); err != nil {
		t.Fatalf("renewal: %v", err)
	}
	body := append([]byte{0x07}, fill(make([]byte, 63))...)
	if err := c.Decode(protocols.Request, signed(hdr(54, 3), body, fill), &m); !errors.Is(err, ErrSecurityModeMismatch) {
		t.Fatalf("plaintext after the renewal: err %v, want security_mode_mismatch", err)
	}
}

// TestChannelServerShowsPlaintext: the server's plaintext answer (a
// ServiceFault to an unknown request) on a channel inferred
// SignAndEncrypt is a mismatch as well.
func TestChannelServerShowsPlaintext(t *testing.T) {
	c := secureChannel(t)
	var m Message
	fill := pattern(17)
	_ = c.Decode(protocols.Request, ciphered(8, fill), &m)
	fault := AppendNodeID(nil, Numeric(0, ServiceFault.ResponseTypeID()))
	fault = appendResponseHeader(fault, 2, 0x800B0000)
	fault = append(fault, make([]byte, 16-(8+len(fault)+sigLen)%16)...) // whole blocks
	err := c.Decode(protocols.Response, signed(hdr(1, 2), fault, fill), &m)
	if !errors.Is(err, ErrSecurityModeMismatch) || m.Service != ServiceFault {
		t.Fatalf("err %v service %v, want security_mode_mismatch on a service_fault", err, m.Service)
	}
}

// TestChannelSignStaysRead: a channel inferred Sign whose later chunks
// look like ciphertext keeps reading them as plaintext; they do not
// decode, so they carry an anomaly and no service (the gateway refuses
// them).
func TestChannelSignStaysRead(t *testing.T) {
	c := secureChannel(t)
	var m Message
	fill := pattern(19)
	if err := c.Decode(protocols.Request, signed(hdr(52, 2), AppendReadRequest(nil, 2, setpoint), fill), &m); err != nil {
		t.Fatalf("Read: %v", err)
	}
	for i := range 50 {
		err := c.Decode(protocols.Request, ciphered(2+i, fill), &m)
		if err == nil || m.Encrypted || m.Mode != ModeSign || m.Service != ServiceUnknown {
			t.Fatalf("ciphertext-looking chunk %d: err %v encrypted %v mode %v service %v", i, err, m.Encrypted, m.Mode, m.Service)
		}
	}
}

func TestNextSeq(t *testing.T) {
	for _, tt := range []struct {
		prev, next uint32
		want       bool
	}{
		{1, 2, true}, {1, 1, false}, {1, 3, false}, {2, 1, false},
		{math.MaxUint32, 0, true},           // non-legacy numbering
		{math.MaxUint32 - 1023, 1, true},    // legacy wrap (gopcua)
		{math.MaxUint32 - 1024, 1, false},   // not yet allowed to wrap
		{math.MaxUint32 - 100, 1024, false}, // wraps below 1024 only
		{math.MaxUint32 - 1023, 1023, true},
	} {
		if got := nextSeq(tt.prev, tt.next); got != tt.want {
			t.Errorf("nextSeq(%d, %d) = %v", tt.prev, tt.next, got)
		}
	}
}

// TestChannelModeAllocs: the evidence checks allocate nothing.
func TestChannelModeAllocs(t *testing.T) {
	c := secureChannel(t)
	var m Message
	fill := pattern(23)
	chunks := [][]byte{ciphered(8, fill), ciphered(3, fill), ciphered(20, fill)}
	_ = c.Decode(protocols.Request, chunks[0], &m)
	i := 0
	if n := testing.AllocsPerRun(200, func() {
		_ = c.Decode(protocols.Request, chunks[i%len(chunks)], &m)
		i++
	}); n != 0 {
		t.Errorf("Channel.Decode on SignAndEncrypt: %v allocs", n)
	}
	s := secureChannel(t)
	read := signed(hdr(52, 2), AppendReadRequest(nil, 2, setpoint), fill)
	if n := testing.AllocsPerRun(200, func() {
		*s = Channel{}
		s.state, s.policy = stOpen, PolicyBasic256Sha256
		_ = s.Decode(protocols.Request, read, &m)
	}); n != 0 {
		t.Errorf("Channel.Decode inferring Sign: %v allocs", n)
	}
}

// flagged returns body (starting with a FourByte type id) with ExpandedNodeId
// flag bits set in the type id: 0x40 ServerIndex (a UInt32 is inserted
// after the id, for decoders that read it), 0x80 NamespaceUri (nothing
// inserted: for decoders that ignore the flags).
func flagged(body []byte, flag byte) []byte {
	out := append([]byte{body[0] | flag}, body[1:4]...)
	if flag == 0x40 {
		out = append(out, 0, 0, 0, 0)
	}
	return append(out, body[4:]...)
}

func TestBodyEvidence(t *testing.T) {
	write := AppendWriteRequest(nil, 3, WriteValue{setpoint, 1})
	unknown := append(AppendNodeID(nil, Numeric(0, 9999)), write[4:]...)
	resp := AppendResponse(nil, ServiceWrite, 3, 0)
	garbage := pattern(29)(make([]byte, 64))
	garbage[0] = 0x07
	for _, tt := range []struct {
		name          string
		body          []byte
		response      bool
		known, header bool
	}{
		{"Write", write, false, true, true},
		{"Write as a response", write, true, false, false},
		{"Write response", resp, true, true, true},
		{"unknown type id with header", unknown, false, false, true},
		{"type id only", write[:4], false, true, false},
		{"flags ignored", flagged(write, 0x80), false, true, true},
		{"flags honoured", flagged(write, 0x40), false, true, true},
		{"garbage", garbage, false, false, false},
		{"empty", nil, false, false, false},
	} {
		known, header := bodyEvidence(tt.body, tt.response)
		if known != tt.known || header != tt.header {
			t.Errorf("%s: known %v header %v, want %v %v", tt.name, known, header, tt.known, tt.header)
		}
	}
}

// FuzzSecureChannel feeds arbitrary chunks to a Channel past an encrypted
// OPN (the mode inference and its checks): it must not panic, and a chunk
// read as ciphertext names no service.
func FuzzSecureChannel(f *testing.F) {
	fill := pattern(31)
	f.Add(ciphered(8, fill), signed(hdr(53, 3), AppendWriteRequest(nil, 3, WriteValue{setpoint, 1}), fill), uint8(0))
	f.Add(signed(hdr(52, 2), AppendReadRequest(nil, 2, setpoint), fill), ciphered(4, fill), uint8(3))
	f.Fuzz(func(t *testing.T, a, b []byte, dirs uint8) {
		c := secureChannel(t)
		var m Message
		for i, chunk := range [][]byte{a, b, a, b} {
			dir := protocols.Request
			if dirs>>i&1 != 0 {
				dir = protocols.Response
			}
			_ = c.Decode(dir, chunk, &m)
			if m.Encrypted && (m.HasTypeID || m.NumNodes != 0) {
				t.Fatalf("chunk %d: encrypted yet type id %v, %d nodes", i, m.HasTypeID, m.NumNodes)
			}
		}
	})
}

// TestChannelNoneClaimingEncrypt: an OPN under policy None that asks for
// SignAndEncrypt is bad_security_mode, and the channel stays mode None:
// its bodies are plaintext, read and judged.
func TestChannelNoneClaimingEncrypt(t *testing.T) {
	var c Channel
	var m Message
	_ = c.Decode(protocols.Request, AppendHello(nil, testHello), &m)
	_ = c.Decode(protocols.Response, AppendAcknowledge(nil, testAck), &m)
	err := c.Decode(protocols.Request, AppendOpenRequest(nil, SecureHeader{SequenceNumber: 1, RequestID: 1}, ModeSignAndEncrypt), &m)
	if !errors.Is(err, ErrBadSecurityMode) {
		t.Fatalf("OPN: err %v, want bad_security_mode", err)
	}
	_ = c.Decode(protocols.Response, AppendOpenResponse(nil, SecureHeader{ChannelID: 7, SequenceNumber: 1, RequestID: 1}, 1), &m)
	err = c.Decode(protocols.Request, AppendMessage(nil, ChunkFinal, tHdr, AppendWriteRequest(nil, 2, WriteValue{setpoint, 1})), &m)
	if err != nil || m.Encrypted || m.Mode != ModeNone || m.Service != ServiceWrite || m.NumNodes != 1 {
		t.Fatalf("MSG: err %v encrypted %v mode %v service %v nodes %d", err, m.Encrypted, m.Mode, m.Service, m.NumNodes)
	}
	if mode, inferred := c.Mode(); mode != ModeNone || inferred {
		t.Errorf("channel mode %v inferred %v", mode, inferred)
	}
}
