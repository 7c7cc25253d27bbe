package gateway

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/simulate/capture"
)

// opcuaSecureConduit allows read and writes to one node over signed or
// encrypted channels only; %s is the tolerate list.
const opcuaSecureConduit = `  - name: hmi-ua
    from: hmi
    to: ua
    rules:
      - opcua:
          min_security_mode: sign
          security_policies: [Basic256Sha256]
          tolerate: [%s]
          allow:
            - service: read
            - service: write
              nodes: ["ns=2;s=Line1.Setpoint"]
`

// uaSigLen is the HMAC-SHA256 signature that ends every Basic256Sha256
// chunk in mode Sign (OPC 10000-7).
const uaSigLen = 32

// encryptedOPN is an OPN chunk under Basic256Sha256 whose part after the
// asymmetric security header is random, as an encrypted OPN looks (OPC
// 10000-6 §6.7.2.3): the gateway cannot read the requested mode.
func encryptedOPN(rng *rand.Rand, channelID uint32) []byte {
	var b []byte
	b = append(b, "OPNF"...)
	b = binary.LittleEndian.AppendUint32(b, 0) // size, set below
	b = binary.LittleEndian.AppendUint32(b, channelID)
	uri := opcua.PolicyBasic256Sha256.URI()
	b = binary.LittleEndian.AppendUint32(b, uint32(len(uri)))
	b = append(b, uri...)
	b = binary.LittleEndian.AppendUint32(b, 600) // SenderCertificate
	b = append(b, make([]byte, 600)...)
	b = binary.LittleEndian.AppendUint32(b, 20) // ReceiverCertificateThumbprint
	b = append(b, make([]byte, 20)...)
	junk := make([]byte, 512)
	for i := range junk {
		junk[i] = byte(rng.Uint32())
	}
	b = append(b, junk...)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
	return b
}

// signedMSG is a mode-Sign MSG chunk: plaintext sequence header and body,
// then a signature (the gateway does not verify it).
func signedMSG(rng *rand.Rand, h opcua.SecureHeader, body []byte) []byte {
	sig := make([]byte, uaSigLen)
	for i := range sig {
		sig[i] = byte(rng.Uint32())
	}
	return opcua.AppendMessage(nil, opcua.ChunkFinal, h, append(append([]byte(nil), body...), sig...))
}

// encryptedMSG is a mode-SignAndEncrypt MSG chunk: after the symmetric
// security header, n random bytes (n a multiple of the AES block) stand
// for the encrypted sequence header, body, padding and signature.
func encryptedMSG(rng *rand.Rand, channelID, tokenID uint32, n int) []byte {
	var b []byte
	b = append(b, "MSGF"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(16+n))
	b = binary.LittleEndian.AppendUint32(b, channelID)
	b = binary.LittleEndian.AppendUint32(b, tokenID)
	for range n {
		b = append(b, byte(rng.Uint32()))
	}
	return b
}

// uaSecureRig opens a Basic256Sha256 channel (encrypted OPN both ways)
// through a rig and returns it with the flow.
func uaSecureRig(t *testing.T, rng *rand.Rand, tolerate string, port int) (*rig, *capture.TCPFlow) {
	t.Helper()
	r := newRig(t, policy(t, "enforce", "reset", "", fmt.Sprintf(opcuaSecureConduit, tolerate)), nil)
	f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP(fmt.Sprintf("192.0.2.130:%d", port))}, uaEP)
	r.handshake(f)
	hello := opcua.Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536, EndpointURL: "opc.tcp://192.0.2.30:4840"}
	r.uaOpen(f, opcua.AppendHello(nil, hello), opcua.AppendAcknowledge(nil, hello), encryptedOPN(rng, 0), encryptedOPN(rng, 7))
	return r, f
}

// uaOpen passes the opening of an OPC UA channel through r on f (the
// client's HEL, the server's ACK, the client's OPN and the server's OPN
// response, in that order) and asserts that each is forwarded unchanged to
// the other side.
func (r *rig) uaOpen(f *capture.TCPFlow, hel, ack, opn, opnResp []byte) {
	r.t.Helper()
	for i, s := range []struct {
		client bool
		b      []byte
	}{{true, hel}, {false, ack}, {true, opn}, {false, opnResp}} {
		fr := f.Send(s.client, s.b)
		in, out := North, South
		if !s.client {
			in, out = South, North
		}
		got := r.handle(in, fr)
		if len(got) != 1 {
			r.t.Fatalf("OPC UA opening step %d: got %s (%v)", i, describe(got), r.counters().DropsByName())
		}
		r.mustForward(got, out, fr)
	}
}

// crossed returns how many payload bytes of the client's frame reached
// the server.
func crossed(t *testing.T, got []sent) int {
	n := 0
	for _, s := range got {
		if s.out == South {
			n += len(decode(t, s.frame).payload)
		}
	}
	return n
}

