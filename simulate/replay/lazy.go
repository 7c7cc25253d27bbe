package replay

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/packet"
)

// The lazy what-if shadow.
//
// The shadow (whatif.go) judges every frame a second time so that the
// refusals hidden behind an enforcing reset can be listed. For a flow
// whose frames the enforcing engine has judged without any sign of
// enforcement, that second judgement is known without making it: the
// shadow would refuse none of them and allow the PDUs the enforcing
// engine allowed. The lazy shadow therefore keeps such a flow's frames
// (its history) instead of judging them, and feeds them to the shadow
// engine only when the flow diverges (catch-up): at its first frame the
// enforcing engine judged with a sign of enforcement, the shadow engine is
// fed every earlier frame of the flow, in order, with its timestamp, its
// verdicts discarded, and then judges the frame; from then on the flow's
// frames are judged as they come (eager).
//
// Flows are keyed as the lanes of a sharded replay are (shard.go flowOf):
// TCP and UDP by their direction-independent endpoints, ICMP echoes by
// addresses and identifier, ICMP errors by the flow they quote; a frame
// with no such key (ARP and other L2, fragments, other ICMP) is judged
// eagerly. Why skipping is exact:
//
//   - Per flow. Sharding rests on frames of different keys never meeting
//     in an engine's state when the pre-scan proves the table, the
//     half-open limit and the memory cap out of reach (shardable): a
//     lane's engine, which sees a subset of the keys, judges them as one
//     engine does. The lazy shadow sees a subset of the keys too (the
//     eager ones), so laziness requires shardable. The rate detectors
//     count across flows, but the shadow's detections are never reported
//     (shadowVerdict). The shadow's flow ids are never reported either.
//   - Until divergence. The shadow's ruleset is the policy with every
//     conduit in monitor mode, so its verdicts differ from the enforcing
//     engine's only on refused PDUs and flows (deny becomes alert), and
//     its flows are lenient (gateway tcp.go: f.monitor) where the
//     enforcing engine's enforce-mode flows are strict. Every strict
//     refusal the lenient normaliser would let pass is a reportDrop or an
//     evasion: an event, and a frame not forwarded as fed. The other
//     strict behaviour, holding the tail of an incomplete PDU, forwards
//     the frame shortened. A reset the strict normaliser forwards without
//     closing (in window, not exact) closes a lenient flow. So a flow
//     diverges (diverges) at a frame where the enforcing engine reported
//     anything but a rate detection, did not forward the frame exactly as
//     fed (dropped, shortened, replies or resets injected), or that
//     carries a TCP reset; and at any engine call about it (MarkPickedUp,
//     CaptureGap: a pickup or a capture hole, which the two modes
//     resynchronise differently). Up to that frame the enforcing engine
//     judged every frame of the flow with nothing but allows, the shadow
//     would have taken the same path through the normaliser and the
//     parsers, and so made the same allows and no refusal: settle's
//     inputs for a skipped frame are no refusals and allowedS ==
//     allowedE, as the shadow would have given.
//   - The clock. A catch-up feeds old stamps after newer frames of other
//     flows. A replay runs no sweep (Engine.Expire is never called): the
//     engine reads the time per frame, for the idle and clock-back checks
//     of the frame's own flow (handleFlow, trackEcho: releaseOver on its
//     own key), which a catch-up feeds the flow's frames in their order
//     with their stamps, and, across flows, only when a new flow
//     reclaims expired ones (table.alloc; the memory cap's reclaim is out
//     of reach, shardable), at a time no later than the newest stamp fed
//     so far, N. A flow F reclaimed at r <= N was expired at r: its
//     previous frame L and timeout satisfy L + timeout <= r. Its next
//     frame, stamped t, finds it over anyway unless t < L + timeout <= N:
//     stamped before the newest frame fed before it, into a flow idle
//     since at least N - timeout. The pre-scan looks for such a frame
//     (midstream.backward: a frame stamped back that is not a TCP segment,
//     or a TCP segment whose connection's previous segment is older than
//     N - minTimeout) and laziness needs there be none; or that the
//     captures span less than the shortest timeout, so that no flow ever
//     expires (lazyClock). Two kinds of frame are fed out of capture
//     order, stamped back by microseconds: a synthesised pickup handshake
//     (3 µs before its pickup frame) and a handshake ACK fed after the
//     SYN-ACK captured after it; the ACK's flow was touched by that
//     SYN-ACK, just fed, and the handshake's flow diverges at its pickup,
//     its stamps as they are with one engine or with lanes.
//
// Laziness is off with OnDecision (learn sees every decision), an events
// Sink, StrictMidstream (no pre-scan), wherever Run would not shard (the
// same pre-scan bound) and where the captures' clock does not allow it,
// so that these arguments hold; shadowLazy turns it off for the tests
// that compare the two.
//
// The histories of all flows not yet diverged together keep at most
// lazyBudget bytes (split evenly between the lanes' shadows), counted as
// the capacity of what they hold, spare chunks kept for reuse included:
// the flow whose frame would exceed it is caught up at once and judged
// eagerly from then on (early catch-up is always correct, only slower).

