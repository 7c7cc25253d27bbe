package opcua

import (
	"encoding/binary"
	"math"

	"github.com/otgw/otgw/protocols"
)

// Reassembly defaults (OPC 10000-6 §6.7.3; HEL/ACK MaxMessageSize and
// MaxChunkCount tighten them when non-zero).
const (
	// DefaultMaxChunks is the chunk limit per message when Channel.MaxChunks
	// is 0.
	DefaultMaxChunks = 4096
	// DefaultMaxMessageSize is the message size limit (sum of chunk bodies)
	// when Channel.MaxMessageSize is 0.
	DefaultMaxMessageSize = 16 << 20
)

// chanState is where a connection is in the UACP/UASC handshake.
type chanState uint8

const (
	stInit   chanState = iota // nothing seen
	stHello                   // HEL sent, waiting for ACK
	stAck                     // ACK received: OPN may follow
	stOpen                    // OPN response seen: MSG allowed
	stClosed                  // CLO or ERR seen (the server may still answer requests in flight)
)

// assembly is one direction's message in progress (§6.7.3: the chunks of a
// message are sent sequentially, so there is at most one per direction).
type assembly struct {
	active    bool
	requestID uint32
	chunks    int
	size      int // body bytes so far
	failed    bool
	buffer    bool // body kept for decoding at the final chunk (Write/Call)
	typeID    uint32
	hasTypeID bool
	service   Service
	response  bool
	buf       []byte
}

func (a *assembly) reset() {
	buf := a.buf[:0]
	*a = assembly{buf: buf}
}

// Channel follows the UA Secure Conversation state of one TCP connection:
// the HEL/ACK negotiation, the SecurityPolicy and MessageSecurityMode
// opened by OPN, the SecureChannelId the server assigned, and the chunks of
// a multi-chunk message in each direction (bounded by MaxChunks and
// MaxMessageSize; an abort chunk discards them).
//
// It decides whether a MSG body is readable: policy None or mode Sign yes,
// SignAndEncrypt no. When the OPN is encrypted (policy other than None,
// OPC 10000-6 §6.7.4) the requested mode cannot be read and is inferred
// (Mode reports it so). In mode Sign what follows the symmetric security
// header is plaintext (sequence header, body) and a signature; in
// SignAndEncrypt it is ciphertext (sequence header, body, padding,
// signature encrypted together, §6.7.2.5). The evidence of plaintext, in
// order of strength (see plaintext): a length that is not whole AES
// blocks; a sequence number that continues the previous chunk's of the
// direction (§6.7.2.4: exactly one more per chunk, which a receiver in
// mode Sign enforces); a body that decodes as a plaintext request
// (response). The first chunk after the OPN has no number to continue:
// plaintext evidence there means Sign, its absence SignAndEncrypt.
//
// SignAndEncrypt bodies pass unread (only headers and sizes are judged),
// so that inference is the one an evasion would aim at: a client in mode
// Sign whose first request the gateway cannot read (a type id it does not
// know, bytes that look random) must not make every later plaintext body
// opaque. The inference is therefore checked on every chunk, and fails
// closed: a chunk of a channel inferred SignAndEncrypt that shows
// plaintext evidence is reported as security_mode_mismatch (denied unless
// a policy tolerates it) and the channel is judged as Sign from then on,
// for good, so its bodies are read and their services and NodeIds judged.
// The opposite drift needs no check: a channel inferred Sign has every
// body read, and one that does not decode (ciphertext, or anything else)
// is an anomaly and names no service, so it is refused. Flipping to Sign
// rather than only refusing the chunk leaves no state in which a
// plaintext body crosses unread; deciding only on strong evidence keeps
// legitimate SignAndEncrypt channels working: ciphertext continues the
// sequence number by chance once in 2^32 chunks, and decodes as a known
// request with its RequestHeader far more rarely (such a chance is a
// mismatch: the connection is refused, and the client reconnects).
// Residual: the very first chunk, when its length is whole blocks and
// the gateway's decoder does not read it as a request while the server
// does; a second chunk then shows plaintext by its sequence number.
//
// The body of a Write or Call request that spans chunks is buffered (the
// buffer grows once per connection up to MaxMessageSize) and decoded at the
// final chunk, so NodeIds are judged on the whole message; other services
// need only the type id from the first chunk and are counted, not kept.
// The zero value is ready to use. Not safe for concurrent use.
type Channel struct {
	MaxChunks      int // 0: DefaultMaxChunks
	MaxMessageSize int // 0: DefaultMaxMessageSize
	// Budget, when set, is asked before the buffer of a Write or Call
	// body grows by delta bytes (delta > 0: true lets it grow) and told
	// when bytes are given back (delta < 0): the gateway charges the
	// buffers to its memory cap. A refused growth fails the message as
	// AnomalyMessageTooLarge (its NodeIds are then unknown, so a rule
	// that restricts them refuses it). nil: no accounting.
	Budget  func(delta int64) bool
	charged int64 // bytes charged to Budget (bufferCharge of the buffers)

	state        chanState
	midstream    bool // picked up without seeing the handshake
	policy       SecurityPolicy
	mode         SecurityMode
	modeInferred bool
	channelID    uint32
	haveID       bool
	tokenID      uint32
	// negotiated limits, index 0 client→server, 1 server→client (0: none)
	maxChunkSize [2]uint32
	maxMsgSize   [2]uint32
	maxChunks    [2]uint32
	asm          [2]assembly
	// seqPrev is the value at the sequence number's place in the last
	// MSG/CLO chunk of each direction (or a readable OPN's, +1 for an
	// encrypted OPN); seqKnown says whether there is one.
	seqPrev  [2]uint32
	seqKnown [2]bool
}

