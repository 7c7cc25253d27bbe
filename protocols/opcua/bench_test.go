package opcua

import (
	"encoding/binary"
	"sort"
	"testing"

	"github.com/otgw/otgw/protocols"
)

func sortedSamples() ([]string, map[string][]byte) {
	s := samples()
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, s
}

func BenchmarkFramerNext(b *testing.B) {
	names, s := sortedSamples()
	for _, name := range names {
		buf := s[name]
		b.Run(name, func(b *testing.B) {
			var f Framer
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				_, _, _ = f.Next(buf)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	names, s := sortedSamples()
	for _, name := range names {
		buf := s[name]
		b.Run(name, func(b *testing.B) {
			var m Message
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				_ = m.Decode(buf)
			}
		})
	}
}

func BenchmarkChannelDecode(b *testing.B) {
	write := AppendWriteRequest(nil, 2, WriteValue{setpoint, 1}, WriteValue{setpoint, 2}, WriteValue{setpoint, 3})
	cases := map[string][]byte{
		"MSG_read_single":   samples()["MSG_read"],
		"MSG_write_4chunks": AppendChunks(nil, tHdr, write, len(write)/4+1),
	}
	for _, name := range []string{"MSG_read_single", "MSG_write_4chunks"} {
		buf := cases[name]
		b.Run(name, func(b *testing.B) {
			var c Channel
			var m Message
			var f Framer
			c.state, c.policy, c.mode, c.channelID, c.haveID = stOpen, PolicyNone, ModeNone, 7, true
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				for p := buf; len(p) > 0; {
					n, _, _ := f.Next(p)
					_ = c.Decode(protocols.Request, p[:n], &m)
					p = p[n:]
				}
			}
		})
	}
}

// BenchmarkChannelDecodeInferred decodes MSG chunks of a channel opened
// with an encrypted OPN (Basic256Sha256), whose mode was inferred: Sign
// (a Read, sequence numbers continuing) and SignAndEncrypt (ciphertext,
// where each chunk is checked for plaintext evidence).
func BenchmarkChannelDecodeInferred(b *testing.B) {
	fill := pattern(37)
	read := signed(hdr(52, 2), AppendReadRequest(nil, 2, setpoint), fill)
	for _, tc := range []struct {
		name  string
		mode  SecurityMode
		chunk []byte
	}{
		{"MSG_sign_read", ModeSign, read},
		{"MSG_encrypted_1k", ModeSignAndEncrypt, ciphered(64, fill)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var c Channel
			var m Message
			c.state, c.policy, c.mode, c.modeInferred, c.channelID, c.haveID = stOpen, PolicyBasic256Sha256, tc.mode, true, 7, true
			buf := tc.chunk
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				binary.LittleEndian.PutUint32(buf[16:], binary.LittleEndian.Uint32(buf[16:])+2) // never continuing
				_ = c.Decode(protocols.Request, buf, &m)
			}
			if m.Anomaly != AnomalyNone {
				b.Fatalf("anomaly %v", m.Anomaly)
			}
		})
	}
}
