package gateway

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/rules"
)

// flowKey identifies a connection or datagram flow independently of the
// direction of a packet: the lower endpoint (by address, then port) is a.
type flowKey struct {
	a, b   netip.Addr
	pa, pb uint16
	proto  uint8
}

// keyOf returns the canonical key of p's flow and whether p travels from a
// to b.
func keyOf(p *packet.Packet) (flowKey, bool) {
	return keyOfAddrs(p.Src, p.Dst, p.SrcPort, p.DstPort, p.Proto)
}

// keyOfAddrs is keyOf for a packet from src:sport to dst:dport.
func keyOfAddrs(src, dst netip.Addr, sport, dport uint16, proto uint8) (flowKey, bool) {
	c := src.Compare(dst)
	if c < 0 || (c == 0 && sport <= dport) {
		return flowKey{a: src, b: dst, pa: sport, pb: dport, proto: proto}, true
	}
	return flowKey{a: dst, b: src, pa: dport, pb: sport, proto: proto}, false
}

// Flow classes for eviction. A full table evicts the least recently used
// flow of the lowest class first: half-open, closing, reset and not yet
// answered flows go before established allowed ones, so a SYN or datagram
// flood cannot push out the sessions the plant runs on.
const (
	classTransient   = 0 // handshake in progress, closing, closed, unanswered UDP
	classEstablished = 1 // TCP established, or UDP answered, and allowed
	numClasses       = 2
	noSlot           = -1
)

// side is one end of a flow, as the sender of a packet: the client (the
// initiator) or the server (the responder). It is the one encoding of
// direction of the flow's state: it indexes the per-sender arrays of a
// flow (dir, l2, pkts, bytes) and of its inspector.
type side uint8

const (
	sideClient side = 0
	sideServer side = 1
)

// other returns the opposite end.
func (s side) other() side { return s ^ 1 }

// sideOf returns the side of the sender of a packet that travels from the
// key's a end when fromA.
func (f *flow) sideOf(fromA bool) side {
	if fromA == f.aIsClient {
		return sideClient
	}
	return sideServer
}

// tcpState is the connection state the normaliser tracks (RFC 9293
// section 3.3.2, reduced to what a middlebox sees).
type tcpState uint8

const (
	tcpNone        tcpState = iota
	tcpSynSent              // client SYN seen
	tcpSynReceived          // server SYN-ACK seen
	tcpEstablished          // handshake complete (or picked up mid-stream)
	tcpClosing              // FIN seen in at least one direction
	tcpClosed               // RST seen, both FINs acknowledged, or reset by a verdict
)

// l2tmpl is a copy of the link-layer header of the frames one side sends,
// used to craft frames that side would send (RST, replies) with the right
// MACs and VLAN tags.
type l2tmpl struct {
	b [maxL2Hdr]byte
	n uint8
}

func (t *l2tmpl) set(frame []byte, l3off int) {
	if l3off > maxL2Hdr || l3off > len(frame) {
		return
	}
	t.n = uint8(copy(t.b[:], frame[:l3off]))
}