func dirIndex(d protocols.Dir) int {
	if d == protocols.Response {
		return 1
	}
	return 0
}

// Policy returns the channel's SecurityPolicy (PolicyUnknown before OPN).
func (c *Channel) Policy() SecurityPolicy { return c.policy }

// Mode returns the channel's MessageSecurityMode (ModeInvalid while not
// known) and whether it was inferred rather than read from the OPN.
func (c *Channel) Mode() (SecurityMode, bool) { return c.mode, c.modeInferred }

// ChannelID returns the SecureChannelId assigned by the server and whether
// one was seen.
func (c *Channel) ChannelID() (uint32, bool) { return c.channelID, c.haveID }

// Open reports whether an OpenSecureChannel response was seen and no
// CloseSecureChannel since.
func (c *Channel) Open() bool { return c.state == stOpen }

// MaxChunkSize returns the largest chunk the receiver in direction dir
// accepts, from HEL/ACK (0 when not negotiated).
func (c *Channel) MaxChunkSize(dir protocols.Dir) uint32 {
	return c.maxChunkSize[dirIndex(dir)]
}

// Gap tells the channel that bytes of direction dir were lost: a message
// in progress in that direction is discarded. When nothing of the
// connection was seen yet, the channel is picked up mid-stream and stops
// demanding the handshake (monitor use only: the gateway itself never
// adopts a flow mid-stream in enforce mode).
func (c *Channel) Gap(dir protocols.Dir) {
	c.trim(&c.asm[dirIndex(dir)])
	c.asm[dirIndex(dir)].reset()
	c.seqKnown[dirIndex(dir)] = false
	if c.state == stInit {
		c.midstream = true
	}
}

func (c *Channel) limits(d int) (maxChunks, maxSize int) {
	maxChunks, maxSize = c.MaxChunks, c.MaxMessageSize
	if maxChunks <= 0 {
		maxChunks = DefaultMaxChunks
	}
	if maxSize <= 0 {
		maxSize = DefaultMaxMessageSize
	}
	if n := c.maxChunks[d]; n != 0 && uint64(n) < uint64(maxChunks) {
		maxChunks = int(n)
	}
	if n := c.maxMsgSize[d]; n != 0 && uint64(n) < uint64(maxSize) {
		maxSize = int(n)
	}
	return maxChunks, maxSize
}

