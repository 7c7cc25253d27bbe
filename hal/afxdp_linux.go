package hal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// AF_XDP defaults (PortOptions.RxRingFrames, TxRingFrames, RingFrameSize
// with IOXDP): 512 + 256 UMEM frames of 2 KiB, 1.5 MiB per port, as the
// TPACKET_V2 ring's defaults (with 256 RX frames the TCP phase of `make
// bench-datapath` lost more frames to a full RX ring: 59,522 against the
// ring's 27,416 in one run; with 512, 21,128 against 26,261).
const (
	DefaultXSKRxFrames  = 512
	DefaultXSKTxFrames  = 256
	DefaultXSKFrameSize = 2048
)

// XSKMap is an XDP program's socket map (BPF_MAP_TYPE_XSKMAP) that an
// AF_XDP Port puts its socket in, so that the program attached to the
// port's interface redirects the frames of the port's receive queue to
// it. hal/xdp's FastPath is one (the flow bypass hands the frames it does
// not forward itself to the socket). Register and Unregister are
// control-plane calls, safe for concurrent use.
type XSKMap interface {
	// RegisterXSK makes fd the socket for receive queue queue of the
	// interface ifindex.
	RegisterXSK(ifindex, queue, fd int) error
	// UnregisterXSK removes the socket of that queue; frames of it pass
	// to the kernel's stack from then on.
	UnregisterXSK(ifindex, queue int) error
}

// xskQueue is the one receive queue an AF_XDP Port serves.
const xskQueue = 0

// xskRing is one of the four rings of an AF_XDP socket, mapped into the
// process (Documentation/networking/af_xdp.rst): producer and consumer
// indexes that run freely (masked on access), a flags word
// (XDP_RING_NEED_WAKEUP) and the entries: struct xdp_desc (16 bytes) on
// the RX and TX rings, a u64 UMEM address on the fill and completion rings.
type xskRing struct {
	mem   []byte
	prod  *uint32
	cons  *uint32
	flags *uint32
	descs unsafe.Pointer
	mask  uint32
	size  uint32
}

func (r *xskRing) desc(i uint32) *unix.XDPDesc {
	return (*unix.XDPDesc)(unsafe.Add(r.descs, uintptr(i&r.mask)*unsafe.Sizeof(unix.XDPDesc{})))
}

func (r *xskRing) addr(i uint32) *uint64 {
	return (*uint64)(unsafe.Add(r.descs, uintptr(i&r.mask)*8))
}

func (r *xskRing) needWakeup() bool { return atomic.LoadUint32(r.flags)&unix.XDP_RING_NEED_WAKEUP != 0 }

// xdpPort is the AF_XDP Port: one AF_XDP socket bound to queue 0 of the
// interface in copy mode (XDP_COPY: veth and most drivers without
// zero-copy support; the kernel copies between its buffers and the UMEM),
// with XDP_USE_NEED_WAKEUP, and an XDP program on the interface that
// redirects the queue's frames to the socket (bpf_redirect_map on an
// XSKMAP; frames it cannot redirect pass to the kernel's stack, which
// does not forward them: the ports carry no address and no bridge).
//
// The UMEM (one anonymous mapping, registered with XDP_UMEM_REG) holds
// RxFrames frames that cycle between the fill ring and the RX ring and
// TxFrames frames that cycle between a free list, the TX ring and the
// completion ring. ReadBatch copies frames out of the UMEM and hands
// their frames back on the fill ring at once; WriteBatch copies frames in
// and kicks the kernel (sendto) when the TX ring asks for a wakeup, which
// it always does in copy mode: the kernel then builds one sk_buff per
// frame and transmits it in the caller's context (like the ring's kick).
// Frames the kernel does not take, because the device is down (ENETDOWN)
// or does not take them within txWaitMax, are dropped (dropPending) and
// counted in TxDropped, with the rest of the batch: they never go out
// with a later kick as if fresh.
//
// The program is either the port's own (opts.XSKMap nil: a five-instruction
// redirect, attached through a BPF link held only by this process, never
// pinned: when the process dies the link and the socket go and nothing is
// forwarded) or the caller's (opts.XSKMap: hal/xdp's flow bypass).
//
// The socket sits in the runtime poller, so a reader parks on an empty
// RX ring (the kernel's sk_data_ready wakes it) and Close and deadlines
// work as for the other Ports. RX ring and fill ring memory is touched
// only inside RawConn callbacks, which hold a reference on the descriptor;
// TX memory only under txMu (read), which Close takes for writing before
// it unmaps anything.
//
// Fields under "read side" are touched only by the ReadBatch owner,
// "write side" only by the WriteBatch owner.
type xdpPort struct {
	name    string
	ifindex int
	fd      int
	file    *os.File
	rc      syscall.RawConn
	closed  atomic.Bool

	umem         []byte
	frameSize    int
	rxRing, fill xskRing
	txRing, comp xskRing
	xsk          XSKMap    // where the socket is registered
	ownMap       *ebpf.Map // the port's own XSKMAP (nil with opts.XSKMap)
	ownProg      *ebpf.Program
	ownLink      link.Link
	txMu         sync.RWMutex // read: WriteBatch in progress; write: Close
	rxMu         sync.Mutex   // harvest against release (the rings' unmapping)
	spinReadNs   int64
	busyPoll     bool

	// read side
	rxBatch

	// write side
	txFree []uint64 // UMEM addresses of TX frames not in flight
	// txState is each TX frame's state (txIdle, txQueued, txDropping),
	// by index in the TX part of the UMEM. txDropping frames (txDropN)
	// were dropped on the TX ring (dropPending) and have not come back
	// yet; dropEnd is the ring index after the last dropped descriptor.
	// txInvalid is the socket's tx_invalid_descs (XDP_STATISTICS)
	// accounted for so far.
	txState   []uint8
	txDropN   int
	dropEnd   uint32
	txInvalid uint64
	txBase    uint64 // UMEM offset of the first TX frame

	portCounters
	txDropped atomic.Uint64
}

