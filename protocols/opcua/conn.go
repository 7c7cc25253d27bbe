package opcua

import (
	"encoding/binary"

	"github.com/otgw/otgw/protocols"
)

// Conn follows one OPC UA TCP connection for the offline tools; it
// implements protocols.Conn. It emits one Record per UA-TCP message chunk
// (the unit tshark reports), in order, with Fields:
//
//	msg_type        "HEL", "ACK", "ERR", "RHE", "OPN", "MSG", "CLO"
//	chunk           "F", "C" or "A"
//	security_policy OPN: short policy name ("None", "Basic256Sha256"), or
//	                the URI when it is not a standard one
//	security_mode   OPN request with a readable body: "None", "Sign",
//	                "SignAndEncrypt"
//	service         uint32 numeric binary-encoding id of the body, when
//	                readable (631 ReadRequest, 673 WriteRequest...)
//	request_id      uint32 RequestId from the sequence header, when readable
//	nodes           []string Write: NodeIds written; Call: MethodIds called
//	                (final chunk, whole message)
//	error, reason   ERR message and abort chunk: uint32 code and text
//
// and Anomaly set to the chunk's Anomaly name. Bytes that cannot be framed
// give one Record with only the anomaly, after which the direction is
// resynchronised at the next plausible header. The zero value is not
// usable; call NewConn.
type Conn struct {
	// Channel holds the connection's secure channel state; its limits may
	// be set before the first Feed.
	Channel Channel
	// Framer's MaxChunkSize bounds every chunk (the Channel also checks
	// the sizes negotiated by HEL/ACK).
	Framer Framer

	pend    [2][]byte
	resync  [2]bool
	skipped [2]bool
	seen    [2]bool
	m       Message
}

// NewConn returns a Conn with default limits.
func NewConn() *Conn { return &Conn{} }

var _ protocols.Conn = (*Conn)(nil)

// Feed implements protocols.Conn. dir is Request for client→server bytes.
func (c *Conn) Feed(dir protocols.Dir, b []byte, gap bool, emit func(protocols.Record)) {
	d := dirIndex(dir)
	if gap {
		c.pend[d] = c.pend[d][:0]
		c.resync[d] = true
		// Bytes lost after this direction started: the next chunk is
		// reported with AnomalyGap. A gap before anything was seen is a
		// capture that began mid-stream; it is reported only if bytes
		// have to be skipped to find a chunk header.
		c.skipped[d] = c.seen[d]
		c.Channel.Gap(dir)
	}
	c.seen[d] = true
	data := b
	if len(c.pend[d]) > 0 {
		c.pend[d] = append(c.pend[d], b...)
		data = c.pend[d]
	}
	// The Framer applies only the configured cap: a chunk above the
	// negotiated buffer size is still decoded, and the Channel flags it.
	f := c.Framer
	for len(data) > 0 {
		if c.resync[d] {
			i := c.findHeader(data)
			if i < 0 {
				c.skipped[d] = true
				data = data[len(data):]
				break
			}
			if i > 0 {
				c.skipped[d] = true
			}
			data = data[i:]
			c.resync[d] = false
		}
		n, need, err := f.Next(data)
		if err != nil {
			rec := protocols.Record{Dir: dir, Anomaly: AnomalyOf(err).String()}
			if len(data) >= 3 {
				if t := messageType(data[0], data[1], data[2]); t != TypeUnknown {
					rec.Fields = append(rec.Fields, protocols.KV{Key: "msg_type", Value: t.String()})
				}
			}
			emit(rec)
			c.resync[d] = true
			c.skipped[d] = false // already reported
			data = data[1:]
			continue
		}
		if need > 0 {
			break
		}
		c.Channel.Decode(dir, data[:n], &c.m)
		if c.skipped[d] && c.m.Anomaly == AnomalyNone {
			c.m.Anomaly = AnomalyGap
		}
		c.skipped[d] = false
		emit(c.record(dir))
		data = data[n:]
	}
	// Keep the incomplete rest (at most one chunk, bounded by the Framer).
	if len(data) == 0 {
		c.pend[d] = c.pend[d][:0]
	} else if len(c.pend[d]) > 0 && &data[0] == &c.pend[d][len(c.pend[d])-len(data)] {
		c.pend[d] = c.pend[d][:copy(c.pend[d], data)]
	} else {
		c.pend[d] = append(c.pend[d][:0], data...)
	}
}

// findHeader returns the offset of the first plausible chunk header in b
// (a header cut by the end of b counts), or -1.
func (c *Conn) findHeader(b []byte) int {
	id, haveID := c.Channel.ChannelID()
	for i := range b {
		h := b[i:min(len(b), i+12)]
		if checkPrefix(h) != AnomalyNone {
			continue
		}
		if len(h) < HeaderLen {
			return i
		}
		t := messageType(h[0], h[1], h[2])
		if checkSize(t, binary.LittleEndian.Uint32(h[4:8]), HardMaxChunkSize) != AnomalyNone {
			continue
		}
		if haveID && len(h) >= 12 && (t == TypeMSG || t == TypeCLO) &&
			binary.LittleEndian.Uint32(h[8:12]) != id {
			continue
		}
		return i
	}
	return -1
}

// record renders c.m as a Record (allocates: offline tools only).
func (c *Conn) record(dir protocols.Dir) protocols.Record {
	m := &c.m
	f := make([]protocols.KV, 0, 8)
	f = append(f, protocols.KV{Key: "msg_type", Value: m.Type.String()})
	f = append(f, protocols.KV{Key: "chunk", Value: m.Chunk.String()})
	if m.Type == TypeOPN && m.PolicyURI != nil {
		f = append(f, protocols.KV{Key: "security_policy", Value: policyLabel(m.PolicyURI)})
		if m.Mode != ModeInvalid && dir == protocols.Request {
			f = append(f, protocols.KV{Key: "security_mode", Value: m.Mode.String()})
		}
	}
	if m.HasTypeID {
		f = append(f, protocols.KV{Key: "service", Value: m.TypeID})
	}
	if m.HasSequence {
		f = append(f, protocols.KV{Key: "request_id", Value: m.RequestID})
	}
	if m.NumNodes > 0 && !m.Partial {
		nodes := make([]string, m.NumNodes)
		for i := range nodes {
			nodes[i] = m.Nodes[i].String()
		}
		f = append(f, protocols.KV{Key: "nodes", Value: nodes})
	}
	if m.Type == TypeERR || m.Chunk == ChunkAbort {
		f = append(f, protocols.KV{Key: "error", Value: m.ErrorCode})
		f = append(f, protocols.KV{Key: "reason", Value: string(m.Reason)})
	}
	return protocols.Record{Dir: dir, Fields: f, Anomaly: m.Anomaly.String()}
}