// Decode decodes chunk b, travelling in direction dir (Request: client to
// server), into m with the channel's knowledge, and advances the channel.
// On top of Message.Decode it: reads MSG/CLO bodies only when the channel
// is not SignAndEncrypt; decodes continuation chunks as such and reports
// the reassembled Write/Call NodeIds at the final chunk; sets m.Policy and
// m.Mode of MSG/CLO to the channel's; and reports stateful anomalies
// (unexpected_message, msg_before_open, bad_channel_id, too_many_chunks,
// message_too_large, interleaved_chunks, invalid_message_size above the
// negotiated buffer size, security_mode_mismatch). m aliases b, or the
// channel's buffer for a reassembled body, until the next call for the
// same direction. It returns nil or the sentinel of m.Anomaly and
// allocates nothing once the reassembly buffer has grown.
func (c *Channel) Decode(dir protocols.Dir, b []byte, m *Message) error {
	d := dirIndex(dir)
	a := c.decode(d, b, m)
	if m.Anomaly == AnomalyNone {
		m.Anomaly = a
	}
	return m.Anomaly.Err()
}

func (c *Channel) decode(d int, b []byte, m *Message) Anomaly {
	asm := &c.asm[d]
	isMSG := len(b) >= 3 && messageType(b[0], b[1], b[2]) == TypeMSG
	isData := isMSG || (len(b) >= 3 && messageType(b[0], b[1], b[2]) == TypeCLO)
	continuation := isMSG && asm.active
	switch {
	case !isData:
		_ = m.Decode(b)
	case c.mode == ModeSignAndEncrypt && c.modeInferred && c.plaintext(d, b, !continuation):
		// A channel inferred SignAndEncrypt shows plaintext: the first
		// body was not ciphertext after all (a Sign client whose first
		// request the gateway could not read). The chunk and all later
		// ones are judged as plaintext, and this one is refused.
		c.mode = ModeSign
		_ = m.decode(b, true, !continuation)
		m.Anomaly = AnomalySecurityModeMismatch
	case c.mode == ModeSignAndEncrypt:
		_ = m.decode(b, false, false)
	case c.policy == PolicyNone || c.mode == ModeSign || c.policy == PolicyUnknown:
		_ = m.decode(b, true, !continuation)
	default:
		// Policy other than None, mode not known yet (§6.7.4: the OPN
		// body was encrypted): infer it from the first chunk.
		c.modeInferred = true
		if c.plaintext(d, b, !continuation) {
			c.mode = ModeSign
			_ = m.decode(b, true, !continuation)
		} else {
			c.mode = ModeSignAndEncrypt
			_ = m.decode(b, false, false)
		}
	}
	if isData && len(b) >= symHeaderLen+4 {
		// The value at the sequence number's place, plaintext or not:
		// the next chunk's evidence (see plaintext).
		c.seqPrev[d], c.seqKnown[d] = binary.LittleEndian.Uint32(b[symHeaderLen:]), true
	}
	var anomaly Anomaly
	if m.Type == TypeUnknown {
		return AnomalyNone
	}
	if lim := c.maxChunkSize[d]; lim != 0 && m.Size > lim {
		anomaly = AnomalyInvalidMessageSize
	}
	set := func(x Anomaly) {
		if anomaly == AnomalyNone {
			anomaly = x
		}
	}
	req := d == 0
	switch m.Type {
	case TypeHEL:
		if !req || c.state != stInit {
			set(AnomalyUnexpectedMessage)
		}
		if m.Anomaly == AnomalyNone && req {
			// The client's receive buffer bounds server→client chunks.
			c.maxChunkSize[1] = m.ReceiveBufferSize
			c.maxMsgSize[1] = m.MaxMessageSize
			c.maxChunks[1] = m.MaxChunkCount
			c.state = stHello
		}
	case TypeACK:
		if req || (c.state != stHello && !c.midstream) {
			set(AnomalyUnexpectedMessage)
		}
		if m.Anomaly == AnomalyNone && !req {
			c.maxChunkSize[0] = m.ReceiveBufferSize
			c.maxMsgSize[0] = m.MaxMessageSize
			c.maxChunks[0] = m.MaxChunkCount
			if c.maxChunkSize[1] == 0 || (m.SendBufferSize != 0 && m.SendBufferSize < c.maxChunkSize[1]) {
				c.maxChunkSize[1] = m.SendBufferSize
			}
			c.state = stAck
		}
	case TypeERR, TypeRHE:
		if req {
			set(AnomalyUnexpectedMessage)
		}
		if m.Type == TypeERR {
			c.state = stClosed
		} else if c.state != stInit {
			set(AnomalyUnexpectedMessage)
		}
	case TypeOPN:
		if c.state < stAck && !c.midstream || c.state == stClosed {
			set(AnomalyUnexpectedMessage)
		}
		if m.Policy != PolicyUnknown {
			if c.policy != PolicyUnknown && c.policy != m.Policy && c.state == stOpen && req {
				// A renewal keeps the policy (§6.7.4 OpenSecureChannel renew).
				set(AnomalyUnexpectedMessage)
			}
			if req && c.state != stOpen {
				c.policy = m.Policy
				c.mode, c.modeInferred = ModeInvalid, false
			}
			if c.policy == PolicyUnknown {
				c.policy = m.Policy
			}
		}
		if req && m.Mode != ModeInvalid {
			c.mode, c.modeInferred = m.Mode, false
			if c.policy == PolicyNone {
				// Policy None signs and encrypts nothing, whatever mode
				// the request names (bad_security_mode on the OPN): the
				// bodies are plaintext and judged as such.
				c.mode = ModeNone
			}
		}
		if c.policy == PolicyNone && c.mode == ModeInvalid && m.Policy == PolicyNone {
			c.mode = ModeNone
		}
		switch {
		case m.HasSequence:
			c.seqPrev[d], c.seqKnown[d] = m.SequenceNumber, true
		case c.seqKnown[d]:
			// An encrypted OPN (a renewal) takes the next number (§6.7.2.4).
			c.seqPrev[d]++
		}
		if !req {
			if c.haveID && c.state == stOpen && m.ChannelID != c.channelID {
				set(AnomalyBadChannelID)
			}
			c.channelID, c.haveID = m.ChannelID, true
			if m.HasTypeID {
				c.tokenID = m.TokenID
			}
			if c.state != stClosed {
				c.state = stOpen
			}
		}
	case TypeMSG, TypeCLO:
		switch {
		case c.midstream && !c.haveID:
			c.channelID, c.haveID = m.ChannelID, true
		case c.state == stClosed && !req && c.haveID:
			// A response to a request sent before the client's CLO may
			// cross it (seen in real open62541 traffic); only the client
			// is barred from using a closed channel.
			if m.ChannelID != c.channelID {
				set(AnomalyBadChannelID)
			}
		case c.state != stOpen && !c.midstream:
			set(AnomalyMsgBeforeOpen)
		case c.haveID && m.ChannelID != c.channelID:
			set(AnomalyBadChannelID)
		}
		m.Policy, m.Mode = c.policy, c.mode
		if m.Type == TypeCLO {
			if !req {
				set(AnomalyUnexpectedMessage)
			}
			c.state = stClosed
		} else {
			set(c.chunk(d, asm, m))
		}
	}
	return anomaly
}