// xskChannels returns the number of receive queues of the interface
// (ETHTOOL_GCHANNELS: rx plus combined), 1 where the driver does not say.
func xskChannels(name string) int {
	fd, err := ethtoolSocket()
	if err != nil {
		return 1
	}
	defer unix.Close(fd)
	var ch [9]uint32 // struct ethtool_channels
	ch[0] = unix.ETHTOOL_GCHANNELS
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&ch[0])), len(ch)*4)
	if _, err := ethtoolIoctl(fd, name, buf); err != nil {
		return 1
	}
	return max(int(ch[5])+int(ch[8]), 1)
}

// pow2 rounds n up to a power of two.
func pow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

func setsockoptPtr(fd, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

// openXDP opens the AF_XDP Port.
func openXDP(name string, opts PortOptions) (p Port, err error) {
	fs := DefaultXSKFrameSize
	if opts.RingFrameSize > DefaultXSKFrameSize-unix.XDP_PACKET_HEADROOM {
		fs = 4096 // chunk sizes are powers of two from 2048 up to a page
	}
	if fs > os.Getpagesize() || opts.RingFrameSize > fs-unix.XDP_PACKET_HEADROOM {
		return nil, fmt.Errorf("hal: port %s: AF_XDP: frames of %d bytes do not fit a UMEM frame: %w", name, opts.RingFrameSize, ErrNotSupported)
	}
	rxN, txN := opts.RxRingFrames, opts.TxRingFrames
	if rxN <= 0 {
		rxN = DefaultXSKRxFrames
	}
	if txN <= 0 {
		txN = DefaultXSKTxFrames
	}
	rxN, txN = pow2(rxN), pow2(txN)
	ni, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("hal: port %s: %w", name, err)
	}
	ifi := ni.Index
	if q := xskChannels(name); q > 1 {
		return nil, fmt.Errorf("hal: port %s: AF_XDP serves one receive queue and the interface has %d (ethtool -L %s combined 1): %w",
			name, q, name, ErrNotSupported)
	}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("hal: port %s: socket(AF_XDP): %w: %w", name, ErrNotSupported, err)
	}
	x := &xdpPort{name: name, ifindex: ifi, fd: fd, frameSize: fs}
	defer func() {
		if err != nil {
			x.release()
		}
	}()
	fail := func(what string, err error) (Port, error) {
		return nil, fmt.Errorf("hal: port %s: AF_XDP: %s: %w", name, what, err)
	}
	x.umem, err = unix.Mmap(-1, 0, (rxN+txN)*fs, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fail("mmap UMEM", err)
	}
	reg := unix.XDPUmemReg{Addr: uint64(uintptr(unsafe.Pointer(&x.umem[0]))), Len: uint64(len(x.umem)), Size: uint32(fs)}
	if err := setsockoptPtr(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return fail("XDP_UMEM_REG", err)
	}
	for _, r := range []struct {
		opt, n int
	}{{unix.XDP_UMEM_FILL_RING, rxN}, {unix.XDP_UMEM_COMPLETION_RING, txN}, {unix.XDP_RX_RING, rxN}, {unix.XDP_TX_RING, txN}} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, r.opt, r.n); err != nil {
			return fail(fmt.Sprintf("ring option %d size %d", r.opt, r.n), err)
		}
	}
	var off unix.XDPMmapOffsets
	offLen := uint32(unsafe.Sizeof(off))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&offLen)), 0); e != 0 {
		return fail("XDP_MMAP_OFFSETS", e)
	}
	for _, r := range []struct {
		ring  *xskRing
		o     unix.XDPRingOffset
		pgoff int64
		n     int
		esz   int
	}{
		{&x.rxRing, off.Rx, unix.XDP_PGOFF_RX_RING, rxN, 16},
		{&x.txRing, off.Tx, unix.XDP_PGOFF_TX_RING, txN, 16},
		{&x.fill, off.Fr, unix.XDP_UMEM_PGOFF_FILL_RING, rxN, 8},
		{&x.comp, off.Cr, unix.XDP_UMEM_PGOFF_COMPLETION_RING, txN, 8},
	} {
		m, err := unix.Mmap(fd, r.pgoff, int(r.o.Desc)+r.n*r.esz, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return fail("mmap ring", err)
		}
		*r.ring = xskRing{mem: m, mask: uint32(r.n - 1), size: uint32(r.n),
			prod:  (*uint32)(unsafe.Pointer(&m[r.o.Producer])),
			cons:  (*uint32)(unsafe.Pointer(&m[r.o.Consumer])),
			flags: (*uint32)(unsafe.Pointer(&m[r.o.Flags])),
			descs: unsafe.Pointer(&m[r.o.Desc])}
	}
	// Every RX frame starts on the fill ring; TX frames on the free list.
	for i := 0; i < rxN; i++ {
		*x.fill.addr(uint32(i)) = uint64(i * fs)
	}
	atomic.StoreUint32(x.fill.prod, uint32(rxN))
	x.txFree = make([]uint64, 0, txN)
	x.txState = make([]uint8, txN)
	x.txBase = uint64(rxN * fs)
	for i := rxN + txN - 1; i >= rxN; i-- {
		x.txFree = append(x.txFree, uint64(i*fs))
	}
	// Each frame in flight in copy mode is an sk_buff charged to the send
	// buffer: keep it larger than the TX frames so those, not the buffer,
	// bound what is in flight.
	sb := max(opts.SndBufBytes, 4*txN*fs)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sb) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sb)
	}
	// Copy mode sends at most 32 frames per kick unless told more
	// (XDP_MAX_TX_SKB_BUDGET, accepted by the 6.18 kernel here; older
	// kernels refuse it and WriteBatch kicks again on EAGAIN).
	_ = unix.SetsockoptInt(fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, min(txN, MaxBatch))
	if opts.BusyPoll {
		us := max(int(opts.SpinRead/time.Microsecond), 20)
		for _, o := range [][2]int{{unix.SO_PREFER_BUSY_POLL, 1}, {unix.SO_BUSY_POLL, us}, {unix.SO_BUSY_POLL_BUDGET, 64}} {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], o[1]); err != nil {
				return fail(fmt.Sprintf("busy poll (socket option %d)", o[0]), err)
			}
		}
		x.busyPoll = true
	}
	x.spinReadNs = int64(opts.SpinRead)
	sa := &unix.SockaddrXDP{Flags: unix.XDP_COPY | unix.XDP_USE_NEED_WAKEUP, Ifindex: uint32(ifi), QueueID: xskQueue}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind (copy mode, queue 0)", err)
	}
	if opts.XSKMap != nil {
		x.xsk = opts.XSKMap
	} else if err := x.attachOwn(opts.XDPGeneric); err != nil {
		return nil, fmt.Errorf("hal: port %s: AF_XDP: %w", name, err)
	}
	if err := x.xsk.RegisterXSK(ifi, xskQueue, fd); err != nil {
		x.xsk = nil
		return fail("register socket in the XSKMAP", err)
	}
	x.file = os.NewFile(uintptr(fd), "afxdp:"+name) // owns fd from here
	x.rc, err = x.file.SyscallConn()
	if err != nil {
		return fail("raw conn", err)
	}
	x.readFn, x.tryFn = x.doRead, x.doTry
	return x, nil
}

