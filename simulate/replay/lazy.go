package replay

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
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
// (its history: where each is in its capture, with its stamp; a
// synthesised frame's bytes) instead of judging them, and feeds them,
// read again from the captures, to the shadow engine only when the flow
// diverges (catch-up): at its first frame the
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
	// hist holds the frames not judged yet, in chunks that never move,
	// each frame as: a tag (1 byte: its port, entryInline), its stamp
	// less the previous frame's (zigzag varint, ns), and where it is in
	// its capture (frameSrc: the file, uvarint; the offset less the
	// previous frame's, zigzag varint; the length and the link type,
	// uvarints), read again at a catch-up; or, for a frame synthesised
	// (entryInline), its length (uvarint) and bytes.
	hist    [][]byte
	last    int64 // the previous frame's stamp (ns)
	lastOff int64 // the previous frame's offset in its capture
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
	used     int       // bytes held: the capacity of all histories' chunks and of the spares
	budget   int
	buf, raw []byte
	pkt      packet.Packet
	spare    [][]byte // chunks of lazyChunkMax bytes, for reuse
	stats    lazyStats
	// The captures (Run's paths, by frameSrc.file), opened by a catch-up
	// to read frames again, and the first error doing so (close).
	paths []string
	files []*os.File
	err   error
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
// history; setNow sets its clock; paths are the captures, read again
// by catch-ups.
func newLazyShadow(mk func() *gateway.Engine, setNow func(time.Time), budget int, paths []string) *lazyShadow {
	return &lazyShadow{mk: mk, setNow: setNow, flows: map[packedKey]*lazyFlow{}, budget: budget, paths: paths}
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
	src     frameSrc // where the frame is in its capture, for its history
}

// frameSrc is where a frame fed to the engines was read: n bytes at off
// of capture file (by Run's paths), of link type link, fed as
// toEthernet made them; ok is false for a frame synthesised.
type frameSrc struct {
	ok   bool
	link packet.LinkType
	file int32
	n    int32
	off  int64
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
	// The most an entry takes: its tag and stamp, and where the frame is
	// in its capture, or its length and bytes.
	n := 1 + 2*binary.MaxVarintLen64 + 3*binary.MaxVarintLen32
	if !k.src.ok {
		n += len(frame)
	}
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
	// The bytes held grow by the new chunk, unless it is a spare (held
	// already).
	reuse := c == nil && grow == lazyChunkMax && len(z.spare) > 0
	need := 0
	if c == nil && !reuse {
		need = grow
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
	if src := &k.src; src.ok {
		c = append(c, byte(in&1))
		c = binary.AppendVarint(c, ns-f.last)
		c = binary.AppendUvarint(c, uint64(src.file))
		c = binary.AppendVarint(c, src.off-f.lastOff)
		c = binary.AppendUvarint(c, uint64(src.n))
		c = binary.AppendUvarint(c, uint64(src.link))
		f.lastOff = src.off
	} else {
		c = append(c, byte(in&1)|entryInline)
		c = binary.AppendVarint(c, ns-f.last)
		c = binary.AppendUvarint(c, uint64(len(frame)))
		c = append(c, frame...)
	}
	f.hist[len(f.hist)-1] = c
	f.last = ns
	z.stats.peak = max(z.stats.peak, z.used)
	z.stats.skipped++
	return true
}

// entryInline tags a history entry that holds its frame's bytes.
const entryInline = 2

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
	ns, off := int64(0), int64(0)
	for i, h := range f.hist {
		for len(h) > 0 {
			tag := h[0]
			in := gateway.PortID(tag & 1)
			d, w := binary.Varint(h[1:])
			h = h[1+w:]
			ns += d
			var frame []byte
			if tag&entryInline != 0 {
				n, w := binary.Uvarint(h)
				h = h[w:]
				// The engine may rewrite the frame it judges: a copy.
				z.buf = append(z.buf[:0], h[:n]...)
				h = h[n:]
				frame = z.buf
			} else {
				file, w1 := binary.Uvarint(h)
				d, w2 := binary.Varint(h[w1:])
				n, w3 := binary.Uvarint(h[w1+w2:])
				link, w4 := binary.Uvarint(h[w1+w2+w3:])
				h = h[w1+w2+w3+w4:]
				off += d
				frame = z.reread(int(file), off, int(n), packet.LinkType(link))
			}
			if frame == nil {
				continue // not read again: z.err says why
			}
			z.setNow(time.Unix(0, ns))
			z.engine().Handle(in, frame, discardTx{})
			z.stats.fed++
		}
		if cap(f.hist[i]) == lazyChunkMax {
			z.spare = append(z.spare, f.hist[i]) // still held: still counted
		} else {
			z.used -= cap(f.hist[i])
		}
	}
	z.catching = false
	f.hist = nil
}

// reread reads again the n bytes at off of capture file and returns them
// as the frame fed when they were read (toEthernet); nil, with z.err
// set, when they cannot be read.
func (z *lazyShadow) reread(file int, off int64, n int, link packet.LinkType) []byte {
	if file >= len(z.paths) {
		z.fail(fmt.Errorf("replay: what-if: no capture %d to read a frame again from", file))
		return nil
	}
	for len(z.files) <= file {
		z.files = append(z.files, nil)
	}
	if z.files[file] == nil {
		fh, err := os.Open(z.paths[file])
		if err != nil {
			z.fail(fmt.Errorf("replay: what-if: reading frames again: %w", err))
			return nil
		}
		z.files[file] = fh
	}
	z.raw = slices.Grow(z.raw[:0], n)[:n]
	if _, err := z.files[file].ReadAt(z.raw, off); err != nil {
		z.fail(fmt.Errorf("replay: what-if: reading the frame at offset %d of %s again: %w", off, z.paths[file], err))
		return nil
	}
	z.buf = toEthernet(z.buf[:0], link, z.raw, &z.pkt)
	if z.buf == nil {
		z.fail(fmt.Errorf("replay: what-if: the frame at offset %d of %s changed since it was read", off, z.paths[file]))
		return nil
	}
	return z.buf
}

func (z *lazyShadow) fail(err error) {
	if z.err == nil {
		z.err = err
	}
}

// close closes the captures reread opened and returns the first error of
// the lazy shadow.
func (z *lazyShadow) close() error {
	for _, f := range z.files {
		if f != nil {
			_ = f.Close()
		}
	}
	z.files = nil
	return z.err
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