// shadowLazy lets the what-if shadow skip the frames of flows that have
// not diverged; tests turn it off to compare with the eager shadow.
var shadowLazy = true

// lazyBudget bounds the bytes of history a replay's lazy shadows keep
// (frames and their stamps); tests set it tiny.
var lazyBudget = 64 << 20

// lazyFlow is one flow key of a lazy shadow.
type lazyFlow struct {
	eager bool
	// hist holds the frames not judged yet, in chunks that never move
	// (appending copies each frame once), each frame as: its port (1
	// byte), its stamp less the previous frame's (zigzag varint, ns),
	// its length (uvarint) and its bytes as a delta against the previous
	// frame of the same port (putDelta), that frame kept in prev.
	hist [][]byte
	prev [2][]byte
	last int64 // the previous frame's stamp (ns)
}

// Chunks of history grow from lazyChunkMin to lazyChunkMax bytes per
// flow; the largest are reused.
const (
	lazyChunkMin = 512
	lazyChunkMax = 16 << 10
)

// lazyShadow is a shadow engine's laziness, used on the goroutine that
// runs the shadow engine.
type lazyShadow struct {
	eng    *gateway.Engine // made by mk when first needed (engine)
	mk     func() *gateway.Engine
	setNow func(time.Time) // the shadow engine's clock
	// catching is true while a catch-up feeds history: the shadow's hook
	// discards what it is told.
	catching bool
	flows    map[packedKey]*lazyFlow
	last     *lazyFlow // the flow of the last frame skip was given,
	lastKey  packedKey // ... and its key (a request's answer comes next)
	used     int       // bytes held: the capacity of all histories' chunks and prev copies, and of the spares
	budget   int
	buf      []byte
	spare    [][]byte // chunks of lazyChunkMax bytes, for reuse
	stats    lazyStats
}

// lazyStats count what a lazy shadow did (tests read them: lazyObserve).
type lazyStats struct {
	skipped int // frames not judged when they came
	caught  int // catch-ups (flows with history that diverged)
	early   int // ... of them forced by lazyBudget
	fed     int // frames fed by catch-ups
	peak    int // the most bytes of history held at once
}

func (s *lazyStats) add(o lazyStats) {
	s.skipped += o.skipped
	s.caught += o.caught
	s.early += o.early
	s.fed += o.fed
	s.peak += o.peak // lanes: the sum of their peaks, a bound
}

// lazyObserve, when set (tests), receives the lazy shadows' statistics
// at the end of each Run that had one.
var lazyObserve func(lazyStats)

// newLazyShadow makes the shadow engine mk builds lazy, with budget bytes of
// history; setNow sets its clock.
func newLazyShadow(mk func() *gateway.Engine, setNow func(time.Time), budget int) *lazyShadow {
	return &lazyShadow{mk: mk, setNow: setNow, flows: map[packedKey]*lazyFlow{}, budget: budget}
}

// engine returns the shadow engine, made at the first call: a replay
// whose flows never diverge never builds it (its flow table).
func (z *lazyShadow) engine() *gateway.Engine {
	if z.eng == nil {
		z.eng = z.mk()
	}
	return z.eng
}

// lazyKey is what the shadow side needs to know of a frame: its flow key
// and whether the flow diverges at it.
type lazyKey struct {
	keyed   bool
	diverge bool
	key     packedKey
}

// op makes the engine call o on the shadow, its flow caught up first.
func (z *lazyShadow) op(o shadowOp) {
	z.eagerKey(packKey(flowKeyOf(o.a, o.b)))
	if o.pickedUp {
		z.engine().MarkPickedUp(o.a, o.b)
	} else {
		z.engine().CaptureGap(o.a, o.b, o.to)
	}
}