// release frees what openXDP got, in reverse; used on a failed open and
// by Close.
func (x *xdpPort) release() {
	if x.xsk != nil {
		_ = x.xsk.UnregisterXSK(x.ifindex, xskQueue)
		x.xsk = nil
	}
	if x.ownLink != nil {
		_ = x.ownLink.Close()
		x.ownLink = nil
	}
	if x.ownProg != nil {
		_ = x.ownProg.Close()
		x.ownProg = nil
	}
	if x.ownMap != nil {
		_ = x.ownMap.Close()
		x.ownMap = nil
	}
	if x.file != nil {
		_ = x.file.Close()
	} else if x.fd >= 0 {
		_ = unix.Close(x.fd)
	}
	// The socket is closed: no RawConn callback runs now or later. rxMu
	// orders the last harvest before the rings go (a happens-before the
	// race detector can see; file.Close's wait is a runtime semaphore).
	x.rxMu.Lock()
	defer x.rxMu.Unlock()
	x.fd = -1
	for _, r := range []*xskRing{&x.rxRing, &x.txRing, &x.fill, &x.comp} {
		if r.mem != nil {
			_ = unix.Munmap(r.mem)
			*r = xskRing{}
		}
	}
	if x.umem != nil {
		_ = unix.Munmap(x.umem)
		x.umem = nil
	}
}