// flow is one slot of the flow table.
//
// Locking: the table's mutex guards the fields marked (table): the key,
// the list links, the class, lastSeen, expires and gen. The flow's own mu
// guards everything else. gen is written with both locks held, so a
// goroutine that found the slot under the table lock and then took mu can
// tell whether the slot was recycled in between. The lock order is table
// then flow, and the table side only ever TryLocks a flow, so the two
// goroutines calling Handle never deadlock.
type flow struct {
	// (table)
	key        flowKey
	prev, next int32
	class      uint8
	inUse      bool
	lastSeen   int64 // unix ns
	timeout    int64 // ns of idleness after which the flow expires
	gen        uint32

	mu sync.Mutex // guards the rest

	id         uint64
	aIsClient  bool   // key.a is the initiator
	clientPort PortID // ingress port of the initiator's frames
	rf         rules.Flow
	// rsGen is the generation (rules.Ruleset.Generation) of the ruleset
	// that judged the flow: a number, not the ruleset, so that an idle
	// flow does not keep a replaced policy in memory after a reload.
	rsGen     uint64
	verdict   rules.Verdict // L3/L4 verdict of the flow
	inspect   protocols.Proto
	monitor   bool // the flow's conduit is in monitor mode
	midstream bool // picked up without handshake (monitor mode only)
	state     tcpState
	answered  bool // UDP: the responder has sent; ICMP echo: a reply crossed
	// ICMP echo flows: echo requests sent with the flow's identifier;
	// bit i of echoMask stands for sequence number echoHi-i, set while
	// that request awaits its reply (RFC 792, RFC 4443 section 4).
	echoHi   uint16
	echoMask uint64
	dir      [2]half // indexed by sender: 0 client, 1 server
	l2       [2]l2tmpl
	// insp is the parser state of an inspected flow (inspect is not
	// ProtoNone). It is taken when the handshake completes or the first
	// payload arrives, never for a half-open connection (attachInspector):
	// a SYN costs a slot of the table, not inspection memory.
	insp       *inspector
	halfOpen   bool // counted in table.half against the client's address (Engine.leaveHalfOpen)
	reported   bool // a flow-level deny/alert event was emitted for this ruleset
	bypassed   bool // offered to Config.Bypass (bypass.go)
	wscaleBoth bool
	// appliedClass and appliedTimeout mirror the (table) class and timeout
	// last set through settle, so that most packets need no table lock.
	appliedClass   uint8
	appliedTimeout time.Duration

	// Statistics for the status endpoint (Engine.Flows), indexed by
	// sender: 0 client, 1 server.
	start      int64 // unix ns of the first packet
	pkts       [2]uint64
	bytes      [2]uint64
	pdus       uint64
	pdusDenied uint64 // denied or alerted (monitor)
}

// half is the normaliser's view of one direction (one sender).
type half struct {
	hasISN  bool
	isn     uint32
	nxt     uint32 // next sequence number expected: every byte before it has been inspected
	hasAck  bool
	ack     uint32 // highest acknowledgement this sender sent (of the other side)
	win     uint32 // last window this sender advertised (scaled)
	wscale  uint8
	sentWS  bool
	finSeq  uint32
	fin     bool
	blocked bool   // a `drop` verdict: no data at or after blockAt crosses
	blockAt uint32 // first sequence number not forwarded
	lastWin uint16 // raw window field of the last segment (for crafted replies)
	// A SYN this (client) side sent on the open connection and that
	// crossed (tcp.go, RFC 5961 section 4), kept until the server
	// answers: a SYN-ACK acknowledging it means the server had no
	// connection left, and the flow starts again from this SYN (reopen).
	synPending bool
	synSentWS  bool
	synWS      uint8
	synWin     uint16
	synSeq     uint32
}

// open records this side's SYN (or SYN-ACK) p of frame: its initial
// sequence number, window scale option (RFC 7323 section 2) and window.
func (h *half) open(frame []byte, p *packet.Packet) {
	h.hasISN, h.isn, h.nxt = true, p.Seq, p.Seq+1
	h.wscale, h.sentWS = p.TCPWindowScale(frame)
	h.win, h.lastWin = uint32(p.Window), p.Window
}

// advertise records the acknowledgement and window of a segment p this
// side sent; scaled: both SYNs negotiated window scaling.
func (h *half) advertise(p *packet.Packet, scaled bool) {
	if !h.hasAck || seqGT(p.Ack, h.ack) {
		h.hasAck, h.ack = true, p.Ack
	}
	h.lastWin = p.Window
	h.win = uint32(p.Window)
	if scaled {
		h.win <<= min(h.wscale, 14)
	}
}