// TestOPCUAInferredEncryptEvasion: on a channel whose OPN is encrypted the
// gateway infers the mode from the MSGs. A client in mode Sign whose
// first MSG is something the service table does not know (an unknown type
// id, or bytes that look random) must not get the channel judged
// SignAndEncrypt for good: its later plaintext Write to a forbidden node
// must be refused, even when the policy tolerates the anomalies the
// bodies raise. Before the fix the Write crossed as an opaque body.
func TestOPCUAInferredEncryptEvasion(t *testing.T) {
	forbidden := opcua.AppendWriteRequest(nil, 3, opcua.WriteValue{Node: opcua.StringID(2, "Line1.Forbidden"), Value: 1})
	randomBody := func(rng *rand.Rand) []byte {
		body := make([]byte, 16*8-8-uaSigLen) // sequence header + body + signature: 8 blocks
		for i := range body {
			body[i] = byte(rng.Uint32())
		}
		body[0] = 0x07 // not a NodeId encoding
		return body
	}
	for i, tc := range []struct {
		name, tolerate string
		first          func(rng *rand.Rand) []byte // body of the first MSG (before the signature)
		firstCrosses   bool                        // the first MSG passes (it looks like ciphertext)
		reason         string                      // of the last deny
	}{
		{"unknown type id", "gap", func(*rand.Rand) []byte {
			body := opcua.AppendNodeID(nil, opcua.Numeric(0, 9999))
			return append(body, opcua.AppendRequest(nil, opcua.ServiceRead, 2)[4:]...) // + RequestHeader
		}, false, "malformed:unknown_service"},
		{"random bytes, whole blocks", "gap", randomBody, true, "malformed:security_mode_mismatch"},
		{"random bytes, body anomalies tolerated", "unknown_service, bad_node_id, truncated, bad_encoding", randomBody, true, "malformed:security_mode_mismatch"},
		{"random bytes, mismatch tolerated", "security_mode_mismatch", randomBody, true, "node_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			r, f := uaSecureRig(t, rng, tc.tolerate, 40300+i)
			h := opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 52, RequestID: 2}
			first := signedMSG(rng, h, tc.first(rng))
			got := r.client(f.Send(true, first))
			if c := crossed(t, got) == len(first); c != tc.firstCrosses {
				t.Fatalf("first MSG crossed %v, want %v (%s)", c, tc.firstCrosses, describe(got))
			}
			h.SequenceNumber, h.RequestID = 53, 3
			write := signedMSG(rng, h, forbidden)
			got = r.client(f.Send(true, write))
			if n := crossed(t, got); n == len(write) {
				t.Fatalf("the plaintext Write to a forbidden node crossed (%d bytes: %s)", n, describe(got))
			}
			ev := r.lastEvent()
			if ev == nil || ev.Verdict != "deny" || ev.Reason != tc.reason {
				t.Fatalf("event %+v, want a deny for %s", ev, tc.reason)
			}
		})
	}
}

// TestOPCUAInferredModeLegit: legitimate channels under Basic256Sha256
// keep working. SignAndEncrypt: every chunk both ways crosses unread.
// Sign: allowed services cross, a Write to a forbidden node is refused
// for its node.
func TestOPCUAInferredModeLegit(t *testing.T) {
	t.Run("SignAndEncrypt", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 7))
		r, f := uaSecureRig(t, rng, "gap", 40310)
		for i := range 40 {
			fr := f.Send(true, encryptedMSG(rng, 7, 1, 16*(3+rng.IntN(30))))
			r.mustForward(r.client(fr), South, fr)
			fr = f.Send(false, encryptedMSG(rng, 7, 1, 16*(3+rng.IntN(30))))
			got := r.server(fr)
			if len(got) != 1 {
				t.Fatalf("response %d: %s (%v)", i, describe(got), r.counters().DropsByName())
			}
			r.mustForward(got, North, fr)
		}
	})
	t.Run("Sign", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(8, 8))
		r, f := uaSecureRig(t, rng, "gap", 40311)
		seq, sseq := uint32(52), uint32(80)
		for i, body := range [][]byte{
			opcua.AppendReadRequest(nil, 2, opcua.StringID(2, "Line1.Setpoint")),
			opcua.AppendWriteRequest(nil, 3, opcua.WriteValue{Node: opcua.StringID(2, "Line1.Setpoint"), Value: 4}),
			opcua.AppendReadRequest(nil, 4, opcua.Numeric(0, 2258)),
		} {
			id := uint32(i + 2)
			fr := f.Send(true, signedMSG(rng, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: seq, RequestID: id}, body))
			r.mustForward(r.client(fr), South, fr)
			svc := opcua.ServiceRead
			if i == 1 {
				svc = opcua.ServiceWrite
			}
			fr = f.Send(false, signedMSG(rng, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: sseq, RequestID: id},
				opcua.AppendResponse(nil, svc, id, 0)))
			r.mustForward(r.server(fr), North, fr)
			seq++
			sseq++
		}
		write := signedMSG(rng, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: seq, RequestID: 9},
			opcua.AppendWriteRequest(nil, 9, opcua.WriteValue{Node: opcua.StringID(2, "Line1.Forbidden"), Value: 1}))
		if n := crossed(t, r.client(f.Send(true, write))); n == len(write) {
			t.Fatal("Write to a forbidden node crossed on a Sign channel")
		}
		if ev := r.lastEvent(); ev.Verdict != "deny" || ev.Reason != "node_not_allowed" {
			t.Fatalf("event %+v, want a deny for node_not_allowed", ev)
		}
	})
}