// xskProgram returns the port's own XDP program: every frame of the
// receive queue goes to the socket in the XSKMAP at the queue's index;
// without one there (bpf_redirect_map's fallback action in the low bits
// of flags, Linux 5.3) it passes to the stack.
func xskProgram() asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), // struct xdp_md rx_queue_index
		asm.LoadMapPtr(asm.R1, 0).WithReference("otgw_xsks"),
		asm.Mov.Imm(asm.R3, 2), // XDP_PASS
		asm.FnRedirectMap.Call(),
		asm.Return(),
	}
}

// attachOwn creates the port's XSKMAP, loads xskProgram and attaches it
// to the interface: native (driver) mode unless generic, falling back to
// generic (skb) mode.
func (x *xdpPort) attachOwn(generic bool) error {
	var err error
	x.ownMap, err = ebpf.NewMap(&ebpf.MapSpec{Name: "otgw_xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: xskQueue + 1})
	if err != nil {
		return fmt.Errorf("create XSKMAP: %w: %w", ErrNotSupported, err)
	}
	insns := xskProgram()
	if err := insns.AssociateMap("otgw_xsks", x.ownMap); err != nil {
		return err
	}
	x.ownProg, err = ebpf.NewProgram(&ebpf.ProgramSpec{Name: "otgw_xsk", Type: ebpf.XDP, Instructions: insns, License: "otgw, see NOTICE"})
	if err != nil {
		return fmt.Errorf("load XDP program: %w: %w", ErrNotSupported, err)
	}
	modes := []link.XDPAttachFlags{link.XDPDriverMode, link.XDPGenericMode}
	if generic {
		modes = modes[1:]
	}
	var errs []error
	for _, m := range modes {
		l, err := link.AttachXDP(link.XDPOptions{Program: x.ownProg, Interface: x.ifindex, Flags: m})
		if err == nil {
			x.ownLink = l
			x.xsk = (*ownXSK)(x)
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("attach XDP program: %w: %w", ErrNotSupported, errors.Join(errs...))
}

// ownXSK is the XSKMap of a port's own program.
type ownXSK xdpPort

func (o *ownXSK) RegisterXSK(_, queue, fd int) error {
	return o.ownMap.Update(uint32(queue), uint32(fd), ebpf.UpdateAny)
}

func (o *ownXSK) UnregisterXSK(_, queue int) error { return o.ownMap.Delete(uint32(queue)) }

func (x *xdpPort) Name() string { return x.name }

func (x *xdpPort) SetReadDeadline(t time.Time) error {
	if x.closed.Load() {
		return ErrClosed
	}
	return x.file.SetReadDeadline(t)
}

// harvest copies up to x.rvlen frames off the RX ring into the caller's
// buffers and puts their UMEM frames back on the fill ring.
func (x *xdpPort) harvest() int {
	x.rxMu.Lock()
	defer x.rxMu.Unlock()
	if x.rxRing.mem == nil { // released
		return 0
	}
	cons := atomic.LoadUint32(x.rxRing.cons)
	prod := atomic.LoadUint32(x.rxRing.prod)
	n := min(int(prod-cons), x.rvlen)
	if n == 0 {
		return 0
	}
	// The fill ring has room for every frame the RX ring holds: both are
	// RxFrames long and each frame is on exactly one of them (or in the
	// kernel between).
	fprod := atomic.LoadUint32(x.fill.prod)
	var bytes uint64
	for i := 0; i < n; i++ {
		d := x.rxRing.desc(cons + uint32(i))
		wire := int(d.Len)
		b := x.rbufs[i]
		size := min(wire, len(b)-VLANHeadroom)
		off := int(d.Addr)
		if off < 0 || off > len(x.umem) || off+size > len(x.umem) { // never from a sane kernel
			off, size = 0, 0
		}
		copy(b[:size], x.umem[off:off+size])
		m := FrameMeta{WireLen: wire, Truncated: wire > size}
		m.ChecksumNotReady = checksumPartial(b[:size])
		if m.Truncated {
			x.rxTrunc.Add(1)
		}
		x.rsizes[i] = size
		if x.rmeta != nil {
			x.rmeta[i] = m
		}
		bytes += uint64(size)
		// Back to the fill ring: the start of its UMEM frame.
		*x.fill.addr(fprod + uint32(i)) = d.Addr - d.Addr%uint64(x.frameSize)
	}
	atomic.StoreUint32(x.rxRing.cons, cons+uint32(n))
	atomic.StoreUint32(x.fill.prod, fprod+uint32(n))
	if x.fill.needWakeup() {
		_, _, _ = unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(x.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	}
	x.rxBytes.Add(bytes)
	return n
}

// doRead runs inside RawConn.Read: it harvests the RX ring, spinning for
// up to SpinRead when it is empty (with BusyPoll, each look preceded by a
// recvfrom that busy-polls the driver); false parks the goroutine until
// the kernel signals a frame (or the deadline or Close).
func (x *xdpPort) doRead(uintptr) bool {
	every := 32 // reading the clock costs more than a look at the ring
	var poll func()
	if x.busyPoll {
		every, poll = 2, x.pollDriver // but less than a busy-poll round
	}
	x.rn = spinHarvest(x.spinReadNs, every, x.harvest, poll)
	return x.rn > 0
}

// doTry runs inside RawConn.Read: one look at the RX ring (with
// BusyPoll, after a busy-poll round), never parking.
func (x *xdpPort) doTry(uintptr) bool {
	if x.busyPoll {
		x.pollDriver()
	}
	x.rn = x.harvest()
	return true
}

// TryReadBatch implements Poller.
func (x *xdpPort) TryReadBatch(bufs [][]byte, sizes []int, meta []FrameMeta) (int, error) {
	return x.tryReadBatch(x.rc, &x.portCounters, &x.closed, bufs, sizes, meta)
}

// pollDriver is one busy-poll round: a recvfrom that makes the kernel
// poll the driver's queue.
func (x *xdpPort) pollDriver() {
	_, _, _ = unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(x.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
}

func (x *xdpPort) ReadBatch(bufs [][]byte, sizes []int, meta []FrameMeta) (int, error) {
	return x.readBatch(x.rc, &x.portCounters, &x.closed, bufs, sizes, meta)
}

// reclaim takes the TX frames the kernel is done with off the completion
// ring, and those of dropped frames once the kernel skipped them.
func (x *xdpPort) reclaim() {
	cons := atomic.LoadUint32(x.comp.cons)
	prod := atomic.LoadUint32(x.comp.prod)
	for i := cons; i != prod; i++ {
		a := *x.comp.addr(i)
		st := x.txStateOf(a)
		switch {
		case st == nil || *st == txIdle:
			continue // not a frame in flight: never from a sane kernel
		case *st == txDropping:
			// Either the kernel had read it before it was marked (sent) or
			// it skipped the marked descriptor and completed it anyway (as
			// Linux 6.18 does: TestXDPPortDropsFramesOnLinkDown receives
			// none of them); a completion does not tell which, so it stays
			// counted as dropped.
			x.txDropN--
		}
		*st = txIdle
		x.txFree = append(x.txFree, a)
	}
	if prod != cons {
		atomic.StoreUint32(x.comp.cons, prod)
	}
	if x.txDropN > 0 && !x.dropAhead(atomic.LoadUint32(x.txRing.cons), atomic.LoadUint32(x.txRing.prod)) {
		x.settleDrops()
	}
}

// dropAhead reports whether dropped descriptors are still on the TX ring
// between the consumer index cons and the producer index prod.
func (x *xdpPort) dropAhead(cons, prod uint32) bool {
	return int32(x.dropEnd-cons) > 0 && int32(prod-x.dropEnd) >= 0
}

// TX frame states (xdpPort.txState).
const (
	txIdle     = iota // on the free list
	txQueued          // on the TX ring or in the kernel, until its completion
	txDropping        // dropped on the TX ring, until the kernel skipped it
)

// txStateOf returns the state of the TX frame at UMEM address a (nil if
// a is not a TX frame's).
func (x *xdpPort) txStateOf(a uint64) *uint8 {
	if a < x.txBase {
		return nil
	}
	i := (a - x.txBase) / uint64(x.frameSize)
	if i >= uint64(len(x.txState)) {
		return nil
	}
	return &x.txState[i]
}

// txDropOption marks a TX descriptor dropped: an option bit no kernel
// defines (XDP_PKT_CONTD is 1, XDP_TX_METADATA 2), so the kernel refuses
// the descriptor as invalid (counting it in XDP_STATISTICS
// tx_invalid_descs) and skips it, sending nothing and completing nothing
// (net/xdp/xsk_queue.h, xskq_cons_is_valid_desc).
const txDropOption = 1 << 31

// dropPending drops the frames on the TX ring the kernel has not taken
// (the device is down, or did not take them within txWaitMax): a
// producer cannot take back what it published, so it marks their
// descriptors invalid (txDropOption), which the kernel skips when it
// reaches them, at the next kicks once the device is up. It returns how
// many it dropped.
//
// The kernel may read a descriptor while it is being marked (it reads
// the ring only inside a kick, or from poll(2) when the runtime's poller
// looks at the socket, and neither while the device is down): it then
// sends the frame (its completion comes as usual, and reclaim takes it
// out of the dropped ones) or skips it, never anything else, as the
// option word is written in one store. One whose completion came
// already is left alone. The UMEM frames of skipped ones come back in
// settleDrops.
func (x *xdpPort) dropPending() int {
	prod := atomic.LoadUint32(x.txRing.prod)
	from := atomic.LoadUint32(x.txRing.cons)
	if x.dropAhead(from, prod) {
		from = x.dropEnd // dropped before
	}
	n := 0
	for i := from; i != prod; i++ {
		d := x.txRing.desc(i)
		st := x.txStateOf(d.Addr)
		if st == nil || *st != txQueued {
			continue // completed meanwhile: sent
		}
		atomic.StoreUint32(&d.Options, txDropOption)
		*st = txDropping
		x.txDropN++
		n++
	}
	x.dropEnd = prod
	return n
}

// settleDrops runs once the kernel has gone past every dropped
// descriptor: each dropped frame was then either skipped (counted in
// tx_invalid_descs, which only dropped descriptors make invalid) or sent
// (its completion ends its txDropping state). When the skipped ones
// account for all txDropping frames, those are free again; until then a
// sent one's completion is still to come, and the frames stay out of use
// however long that takes: the kernel may still be reading one of them,
// and a frame reused early would be overwritten in flight or freed twice
// when its late completion arrives. (Every kernel with AF_XDP counts
// skipped descriptors in tx_invalid_descs.)
func (x *xdpPort) settleDrops() {
	var st unix.XDPStatistics
	l := uint32(unsafe.Sizeof(st))
	if _, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(x.fd), unix.SOL_XDP, unix.XDP_STATISTICS,
		uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&l)), 0); e != 0 {
		return // tried again at the next reclaim
	}
	if st.Tx_invalid_descs-x.txInvalid < uint64(x.txDropN) {
		return
	}
	x.txInvalid = st.Tx_invalid_descs
	x.dropEnd = atomic.LoadUint32(x.txRing.cons) // no dropped descriptor ahead, also after the index wraps
	for i, s := range x.txState {
		if s == txDropping {
			x.txState[i] = txIdle
			x.txFree = append(x.txFree, x.txBase+uint64(i*x.frameSize))
		}
	}
	x.txDropN = 0
}

// kick asks the kernel to transmit what is on the TX ring (in copy mode
// it sends up to 32 frames per call in the caller's context and answers
// EAGAIN when more remain). Raw system call: it never blocks.
func (x *xdpPort) kick() unix.Errno {
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(x.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return e
}

// txPending is the number of descriptors on the TX ring the kernel has
// not taken yet.
func (x *xdpPort) txPending() uint32 {
	return atomic.LoadUint32(x.txRing.prod) - atomic.LoadUint32(x.txRing.cons)
}

// flushTx kicks until the kernel took every descriptor on the TX ring
// (dropped ones included: it skips one per kick) or a kick fails with
// something other than EAGAIN/EBUSY/ENOBUFS/EINTR (returned: ENETDOWN
// when the device is down); bounded by txWaitMax from the first kick
// that left descriptors behind, after which it returns EAGAIN. Either way
// the caller drops what is left (dropPending).
func (x *xdpPort) flushTx() unix.Errno {
	var start time.Time
	for {
		pending := x.txPending()
		if pending == 0 {
			return 0
		}
		if !x.txRing.needWakeup() {
			return 0 // a driver that polls the TX ring itself (zero-copy)
		}
		switch e := x.kick(); e {
		case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.EINTR:
		default:
			return e
		}
		x.reclaim() // the completion ring may be what is full
		if left := x.txPending(); left == 0 {
			return 0
		} else if left < pending {
			continue
		}
		if start.IsZero() {
			start = time.Now()
		} else if time.Since(start) > txWaitMax || x.closed.Load() {
			return unix.EAGAIN
		}
	}
}

func (x *xdpPort) WriteBatch(frames [][]byte) (int, error) {
	if len(frames) == 0 {
		return 0, nil
	}
	x.txMu.RLock()
	defer x.txMu.RUnlock()
	if x.closed.Load() {
		return 0, ErrClosed
	}
	sent := 0
	var waitStart time.Time
	for sent < len(frames) {
		x.reclaim()
		prod := atomic.LoadUint32(x.txRing.prod)
		room := int(x.txRing.size - (prod - atomic.LoadUint32(x.txRing.cons)))
		k := min(len(frames)-sent, room, len(x.txFree))
		var bytes uint64
		var bad unix.Errno
		j := 0
		for ; j < k; j++ {
			f := frames[sent+j]
			if len(f) == 0 {
				bad = unix.EINVAL
				break
			}
			if len(f) > x.frameSize {
				bad = unix.EMSGSIZE
				break
			}
			a := x.txFree[len(x.txFree)-1]
			x.txFree = x.txFree[:len(x.txFree)-1]
			*x.txStateOf(a) = txQueued
			copy(x.umem[a:], f)
			*x.txRing.desc(prod + uint32(j)) = unix.XDPDesc{Addr: a, Len: uint32(len(f))}
			bytes += uint64(len(f))
		}
		if j > 0 {
			atomic.StoreUint32(x.txRing.prod, prod+uint32(j))
		}
		e := x.flushTx()
		if e != 0 {
			// The device is down (ENETDOWN) or did not take the frames
			// within txWaitMax (EAGAIN): what the kernel did not take is
			// dropped, not left to go out with a later kick, and so is the
			// rest of the batch. dropPending finds only frames of this
			// round: every earlier round ended with the ring empty.
			dropped := min(x.dropPending(), j)
			for _, f := range frames[sent : sent+j-dropped] {
				x.txBytes.Add(uint64(len(f)))
			}
			if j > 0 {
				x.wcalls.Add(1)
			}
			x.txFrames.Add(uint64(j - dropped))
			x.txDropped.Add(uint64(dropped + len(frames) - sent - j))
			x.txErrors.Add(1)
			if e == unix.EAGAIN {
				e = unix.ENOBUFS
			}
			return len(frames), e
		}
		if j > 0 {
			x.wcalls.Add(1)
			x.txFrames.Add(uint64(j))
			x.txBytes.Add(bytes)
			sent += j
		}
		if bad != 0 {
			x.txErrors.Add(1)
			return sent, bad
		}
		if j == 0 {
			// No TX frame free: the kernel still holds them all (the
			// completion ring fills as the peer frees the sk_buffs).
			if waitStart.IsZero() {
				waitStart = time.Now()
			} else if time.Since(waitStart) > txWaitMax {
				x.txErrors.Add(1)
				return sent, unix.ENOBUFS
			}
			if x.closed.Load() {
				return sent, ErrClosed
			}
			time.Sleep(20 * time.Microsecond)
			continue
		}
		waitStart = time.Time{}
	}
	return sent, nil
}

// Stats returns the counters; KernelDrops are the socket's drops
// (XDP_STATISTICS rx_dropped: no fill-ring frame; rx_ring_full).
func (x *xdpPort) Stats() PortStats {
	s := PortStats{
		RxFrames: x.rxFrames.Load(), RxBytes: x.rxBytes.Load(),
		TxFrames: x.txFrames.Load(), TxBytes: x.txBytes.Load(),
		RxTruncated: x.rxTrunc.Load(), TxErrors: x.txErrors.Load(), TxDropped: x.txDropped.Load(),
		ReadCalls: x.rcalls.Load(), WriteCalls: x.wcalls.Load(),
	}
	x.mu.Lock()
	if !x.closed.Load() {
		_ = x.rc.Control(func(fd uintptr) {
			var st unix.XDPStatistics
			l := uint32(unsafe.Sizeof(st))
			if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_XDP, unix.XDP_STATISTICS,
				uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&l)), 0); e == 0 {
				x.kernelDrops = st.Rx_dropped + st.Rx_ring_full // cumulative, unlike PACKET_STATISTICS
			}
		})
	}
	s.KernelDrops = x.kernelDrops
	x.mu.Unlock()
	return s
}

// Close unregisters the socket, detaches the port's own program, closes
// the socket (waiting for RawConn callbacks in progress) and, once no
// WriteBatch runs (txMu), unmaps the rings and the UMEM.
func (x *xdpPort) Close() error {
	if x.closed.Swap(true) {
		return ErrClosed
	}
	x.txMu.Lock()
	defer x.txMu.Unlock()
	x.release()
	return nil
}

// maxVLANTags is how many in-band 802.1Q (0x8100) or 802.1ad (0x88a8)
// tags checksumPartial looks through: QinQ, as the gateway's
// CompleteChecksum does.
const maxVLANTags = 2

// checksumPartial reports whether the TCP or UDP checksum field of an
// IPv4 or IPv6 frame, untagged or with up to maxVLANTags in-band VLAN
// tags, holds the pseudo-header sum that a sender with checksum offload
// (CHECKSUM_PARTIAL: a local stack on veth) leaves for the hardware to
// complete. AF_XDP gives user space no checksum state (the TPACKET
// ring's TP_STATUS_CSUMNOTREADY), so this is the port's guess: a
// complete checksum equals that value for about 1 frame in 65,536, and
// completing such a frame again writes the same checksum (the gateway
// recomputes it from scratch). A few loads and adds per frame.
func checksumPartial(f []byte) bool {
	if len(f) < 14 {
		return false
	}
	et := binary.BigEndian.Uint16(f[12:])
	for i := 0; i < maxVLANTags && (et == 0x8100 || et == 0x88a8); i++ {
		if len(f) < 14+4 {
			return false
		}
		f = f[4:] // the next ethertype lands at f[12:], the IP header at f[14:]
		et = binary.BigEndian.Uint16(f[12:])
	}
	if len(f) < 14+20 {
		return false
	}
	var sum uint32
	var proto uint8
	var l4 []byte
	switch et {
	case 0x0800:
		ihl := int(f[14]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(f[16:]))
		if f[14]>>4 != 4 || ihl < 20 || total < ihl || len(f) < 14+total || binary.BigEndian.Uint16(f[20:])&0x3fff != 0 {
			return false
		}
		proto = f[23]
		l4 = f[14+ihl : 14+total]
		for i := 26; i < 34; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(f[i:]))
		}
	case 0x86dd:
		if len(f) < 14+40 || f[14]>>4 != 6 {
			return false
		}
		plen := int(binary.BigEndian.Uint16(f[18:]))
		if len(f) < 54+plen {
			return false
		}
		proto = f[20]
		l4 = f[54 : 54+plen]
		for i := 22; i < 54; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(f[i:]))
		}
	default:
		return false
	}
	var at int
	switch {
	case proto == 6 && len(l4) >= 20:
		at = 16
	case proto == 17 && len(l4) >= 8:
		at = 6
	default:
		return false
	}
	sum += uint32(proto) + uint32(len(l4))
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	// The kernel stores ~csum_tcpudp_magic(..., 0): the folded sum itself.
	return binary.BigEndian.Uint16(l4[at:]) == uint16(sum)
}