// chunk runs reassembly for one MSG chunk (§6.7.3).
func (c *Channel) chunk(d int, asm *assembly, m *Message) Anomaly {
	var anomaly Anomaly
	if m.Chunk == ChunkAbort {
		c.trim(asm)
		asm.reset()
		return AnomalyNone
	}
	if asm.active && m.HasSequence && m.RequestID != asm.requestID {
		// A chunk of another message before this one's final chunk.
		anomaly = AnomalyInterleavedChunks
		c.trim(asm)
		asm.reset()
		if m.Chunk == ChunkFinal || m.Chunk == ChunkIntermediate {
			// This chunk's body starts its own message: decode it so.
			if m.HasSequence && !m.Encrypted && !m.HasTypeID {
				_ = m.decodeBody(m.Body, m.Chunk == ChunkFinal)
			}
		}
	}
	if !asm.active && m.Chunk == ChunkFinal {
		return anomaly // single-chunk message: nothing to assemble
	}
	maxChunks, maxSize := c.limits(d)
	body := m.Body
	if c.mode == ModeSign {
		if n := c.policy.symSigLen(); n <= len(body) {
			body = body[:len(body)-n]
		}
	}
	if !asm.active {
		asm.active = true
		asm.requestID = m.RequestID
		asm.typeID, asm.hasTypeID = m.TypeID, m.HasTypeID
		asm.service, asm.response = m.Service, m.Response
		asm.buffer = m.HasSequence && !m.Encrypted && !m.Response &&
			(m.Service == ServiceWrite || m.Service == ServiceCall)
	} else {
		m.TypeID, m.HasTypeID = asm.typeID, asm.hasTypeID
		m.Service, m.Response = asm.service, asm.response
	}
	asm.chunks++
	if len(m.Body) > 0 {
		asm.size += len(body)
	} else {
		asm.size += int(m.Size)
	}
	if !asm.failed {
		switch {
		case asm.chunks > maxChunks:
			asm.failed = true
			if anomaly == AnomalyNone {
				anomaly = AnomalyTooManyChunks
			}
		case asm.size > maxSize:
			asm.failed = true
			if anomaly == AnomalyNone {
				anomaly = AnomalyMessageTooLarge
			}
		}
		if asm.failed {
			asm.buf = asm.buf[:0]
		} else if asm.buffer {
			if !c.grow(asm, len(body), maxSize) {
				asm.failed = true
				asm.buf = asm.buf[:0]
				if anomaly == AnomalyNone {
					anomaly = AnomalyMessageTooLarge
				}
			} else {
				asm.buf = append(asm.buf, body...)
			}
		}
	}
	if m.Chunk == ChunkIntermediate {
		m.Partial = true
		return anomaly
	}
	// Final chunk: the message is complete.
	if asm.failed {
		// Too large or too many chunks: the whole message is refused.
		if anomaly == AnomalyNone {
			anomaly = AnomalyMessageTooLarge
			if asm.chunks > maxChunks {
				anomaly = AnomalyTooManyChunks
			}
		}
	} else if asm.buffer {
		clear(m.Nodes[:m.NumNodes])
		clear(m.Objects[:m.NumNodes])
		m.NumNodes, m.Partial = 0, false
		if a := m.decodeBody(asm.buf, true); a != AnomalyNone && anomaly == AnomalyNone {
			anomaly = a
		}
	}
	c.trim(asm)
	asm.reset()
	return anomaly
}