// accepts reports whether data up to (not including) end fits the
// window this side, as the receiver, last advertised.
func (h *half) accepts(end uint32) bool {
	return !h.hasAck || !seqGT(end, h.ack+max(h.win, 1))
}

// finish records this side's FIN after the byte before end.
func (h *half) finish(end uint32) {
	if !h.fin {
		h.fin, h.finSeq = true, end
		h.nxt = end + 1
	}
}

// table is the bounded flow table: a map from key to slot over a fixed
// number of slots, with one LRU list per class and a free list.
//
// The slots are allocated in chunks of chunkSlots as the table first
// holds that many flows, never freed: an idle gateway does not hold (nor
// have the garbage collector scan) the 10 MiB of the default 16,384
// slots, and a slot never moves once handed out (issue 18: RSS). Slots
// from fresh up have never been used; alloc takes a released slot first,
// then the next fresh one.
type table struct {
	mu     sync.Mutex // guards the map, the lists and the (table) fields of every slot
	m      map[flowKey]int32
	chunks [][]flow          // slot i is chunks[i/chunkSlots][i%chunkSlots]; nil past fresh
	n      int32             // number of slots (Config.MaxFlows)
	head   [numClasses]int32 // most recently used
	tail   [numClasses]int32 // least recently used
	count  [numClasses]int
	free   int32 // released slots
	fresh  int32 // slots fresh and up never used
	used   int
	half   halfOpenTable
}

// chunkSlots is the number of slots allocated at once (about 156 KiB):
// at most 64 allocations over the life of the default table.
const (
	chunkBits  = 8
	chunkSlots = 1 << chunkBits
)

func newTable(n int) *table {
	t := &table{m: make(map[flowKey]int32, n), chunks: make([][]flow, (n+chunkSlots-1)/chunkSlots), n: int32(n), free: noSlot}
	t.half.init(halfOpenLimit(n))
	for c := range numClasses {
		t.head[c], t.tail[c] = noSlot, noSlot
	}
	return t
}

// slot returns slot i, which alloc has handed out at least once.
func (t *table) slot(i int32) *flow {
	return &t.chunks[i>>chunkBits][i&(chunkSlots-1)]
}

// full reports whether no slot is free. Caller holds t.mu.
func (t *table) full() bool {
	return t.free == noSlot && t.fresh >= t.n
}

// take removes a free slot from the free list, or the next fresh slot
// (allocating its chunk when it is the chunk's first), and returns it.
// Caller holds t.mu and has checked !t.full().
func (t *table) take() int32 {
	if i := t.free; i != noSlot {
		t.free = t.slot(i).next
		return i
	}
	i := t.fresh
	if c := &t.chunks[i>>chunkBits]; *c == nil {
		*c = make([]flow, min(chunkSlots, int(t.n-i)))
	}
	t.fresh++
	return i
}

// unlink removes slot i from its class list. Caller holds t.mu.
func (t *table) unlink(i int32) {
	f := t.slot(i)
	if f.prev != noSlot {
		t.slot(f.prev).next = f.next
	} else {
		t.head[f.class] = f.next
	}
	if f.next != noSlot {
		t.slot(f.next).prev = f.prev
	} else {
		t.tail[f.class] = f.prev
	}
	f.prev, f.next = noSlot, noSlot
	t.count[f.class]--
}

// pushFront makes slot i the most recently used of class c. Caller holds t.mu.
func (t *table) pushFront(i int32, c uint8) {
	f := t.slot(i)
	f.class = c
	f.prev = noSlot
	f.next = t.head[c]
	if t.head[c] != noSlot {
		t.slot(t.head[c]).prev = i
	} else {
		t.tail[c] = i
	}
	t.head[c] = i
	t.count[c]++
}

// touch marks slot i used now. Caller holds t.mu.
func (t *table) touch(i int32, now int64) {
	f := t.slot(i)
	f.lastSeen = now
	if t.head[f.class] != i {
		c := f.class
		t.unlink(i)
		t.pushFront(i, c)
	}
}