// TestOPCUASignThenCiphertext: a channel inferred Sign by a readable first
// request keeps reading every body; a later chunk that looks like
// ciphertext does not decode, names no service and is refused, even when
// the policy tolerates the anomalies it raises.
func TestOPCUASignThenCiphertext(t *testing.T) {
	for i, tc := range []struct{ tolerate, reason string }{
		{"gap", "malformed:bad_node_id"},
		{"unknown_service, bad_node_id, truncated, bad_encoding, abnormal_string_length, abnormal_array_length", "service_not_allowed"},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(20+i), 3))
			r, f := uaSecureRig(t, rng, tc.tolerate, 40320+i)
			fr := f.Send(true, signedMSG(rng, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 52, RequestID: 2},
				opcua.AppendReadRequest(nil, 2, opcua.StringID(2, "Line1.Setpoint"))))
			r.mustForward(r.client(fr), South, fr)
			ct := encryptedMSG(rng, 7, 1, 16*6)
			ct[24] = 0x07 // where a plaintext body's type id starts
			got := r.client(f.Send(true, ct))
			if n := crossed(t, got); n == len(ct) {
				t.Fatal("a ciphertext-looking chunk crossed a Sign channel")
			}
			if ev := r.lastEvent(); ev.Verdict != "deny" || ev.Reason != tc.reason {
				t.Fatalf("event %+v, want a deny for %s", ev, tc.reason)
			}
		})
	}
}

// TestOPCUANoneClaimingEncrypt: under SecurityPolicy None nothing is
// encrypted, whatever mode the OpenSecureChannelRequest names. A client
// that asks for SignAndEncrypt under None (bad_security_mode, here
// tolerated) must not get its plaintext bodies judged opaque. Before the
// fix the channel took the claimed mode and a Write to a forbidden node
// crossed unread.
func TestOPCUANoneClaimingEncrypt(t *testing.T) {
	const conduit = `  - name: hmi-ua
    from: hmi
    to: ua
    rules:
      - opcua:
          min_security_mode: %s
          tolerate: [bad_security_mode]
          allow:
            - service: write
              nodes: ["ns=2;s=Line1.Setpoint"]
`
	for i, tc := range []struct{ minMode, reason string }{
		{"none", "node_not_allowed"},
		{"sign_and_encrypt", "security_mode_too_low"},
	} {
		t.Run(tc.minMode, func(t *testing.T) {
			r := newRig(t, policy(t, "enforce", "reset", "", fmt.Sprintf(conduit, tc.minMode)), nil)
			f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP(fmt.Sprintf("192.0.2.130:%d", 40330+i))}, uaEP)
			r.handshake(f)
			hello := opcua.Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536, EndpointURL: "opc.tcp://192.0.2.30:4840"}
			r.uaOpen(f, opcua.AppendHello(nil, hello), opcua.AppendAcknowledge(nil, hello),
				opcua.AppendOpenRequest(nil, opcua.SecureHeader{SequenceNumber: 1, RequestID: 1}, opcua.ModeSignAndEncrypt),
				opcua.AppendOpenResponse(nil, opcua.SecureHeader{ChannelID: 7, SequenceNumber: 1, RequestID: 1}, 1))
			write := opcua.AppendMessage(nil, opcua.ChunkFinal, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 2, RequestID: 2},
				opcua.AppendWriteRequest(nil, 2, opcua.WriteValue{Node: opcua.StringID(2, "Line1.Forbidden"), Value: 1}))
			if n := crossed(t, r.client(f.Send(true, write))); n == len(write) {
				t.Fatal("a plaintext Write to a forbidden node crossed a policy None channel that claimed SignAndEncrypt")
			}
			if ev := r.lastEvent(); ev.Verdict != "deny" || ev.Reason != tc.reason {
				t.Fatalf("event %+v, want a deny for %s", ev, tc.reason)
			}
		})
	}
}