// keepBuffer is the body buffer capacity a direction keeps between
// messages; a larger buffer is given back when its message ends.
const keepBuffer = 64 << 10

// bufferCharge is what a body buffer of capacity c costs the memory cap:
// twice its capacity, the buffer and the garbage its growth left behind.
// Growing by copying into a buffer at least twice as large discards the
// previous buffers (4 KiB, 8 KiB, ... c/2: less than c in all), and they
// stay in the heap until the collector runs. Charging only the live
// buffer let the cap fill with buffers while as much again in garbage
// grew the process beyond it (issue 15: 100 connections of 15 MB Writes
// through otgw run peaked at 130 MB RSS with a 64 MiB cap).
func bufferCharge(c int) int64 { return 2 * int64(c) }

// grow makes room for n more body bytes in asm.buf, charging the new
// capacity to Budget (bufferCharge); false when Budget refuses.
func (c *Channel) grow(asm *assembly, n, maxSize int) bool {
	need := len(asm.buf) + n
	if need <= cap(asm.buf) {
		return true
	}
	newCap := min(max(need, 2*cap(asm.buf), 4096), max(need, maxSize))
	delta := bufferCharge(newCap) - bufferCharge(cap(asm.buf))
	if c.Budget != nil && !c.Budget(delta) {
		return false
	}
	c.charged += delta
	nb := make([]byte, len(asm.buf), newCap)
	copy(nb, asm.buf)
	asm.buf = nb
	return true
}