// setClass moves slot i to class c and sets its idle timeout. Caller
// holds t.mu.
func (t *table) setClass(i int32, c uint8, timeout int64) {
	f := t.slot(i)
	f.timeout = timeout
	if f.class != c {
		t.unlink(i)
		t.pushFront(i, c)
	}
}

// release returns slot i to the free list. Caller holds t.mu and f.mu
// (or knows nobody else can reach the slot).
func (t *table) release(i int32) *inspector {
	f := t.slot(i)
	delete(t.m, f.key)
	t.unlink(i)
	if f.halfOpen {
		t.half.leave(f.key.a, f.key.b, f.aIsClient)
		f.halfOpen = false
	}
	insp := f.insp
	f.insp = nil
	f.gen++
	f.inUse = false
	f.next = t.free
	t.free = i
	t.used--
	return insp
}

// over reports whether the flow of slot f has ended by time now, so
// that the packet at now must start a new flow on its key, exactly as if
// the flow had been swept: it has been idle past its timeout (a flow
// whose timeout is not set yet has just been created), or, when
// clockBack is positive (offline replay of merged captures, see
// Config.ClockBack), its last packet is stamped more than clockBack
// after now. Caller holds the table lock.
func (f *flow) over(now, clockBack int64) bool {
	return f.timeout > 0 && f.lastSeen+f.timeout <= now || clockBack > 0 && f.lastSeen-now > clockBack
}

// releaseOver releases slot i when its flow is over at now (see over) and
// nobody holds it, handing its inspector to onFree, and reports whether it
// did. Caller holds t.mu.
func (t *table) releaseOver(i int32, now, clockBack int64, onFree func(*inspector)) bool {
	f := t.slot(i)
	if !f.over(now, clockBack) || !f.mu.TryLock() {
		return false
	}
	onFree(t.release(i))
	f.mu.Unlock()
	return true
}

// lockFlow returns the flow of key k locked, with its slot, or nil when
// there is none or its slot was recycled between the lookup and the lock.
// live, when not nil, must accept the flow under the table lock (e.g. not
// expired). The caller unlocks f.mu.
func (t *table) lockFlow(k flowKey, live func(*flow) bool) (*flow, int32) {
	t.mu.Lock()
	i, ok := t.m[k]
	var gen uint32
	if ok {
		gen = t.slot(i).gen
		ok = live == nil || live(t.slot(i))
	}
	t.mu.Unlock()
	if !ok {
		return nil, noSlot
	}
	f := t.slot(i)
	f.mu.Lock()
	if f.gen != gen || !f.inUse {
		f.mu.Unlock()
		return nil, noSlot
	}
	return f, i
}

// reclaimExpired releases up to max expired flows from the least recently
// used end of each class, handing their inspectors to onFree, and returns
// how many it released. It stops at a flow that is not expired or is busy
// on another goroutine. Caller holds t.mu.
func (t *table) reclaimExpired(now int64, max int, onFree func(*inspector)) int {
	n := 0
	for c := range numClasses {
		for range max {
			j := t.tail[c]
			if j == noSlot || t.slot(j).lastSeen+t.slot(j).timeout > now || !t.slot(j).mu.TryLock() {
				break
			}
			onFree(t.release(j))
			t.slot(j).mu.Unlock()
			n++
		}
	}
	return n
}

