package opcua

import "encoding/binary"

// HeaderLen is the length of the UA-TCP message header (§7.1.2.2).
const HeaderLen = 8

// Chunk size caps. A chunk may never exceed the receiver's ReceiveBufferSize
// negotiated by HEL/ACK (§7.1.2.3); before that is known, and as an upper
// bound afterwards, the framer applies MaxChunkSize.
const (
	// DefaultMaxChunkSize is the Framer cap when MaxChunkSize is 0: well
	// above the 65535-byte buffers common stacks negotiate.
	DefaultMaxChunkSize = 1 << 20
	// HardMaxChunkSize is the largest MaxChunkSize honoured.
	HardMaxChunkSize = 16 << 20
)

// minSize is the smallest MessageSize of each type: header plus the fixed
// fields plus empty strings (§7.1.2.3-§7.1.2.6, §6.7.2).
var minSize = [...]uint32{
	TypeHEL: HeaderLen + 20 + 4,
	TypeACK: HeaderLen + 20,
	TypeERR: HeaderLen + 4 + 4,
	TypeRHE: HeaderLen + 4 + 4,
	TypeOPN: HeaderLen + 4 + 12,
	TypeMSG: HeaderLen + 8 + 8,
	TypeCLO: HeaderLen + 8 + 8,
}

// maxFixed is the largest MessageSize of the UACP handshake types, whose
// only variable fields are bounded strings (0: bounded by MaxChunkSize).
var maxFixed = [...]uint32{
	TypeHEL: HeaderLen + 20 + 4 + MaxURLLength,
	TypeACK: HeaderLen + 20,
	TypeERR: HeaderLen + 4 + 4 + MaxURLLength,
	TypeRHE: HeaderLen + 4 + 4 + 2*MaxURLLength,
}

// Framer finds UA-TCP message chunks in a byte stream (OPC 10000-6
// §7.1.2.2). The zero value uses DefaultMaxChunkSize. It keeps no state
// between calls and is safe to copy.
type Framer struct {
	// MaxChunkSize caps MessageSize for OPN/MSG/CLO (0: DefaultMaxChunkSize;
	// values above HardMaxChunkSize are clamped).
	MaxChunkSize uint32
}

func (f *Framer) maxChunk() uint32 {
	switch {
	case f.MaxChunkSize == 0:
		return DefaultMaxChunkSize
	case f.MaxChunkSize > HardMaxChunkSize:
		return HardMaxChunkSize
	}
	return f.MaxChunkSize
}

// Next looks at the start of b. When b begins with a complete chunk it
// returns its length n (> 0) and need 0; when the chunk is incomplete, n 0
// and need > 0, the number of bytes still missing (at least the rest of the
// header); on a malformed header, n 0, need 0 and one of
// ErrUnknownMessageType, ErrInvalidChunkType, ErrInvalidMessageSize. Bytes
// of a header that are present are checked before the rest arrives, so a
// bad type is rejected from its first byte. It allocates nothing.
func (f *Framer) Next(b []byte) (n int, need int, err error) {
	if a := checkPrefix(b); a != AnomalyNone {
		return 0, 0, a.Err()
	}
	if len(b) < HeaderLen {
		return 0, HeaderLen - len(b), nil
	}
	t := messageType(b[0], b[1], b[2])
	size := binary.LittleEndian.Uint32(b[4:8])
	if a := checkSize(t, size, f.maxChunk()); a != AnomalyNone {
		return 0, 0, a.Err()
	}
	if uint64(len(b)) < uint64(size) {
		return 0, int(size) - len(b), nil
	}
	return int(size), 0, nil
}

// checkPrefix validates the message type and chunk type bytes present in b.
func checkPrefix(b []byte) Anomaly {
	k := min(len(b), 3)
	if k > 0 {
		match := false
		for _, name := range typeNames[1:] {
			if string(b[:k]) == name[:k] {
				match = true
				break
			}
		}
		if !match {
			return AnomalyUnknownMessageType
		}
	}
	if len(b) < 4 {
		return AnomalyNone
	}
	return checkChunk(messageType(b[0], b[1], b[2]), ChunkType(b[3]))
}

// checkChunk: IsFinal is F, C or A for MSG and always F otherwise (§6.7.2.2).
func checkChunk(t MessageType, c ChunkType) Anomaly {
	switch c {
	case ChunkFinal:
		return AnomalyNone
	case ChunkIntermediate, ChunkAbort:
		if t == TypeMSG {
			return AnomalyNone
		}
	}
	return AnomalyInvalidChunkType
}

// checkSize validates MessageSize for type t against its minimum and cap.
func checkSize(t MessageType, size, maxChunk uint32) Anomaly {
	if size < minSize[t] {
		return AnomalyInvalidMessageSize
	}
	max := maxChunk
	if int(t) < len(maxFixed) && maxFixed[t] != 0 {
		max = maxFixed[t]
	}
	if size > max {
		return AnomalyInvalidMessageSize
	}
	return AnomalyNone
}