// skip reports whether the shadow may skip the frame (keeping it in its
// flow's history); false: the shadow judges it, its flow caught up.
func (z *lazyShadow) skip(k lazyKey, in gateway.PortID, frame []byte, now time.Time) bool {
	if !k.keyed {
		return false
	}
	f := z.last
	if f == nil || z.lastKey != k.key {
		if f = z.flows[k.key]; f == nil {
			f = &lazyFlow{}
			z.flows[k.key] = f
		}
		z.last, z.lastKey = f, k.key
	}
	if f.eager {
		return false
	}
	// The most an entry takes: the delta of a frame with nothing in
	// common is two varints and its bytes.
	n := 1 + binary.MaxVarintLen64 + 3*binary.MaxVarintLen32 + len(frame)
	var c []byte
	last := len(f.hist) - 1
	if last >= 0 && cap(f.hist[last])-len(f.hist[last]) >= n {
		c = f.hist[last]
	}
	grow := 0 // the bytes of a new chunk
	if c == nil {
		grow = lazyChunkMin
		if last >= 0 {
			grow = min(2*cap(f.hist[last]), lazyChunkMax)
		}
		grow = max(grow, n)
	}
	prev := &f.prev[in&1]
	// The bytes held grow by the new chunk, unless it is a spare (held
	// already), and by the prev copy when the frame does not fit it.
	reuse := c == nil && grow == lazyChunkMax && len(z.spare) > 0
	need := max(len(frame)-cap(*prev), 0)
	if c == nil && !reuse {
		need += grow
	}
	if !k.diverge {
		// Spares count against the budget: rather than catch a flow up
		// early, drop those it would not reuse.
		keep := 0
		if reuse {
			keep = 1
		}
		for z.used+need > z.budget && len(z.spare) > keep {
			z.spare[len(z.spare)-1] = nil
			z.spare = z.spare[:len(z.spare)-1]
			z.used -= lazyChunkMax
		}
	}
	if k.diverge || z.used+need > z.budget {
		if !k.diverge && len(f.hist) > 0 {
			z.stats.early++
		}
		z.catchUp(f)
		return false
	}
	if c == nil {
		if reuse {
			s := len(z.spare)
			c, z.spare = z.spare[s-1][:0], z.spare[:s-1]
		} else {
			c = make([]byte, 0, grow)
			z.used += cap(c)
		}
		f.hist = append(f.hist, c)
	}
	ns := now.UnixNano()
	c = append(c, byte(in))
	c = binary.AppendVarint(c, ns-f.last)
	c = binary.AppendUvarint(c, uint64(len(frame)))
	c = putDelta(c, frame, *prev)
	f.hist[len(f.hist)-1] = c
	f.last = ns
	if len(frame) > cap(*prev) {
		// Made to the frame's length: the capacity the budget counted.
		z.used += len(frame) - cap(*prev)
		*prev = make([]byte, 0, len(frame))
	}
	*prev = append((*prev)[:0], frame...)
	z.stats.peak = max(z.stats.peak, z.used)
	z.stats.skipped++
	return true
}

// putDelta appends frame as a delta against prev: runs of (bytes equal to
// prev's at the same offsets: uvarint count; then bytes that differ:
// uvarint count and the bytes) up to the frame's length. Equal runs
// shorter than 4 bytes are taken into the differing ones.
func putDelta(b, frame, prev []byte) []byte {
	m := min(len(frame), len(prev)) // past m every byte differs
	for i := 0; i < len(frame); {
		s := i
		i = equalUpTo(frame, prev, i, m)
		d := i
		for i < len(frame) {
			if i >= m {
				i = len(frame)
				break
			}
			if frame[i] != prev[i] {
				i++
				continue
			}
			j := i
			for j < m && j-i < 4 && frame[j] == prev[j] {
				j++
			}
			if j-i >= 4 || j == len(frame) {
				break
			}
			i = j
		}
		b = binary.AppendUvarint(b, uint64(d-s))
		b = binary.AppendUvarint(b, uint64(i-d))
		b = append(b, frame[d:i]...)
	}
	return b
}

// equalUpTo returns the first offset from i, up to m, where a and b differ
// (m if none), comparing 8 bytes at a time.
func equalUpTo(a, b []byte, i, m int) int {
	for ; i+8 <= m; i += 8 {
		if x := binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:]); x != 0 {
			return i + bits.TrailingZeros64(x)/8
		}
	}
	for i < m && a[i] == b[i] {
		i++
	}
	return i
}

// getDelta rebuilds in dst (of the frame's length) the frame putDelta
// encoded at the start of b against prev, and returns the rest of b.
func getDelta(dst, b, prev []byte) []byte {
	for i := 0; i < len(dst); {
		same, w := binary.Uvarint(b)
		b = b[w:]
		diff, w := binary.Uvarint(b)
		b = b[w:]
		i += copy(dst[i:i+int(same)], prev[i:])
		i += copy(dst[i:i+int(diff)], b[:diff])
		b = b[diff:]
	}
	return b
}