// alloc takes a free slot for key k, or reclaims one: first an expired
// flow, then the least recently used transient flow, then an established
// flow idle for at least minIdle. It returns noSlot when every candidate
// is busy or too fresh. evicted reports the class of a reclaimed live flow
// (-1 when none). Caller holds t.mu. The returned slot is in class
// classTransient, keyed and in the map; its flow fields other than the
// (table) ones are for the caller to reset under f.mu.
func (t *table) alloc(k flowKey, now, minIdle int64, onFree func(*inspector)) (i int32, evicted int, expired int) {
	evicted = -1
	// Reclaim up to a few expired flows from the LRU ends first: bounded
	// work per new flow keeps expiry off a separate hot loop.
	expired = t.reclaimExpired(now, 2, onFree)
	if t.full() {
		for c := range numClasses {
			j := t.tail[c]
			for tries := 0; j != noSlot && tries < 4; tries++ {
				f := t.slot(j)
				if c == classEstablished && now-f.lastSeen < minIdle {
					break // the LRU established flow is fresh: refuse rather than cut a session
				}
				if f.mu.TryLock() {
					onFree(t.release(j))
					f.mu.Unlock()
					evicted = c
					break
				}
				j = f.prev
			}
			if !t.full() {
				break
			}
		}
	}
	if t.full() {
		return noSlot, evicted, expired
	}
	i = t.take()
	f := t.slot(i)
	f.key = k
	f.inUse = true
	f.lastSeen = now
	f.timeout = 0
	t.m[k] = i
	t.used++
	t.pushFront(i, classTransient)
	return i, evicted, expired
}

// halfOpenRows and halfOpenCols size the per-source half-open counters: a
// count-min sketch of two rows of 4096 counters (32 KiB, fixed at start).
// A source's count is the smaller of its two counters, so another
// address is refused in a flooder's stead only when both its counters
// collide with heavy sources (about 1 in 16 million for one flooder).
const (
	halfOpenRows = 2
	halfOpenBits = 12
	halfOpenCols = 1 << halfOpenBits
)

// halfOpenLimit is the number of half-open TCP connections (SYN seen,
// handshake not complete) one client address may have in a table of n
// flows: n/32 (512 with the default 16,384), at least 16 and at most
// 4096. Sixteen flooding addresses fill half the table with half-open
// flows at most; established sessions are never evicted for them
// (classEstablished), and every other client still finds a slot.
func halfOpenLimit(n int) uint32 {
	return uint32(min(max(n/32, 16), 4096))
}

// halfOpenTable counts half-open TCP connections per client address
// without allocating: a SYN over the limit is refused (DropHalfOpen) and
// counted for the syn_flood detection. Counters are atomic: a flow
// enters under the table lock and leaves under its own lock (settle) or
// the table's (release).
type halfOpenTable struct {
	seed  maphash.Seed
	limit uint32
	n     [halfOpenRows][halfOpenCols]atomic.Uint32
}

func (h *halfOpenTable) init(limit uint32) {
	h.seed = maphash.MakeSeed()
	h.limit = limit
}

// cols returns addr's counter in each row.
func (h *halfOpenTable) cols(addr netip.Addr) (c0, c1 uint32) {
	b := addr.As16()
	x := maphash.Bytes(h.seed, b[:])
	return uint32(x) & (halfOpenCols - 1), uint32(x>>32) & (halfOpenCols - 1)
}

// count returns the estimated number of half-open connections of addr
// (never fewer than it has).
func (h *halfOpenTable) count(addr netip.Addr) uint32 {
	c0, c1 := h.cols(addr)
	return min(h.n[0][c0].Load(), h.n[1][c1].Load())
}

// full reports whether addr has reached the limit.
func (h *halfOpenTable) full(addr netip.Addr) bool { return h.count(addr) >= h.limit }

func (h *halfOpenTable) enter(addr netip.Addr) {
	c0, c1 := h.cols(addr)
	h.n[0][c0].Add(1)
	h.n[1][c1].Add(1)
}

// leave uncounts a half-open flow of key a/b whose client is a when
// aIsClient.
func (h *halfOpenTable) leave(a, b netip.Addr, aIsClient bool) {
	if !aIsClient {
		a = b
	}
	c0, c1 := h.cols(a)
	h.n[0][c0].Add(^uint32(0))
	h.n[1][c1].Add(^uint32(0))
}