// trim gives a large body buffer back when its message ends.
func (c *Channel) trim(asm *assembly) {
	if cap(asm.buf) > keepBuffer {
		n := bufferCharge(cap(asm.buf))
		asm.buf = nil
		c.charged -= n
		if c.Budget != nil {
			c.Budget(-n)
		}
	}
}

// Release gives every byte charged to Budget back (the channel's buffers
// are dropped); call it before discarding or zeroing the Channel.
func (c *Channel) Release() {
	for i := range c.asm {
		c.asm[i].buf = nil
	}
	if c.Budget != nil && c.charged != 0 {
		c.Budget(-c.charged)
	}
	c.charged = 0
}

// symHeaderLen is the length of the message header and the symmetric
// security header (SecureChannelId, TokenId) of MSG and CLO chunks: the
// sequence header follows (§6.7.2.2, §6.7.2.4).
const symHeaderLen = HeaderLen + 8

// plaintext reports whether MSG/CLO chunk b of direction d, on a channel
// under a policy other than None, carries plaintext after its security
// header (mode Sign) rather than ciphertext (SignAndEncrypt). bodyStart:
// the chunk's body starts a message. The evidence, strongest first:
//
//   - Under SignAndEncrypt the sequence header, body, padding and
//     signature are encrypted as a whole, with AES-CBC under every known
//     policy: what follows the security header is whole cipher blocks
//     (§6.7.2.5, OPC 10000-7). Any other length is plaintext, proven.
//   - The sequence number is incremented by exactly one for each chunk
//     sent (wrapping below 1024 after 4294966271, §6.7.2.4), and in mode
//     Sign the receiver rejects a chunk that breaks the count. So once a
//     chunk of the direction was seen, a plaintext chunk continues its
//     number, while ciphertext does so by chance once in 2^32.
//   - The body decodes as plaintext: its type id is a service this
//     direction sends, or it is followed by a RequestHeader (responses: a
//     ResponseHeader) that decodes. The first chunk after an encrypted
//     OPN has no number to continue and is judged by this alone; later
//     ones need both (a known type id and its header) to count.
func (c *Channel) plaintext(d int, b []byte, bodyStart bool) bool {
	n := len(b) - symHeaderLen
	if n <= 0 {
		return false
	}
	if bs := c.policy.symBlockSize(); bs > 0 && n%bs != 0 {
		return true
	}
	if n < 8 {
		return false
	}
	if c.seqKnown[d] && nextSeq(c.seqPrev[d], binary.LittleEndian.Uint32(b[symHeaderLen:])) {
		return true
	}
	if !bodyStart {
		return false
	}
	known, header := bodyEvidence(b[symHeaderLen+8:], d == 1)
	if c.seqKnown[d] {
		return known && header
	}
	return known || header
}

// nextSeq reports whether sequence number next follows prev (§6.7.2.4;
// policies with non-legacy numbering wrap to 0 after UInt32 max).
func nextSeq(prev, next uint32) bool {
	return next == prev+1 || (prev > math.MaxUint32-1024 && next < 1024)
}

// bodyEvidence tells whether a chunk body reads as a plaintext request
// (response: a response): known, its type id is a numeric NodeId of
// namespace 0 naming such a service; header, its type id is followed by a
// RequestHeader (ResponseHeader) that decodes within the body. Both read
// the type id, and the NodeIds of the header, leniently: ExpandedNodeId
// flag bits are ignored, as some decoders do, or, for the type id,
// honoured, as others do. What a server might read as a request must
// count as plaintext here.
func bodyEvidence(body []byte, response bool) (known, header bool) {
	for _, expanded := range [2]bool{false, true} {
		r := reader{b: body, lax: true}
		tid := r.nodeID(expanded)
		if r.err != AnomalyNone {
			return known, false
		}
		if !expanded && tid.Type == NodeIDNumeric && tid.Namespace == 0 {
			_, resp, ok := ServiceByTypeID(tid.Numeric)
			known = ok && resp == response
		}
		if response {
			r.responseHeader()
		} else {
			r.requestHeader()
		}
		if r.err == AnomalyNone {
			return known, true
		}
		if body[0]&0xC0 == 0 {
			break // no flags: reading them as expanded changes nothing
		}
	}
	return known, false
}