// eagerKey catches the flow of key up and makes it eager.
func (z *lazyShadow) eagerKey(key packedKey) {
	f := z.flows[key]
	if f == nil {
		z.flows[key] = &lazyFlow{eager: true}
		return
	}
	if !f.eager {
		z.catchUp(f)
	}
}

// catchUp feeds f's history to the shadow engine, its verdicts
// discarded, and makes f eager. The caller sets the clock again before
// its next frame.
func (z *lazyShadow) catchUp(f *lazyFlow) {
	f.eager = true
	if len(f.hist) == 0 {
		return
	}
	z.stats.caught++
	z.catching = true
	var prev [2][]byte // the frames rebuilt so far, per port
	ns := int64(0)
	for i, h := range f.hist {
		for len(h) > 0 {
			in := gateway.PortID(h[0])
			d, w := binary.Varint(h[1:])
			h = h[1+w:]
			ns += d
			n, w := binary.Uvarint(h)
			h = h[w:]
			p := &prev[in&1]
			z.buf = slices.Grow(z.buf[:0], int(n))[:n]
			h = getDelta(z.buf, h, *p)
			*p = append((*p)[:0], z.buf...)
			// The engine may rewrite the frame it judges: z.buf, not
			// the copy the next delta reads.
			z.setNow(time.Unix(0, ns))
			z.engine().Handle(in, z.buf, discardTx{})
			z.stats.fed++
		}
		if cap(f.hist[i]) == lazyChunkMax {
			z.spare = append(z.spare, f.hist[i]) // still held: still counted
		} else {
			z.used -= cap(f.hist[i])
		}
	}
	z.catching = false
	z.used -= cap(f.prev[0]) + cap(f.prev[1])
	f.hist, f.prev = nil, [2][]byte{}
}

// diverges reports whether the enforcing engine's judgement of a frame
// shows enforcement (see the top of this file): reported is true when it
// reported anything but a rate detection, exact when it forwarded the
// frame as fed (same bytes), injected counts the frames it crafted; p is
// the frame as fed.
func diverges(p *packet.Packet, reported, exact bool, injected int) bool {
	return reported || !exact || injected > 0 || p.Proto == packet.ProtoTCP && p.HasL4 && p.Flags&packet.TCPRst != 0
}

// reportedAny reports whether evs holds an event other than a rate
// detection.
func reportedAny(evs []pendingEvent) bool {
	for i := range evs {
		if evs[i].kind != evDetection {
			return true
		}
	}
	return false
}

// minTimeout is the shortest idle timeout of the engines (the gateway's
// default TCPClosed): no flow expires in a capture shorter than it.
const minTimeout = tcpClosed

// lazyClock reports whether the captures' stamps let catch-ups replay
// old times (see the top of this file): they come in time order, or span
// less than any flow's timeout, so that no flow ever expires.
func lazyClock(ms *midstream) bool {
	return !ms.backward || ms.latest.Sub(ms.earliest) < minTimeout
}

// lazyKeyOf is the flow key of a decoded frame for the lazy shadow (that
// of its lane, shard.go flowOf).
func lazyKeyOf(p *packet.Packet) lazyKey {
	k, ok := flowOf(p)
	if !ok {
		return lazyKey{}
	}
	return lazyKey{keyed: true, key: packKey(k)}
}

// flowOf is the flow a frame belongs to for sharding and the lazy
// shadow: TCP and UDP by their direction-independent endpoints, ICMP
// echoes by their addresses and identifier, ICMP errors by the flow of
// the packet they quote (the engine relates them to it); ok is false for
// every other frame, which any engine judges on its own.
func flowOf(p *packet.Packet) (k flowKey, ok bool) {
	if p.IPVersion == 0 || p.Fragment {
		return flowKey{}, false
	}
	switch p.Proto {
	case packet.ProtoTCP, packet.ProtoUDP:
		if !p.HasL4 {
			return flowKey{}, false
		}
		k, _ = keyOf(p)
		return k, true
	case packet.ProtoICMP, packet.ProtoICMPv6:
		if id, _, req, reply := echoOf(p); req || reply {
			return flowKeyOf(netip.AddrPortFrom(p.Src, id), netip.AddrPortFrom(p.Dst, id)), true
		}
		return quotedFlow(p)
	}
	return flowKey{}, false
}
