package hal

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Ring defaults (PortOptions.RingFrameSize, RxRingFrames, TxRingFrames).
const (
	DefaultRingFrameSize = 2048
	DefaultRxRingFrames  = 512 // 1 MiB per port at the default slot size
	DefaultTxRingFrames  = 256 // 512 KiB per port
)

// TPACKET_V2 layout (Documentation/networking/packet_mmap.rst,
// include/uapi/linux/if_packet.h). struct tpacket2_hdr has only 16- and
// 32-bit fields, so it is 32 bytes on every architecture (armv7
// included); the sockaddr_ll the kernel writes after it starts at
// TPACKET_ALIGN(sizeof(struct tpacket2_hdr)).
const (
	tpHdrLen      = (unix.SizeofTpacket2Hdr + unix.TPACKET_ALIGNMENT - 1) &^ (unix.TPACKET_ALIGNMENT - 1)
	tpPkttypeOff  = tpHdrLen + 10 // sockaddr_ll.sll_pkttype
	tpTxDataOff   = tpHdrLen      // tp_hdrlen - sizeof(sockaddr_ll): where TX frames start without PACKET_TX_HAS_OFF
	tpRxMacOffMin = 66            // TPACKET_ALIGN(tp_hdrlen(52) + 16) - ETH_HLEN: where an Ethernet frame starts
)

// ringPort is the TPACKET_V2 Port: two AF_PACKET sockets bound to one
// interface, one with an RX ring and one with a TX ring, both mapped into
// the process.
//
// Receiving costs no system call while frames are waiting: ReadBatch copies
// them out of slots the kernel marked TP_STATUS_USER and hands the slots
// back. The RX socket sits in the runtime poller, so a reader parks on an
// empty ring (sk_data_ready wakes it), deadlines and Close work as for the
// recvmmsg Port.
//
// Sending copies frames into free slots, marks them TP_STATUS_SEND_REQUEST
// and kicks the kernel with one send(MSG_DONTWAIT) per batch. The TX socket
// is kept out of the runtime poller on purpose: the kernel signals
// "writable" on every transmitted frame it frees (sock_wfree ->
// sk_write_space), and with the socket in the runtime's epoll set each of
// those signals woke the runtime's idle netpoll thread for nothing (a
// wakeup and a context switch per batch or frame: about 10-20% of the
// gateway's CPU in the profile of `make bench-datapath`, see BENCHMARKS.md).
// Instead the TX socket has a private epoll set that WriteBatch joins it
// to (edge-triggered EPOLLOUT) only while it waits for a full TX ring to
// drain; the rest of the time nobody listens on the socket and the
// kernel's signal costs nothing. The kick is a raw system call (no
// runtime bookkeeping): send(MSG_DONTWAIT) never blocks, but it runs the
// receivers' softirq work inline and often takes longer than the 20 us
// after which the runtime's sysmon hands the P of a goroutine in a
// system call to another thread.
//
// RX ring memory is only touched inside the RawConn callbacks, which hold
// a reference on the descriptor: Close waits for them to return (a
// pollable os.File's Close blocks until the last reference is gone) before
// it unmaps the RX ring, so a concurrent ReadBatch cannot touch freed
// memory. TX ring memory is only touched by WriteBatch under txMu (read
// lock); Close takes the write lock before it unmaps it, and a WriteBatch
// waiting for a slot notices Close within txWaitMax.
//
// Fields under "read side" are touched only by the ReadBatch owner,
// "write side" only by the WriteBatch owner.
type ringPort struct {
	name    string
	ifindex int
	file    *os.File
	rc      syscall.RawConn
	closed  atomic.Bool

	mem        []byte // the RX ring mapping
	frameSize  int
	blockSize  int
	perBlock   int // frames per block
	rxN, txN   int // frames in each ring
	txCap      int // largest frame a TX slot holds
	spinReadNs int64

	txMu    sync.RWMutex // read: WriteBatch in progress; write: Close
	txfd    int          // the TX socket (not in the runtime poller)
	txEpoll int          // private epoll set; holds txfd (EPOLLOUT|EPOLLET) while txArmed
	txArmed bool         // txfd is in txEpoll (only while WriteBatch waits)
	txMem   []byte       // the TX ring mapping
	txEv    [1]unix.EpollEvent

	// read side
	rxHead int
	rxBatch

	// write side
	txHead  int
	wframes [][]byte
	wsent   int
	werr    error

	portCounters
}

// ringGeometry returns a TpacketReq for n frames of frameSize bytes in
// blocks of whole pages, with about 32 frames per block (64 KiB at the
// default slot size: an order-4 allocation the kernel finds easily).
func ringGeometry(frameSize, n, page int) unix.TpacketReq {
	block := (frameSize*32 + page - 1) / page * page
	per := block / frameSize
	blocks := max((n+per-1)/per, 1)
	return unix.TpacketReq{Block_size: uint32(block), Block_nr: uint32(blocks),
		Frame_size: uint32(frameSize), Frame_nr: uint32(blocks * per)}
}

// openRing opens the TPACKET_V2 Port.
func openRing(name string, opts PortOptions) (Port, error) {
	fs := opts.RingFrameSize
	if fs <= 0 {
		fs = DefaultRingFrameSize
	}
	fs = (max(fs, tpRxMacOffMin+MinBufSize+64) + unix.TPACKET_ALIGNMENT - 1) &^ (unix.TPACKET_ALIGNMENT - 1)
	rxN, txN := opts.RxRingFrames, opts.TxRingFrames
	if rxN <= 0 {
		rxN = DefaultRxRingFrames
	}
	if txN <= 0 {
		txN = DefaultTxRingFrames
	}
	page := os.Getpagesize()
	rxReq, txReq := ringGeometry(fs, rxN, page), ringGeometry(fs, txN, page)
	rxBytes := int(rxReq.Block_size) * int(rxReq.Block_nr)
	var mem []byte
	fd, ifindex, err := packetSocket(name, opts, func(fd int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
			return fmt.Errorf("PACKET_VERSION TPACKET_V2: %w", err)
		}
		if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &rxReq); err != nil {
			return fmt.Errorf("PACKET_RX_RING %d x %d: %w", rxReq.Frame_nr, fs, err)
		}
		m, err := unix.Mmap(fd, 0, rxBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("mmap %d bytes: %w", rxBytes, err)
		}
		mem = m
		return nil
	})
	if err != nil {
		if mem != nil {
			_ = unix.Munmap(mem)
		}
		return nil, err
	}
	p := &ringPort{
		name: name, ifindex: ifindex, mem: mem,
		frameSize: fs, blockSize: int(rxReq.Block_size), perBlock: int(rxReq.Block_size) / fs,
		rxN: int(rxReq.Frame_nr), txN: int(txReq.Frame_nr),
		txCap:      fs - tpTxDataOff,
		spinReadNs: int64(opts.SpinRead),
		txfd:       -1, txEpoll: -1,
	}
	if err := p.openTx(name, ifindex, opts, txReq); err != nil {
		p.closeTx()
		unix.Close(fd)
		_ = unix.Munmap(mem)
		return nil, err
	}
	p.file = os.NewFile(uintptr(fd), "tpacket:"+name)
	p.rc, err = p.file.SyscallConn()
	if err != nil {
		p.file.Close()
		p.closeTx()
		_ = unix.Munmap(mem)
		return nil, fmt.Errorf("hal: port %s: %w", name, err)
	}
	// Method values are built once here, so the hot path allocates nothing.
	p.readFn, p.tryFn = p.doRead, p.doTry
	return p, nil
}

// openTx opens the TX socket of the port: TPACKET_V2 with a TX ring,
// bound to the interface with protocol 0 (it receives nothing, so it adds
// no tap to the interface), and the private epoll set WriteBatch waits on
// when the ring is full. On error the caller calls closeTx.
func (p *ringPort) openTx(name string, ifindex int, opts PortOptions, req unix.TpacketReq) error {
	fail := func(what string, err error) error {
		return fmt.Errorf("hal: port %s: tx socket: %s: %w", name, what, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket(AF_PACKET)", err)
	}
	p.txfd = fd
	// Each frame in flight charges its skb to the send buffer; keep the
	// buffer larger than the TX ring so the ring, not the buffer, is what
	// fills (a full buffer would leave requested slots unsent).
	txBytes := int(req.Block_size) * int(req.Block_nr)
	sb := max(opts.SndBufBytes, defaultSockBuf, 4*txBytes)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sb) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sb)
	}
	if opts.QdiscBypass {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return fail("PACKET_QDISC_BYPASS", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return fail("PACKET_VERSION TPACKET_V2", err)
	}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &req); err != nil {
		return fail(fmt.Sprintf("PACKET_TX_RING %d x %d", req.Frame_nr, req.Frame_size), err)
	}
	m, err := unix.Mmap(fd, 0, txBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(fmt.Sprintf("mmap %d bytes", txBytes), err)
	}
	p.txMem = m
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: 0, Ifindex: ifindex}); err != nil {
		return fail("bind", err)
	}
	if p.txEpoll, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fail("epoll_create1", err)
	}
	return nil
}

// closeTx releases what openTx got. The caller holds txMu (or is the
// only user of p).
func (p *ringPort) closeTx() error {
	var err error
	if p.txEpoll >= 0 {
		err = unix.Close(p.txEpoll)
		p.txEpoll = -1
	}
	if p.txMem != nil {
		if merr := unix.Munmap(p.txMem); err == nil {
			err = merr
		}
		p.txMem = nil
	}
	if p.txfd >= 0 {
		if cerr := unix.Close(p.txfd); err == nil {
			err = cerr
		}
		p.txfd = -1
	}
	return err
}

// slot returns the header of frame i of the ring mapped at mem and its
// offset in mem. Both rings have the same geometry per block (same frame
// size and page).
func (p *ringPort) slot(mem []byte, i int) (*unix.Tpacket2Hdr, int) {
	blk := i / p.perBlock
	off := blk*p.blockSize + (i-blk*p.perBlock)*p.frameSize
	return (*unix.Tpacket2Hdr)(unsafe.Pointer(&mem[off])), off
}

func (p *ringPort) Name() string { return p.name }

func (p *ringPort) SetReadDeadline(t time.Time) error {
	if p.closed.Load() {
		return ErrClosed
	}
	return p.file.SetReadDeadline(t)
}

// harvest copies up to p.rvlen ready frames out of the RX ring into the
// caller's buffers and returns the slots to the kernel.
func (p *ringPort) harvest() int {
	got := 0
	var bytes uint64
	for got < p.rvlen {
		h, off := p.slot(p.mem, p.rxHead)
		status := atomic.LoadUint32(&h.Status)
		if status&unix.TP_STATUS_USER == 0 {
			break
		}
		b := p.rbufs[got]
		wire, snap, mac := int(h.Len), int(h.Snaplen), int(h.Mac)
		if mac+snap > p.frameSize { // never from a sane kernel; stay in the slot
			snap = max(p.frameSize-mac, 0)
		}
		size := min(snap, len(b)-VLANHeadroom)
		m := FrameMeta{WireLen: wire, PktType: p.mem[off+tpPkttypeOff],
			ChecksumNotReady: status&unix.TP_STATUS_CSUMNOTREADY != 0}
		src := p.mem[off+mac : off+mac+size]
		if tpid, ok := vlanTag(status, h.Vlan_tci, h.Vlan_tpid); ok && size >= 12 {
			// Put TPID and TCI back after the MAC addresses
			// (IEEE 802.1Q-2018 clause 9).
			copy(b[:12], src[:12])
			binary.BigEndian.PutUint16(b[12:], tpid)
			binary.BigEndian.PutUint16(b[14:], h.Vlan_tci)
			copy(b[16:], src[12:])
			m.Truncated = wire > size
			size += 4
			m.WireLen += 4
			m.VLANRestored = true
			p.rxVLAN.Add(1)
		} else {
			copy(b, src)
			m.Truncated = wire > size
		}
		// Hand the slot back only after the copy (sequentially consistent
		// atomics order the loads of the frame before this store).
		atomic.StoreUint32(&h.Status, unix.TP_STATUS_KERNEL)
		if p.rxHead++; p.rxHead == p.rxN {
			p.rxHead = 0
		}
		if m.Truncated {
			p.rxTrunc.Add(1)
		}
		p.rsizes[got] = size
		if p.rmeta != nil {
			p.rmeta[got] = m
		}
		bytes += uint64(size)
		got++
	}
	if got > 0 {
		p.rxBytes.Add(bytes)
	}
	return got
}

// doRead runs inside RawConn.Read: it harvests the ring, spinning for up
// to SpinRead when it is empty; false parks the goroutine until the
// kernel signals a new frame (or the deadline or Close).
func (p *ringPort) doRead(uintptr) bool {
	p.rn = spinHarvest(p.spinReadNs, 32, p.harvest, nil)
	return p.rn > 0
}

func (p *ringPort) ReadBatch(bufs [][]byte, sizes []int, meta []FrameMeta) (int, error) {
	return p.readBatch(p.rc, &p.portCounters, &p.closed, bufs, sizes, meta)
}

// doTry runs inside RawConn.Read: one look at the ring, never parking.
func (p *ringPort) doTry(uintptr) bool {
	p.rn = p.harvest()
	return true
}

// TryReadBatch implements Poller.
func (p *ringPort) TryReadBatch(bufs [][]byte, sizes []int, meta []FrameMeta) (int, error) {
	return p.tryReadBatch(p.rc, &p.portCounters, &p.closed, bufs, sizes, meta)
}

// kick asks the kernel to send the slots marked TP_STATUS_SEND_REQUEST,
// without waiting for their completion. It never blocks (MSG_DONTWAIT),
// so it is a raw system call: see ringPort.
func kick(fd uintptr) unix.Errno {
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return e
}

// doWrite fills free TX slots with the frames from p.wsent on and kicks
// the kernel, until all are sent or one fails; false means: wait for the
// kernel to free slots (or to take the requested ones), then call again.
func (p *ringPort) doWrite() bool {
	fd := uintptr(p.txfd)
	// Slots left requested by an earlier kick that could not take them.
	if h, _ := p.slot(p.txMem, p.txHead); atomic.LoadUint32(&h.Status) == unix.TP_STATUS_SEND_REQUEST {
		p.wcalls.Add(1)
		if e := kick(fd); e != 0 && e != unix.EAGAIN && e != unix.EINTR {
			p.werr = e
			return true
		}
	}
	for p.wsent < len(p.wframes) {
		start, k := p.txHead, 0
		var bytes uint64
		var bad unix.Errno
		for p.wsent+k < len(p.wframes) {
			f := p.wframes[p.wsent+k]
			if len(f) == 0 {
				bad = unix.EINVAL
				break
			}
			if len(f) > p.txCap {
				bad = unix.EMSGSIZE
				break
			}
			h, off := p.slot(p.txMem, p.txHead)
			if st := atomic.LoadUint32(&h.Status); st != unix.TP_STATUS_AVAILABLE && st != unix.TP_STATUS_WRONG_FORMAT {
				break // the kernel still owns it: the ring is full
			}
			copy(p.txMem[off+tpTxDataOff:], f)
			h.Len = uint32(len(f))
			atomic.StoreUint32(&h.Status, unix.TP_STATUS_SEND_REQUEST)
			if p.txHead++; p.txHead == p.txN {
				p.txHead = 0
			}
			bytes += uint64(len(f))
			k++
		}
		if k > 0 {
			p.wcalls.Add(1)
			if e := kick(fd); e != 0 && e != unix.EAGAIN && e != unix.EINTR {
				// The kernel stopped at the first slot still requested (or
				// marked TP_STATUS_WRONG_FORMAT): the frames before it went
				// out, that one failed, the rest were not sent. Take the
				// rest back so the kernel's head and ours agree again.
				j := p.reclaim(start, k)
				p.countTx(j, start)
				p.wsent += j
				p.txErrors.Add(1)
				p.werr = e
				return true
			}
			p.txFrames.Add(uint64(k))
			p.txBytes.Add(bytes)
			p.wsent += k
		}
		if bad != 0 {
			p.txErrors.Add(1)
			p.werr = bad
			return true
		}
		if k == 0 {
			return false // ring full: wait for the kernel to free a slot
		}
	}
	// A kick that met a full send buffer (EAGAIN) leaves slots requested:
	// wait for the buffer to drain and kick again.
	last := p.txHead - 1
	if last < 0 {
		last = p.txN - 1
	}
	h, _ := p.slot(p.txMem, last)
	return atomic.LoadUint32(&h.Status) != unix.TP_STATUS_SEND_REQUEST
}

// reclaim finds the first of the k slots from start that the kernel did
// not take, marks it and all after it available again, rewinds txHead to
// it and returns its index in the batch (k when the kernel took all).
func (p *ringPort) reclaim(start, k int) int {
	j := k
	for i := 0; i < k; i++ {
		h, _ := p.slot(p.txMem, (start+i)%p.txN)
		if st := atomic.LoadUint32(&h.Status); st == unix.TP_STATUS_SEND_REQUEST || st == unix.TP_STATUS_WRONG_FORMAT {
			j = i
			break
		}
	}
	for i := j; i < k; i++ {
		h, _ := p.slot(p.txMem, (start+i)%p.txN)
		atomic.StoreUint32(&h.Status, unix.TP_STATUS_AVAILABLE)
	}
	p.txHead = (start + j) % p.txN
	return j
}

// countTx adds the j frames sent from slot start to the counters.
func (p *ringPort) countTx(j, start int) {
	var bytes uint64
	for i := 0; i < j; i++ {
		h, _ := p.slot(p.txMem, (start+i)%p.txN)
		bytes += uint64(h.Len)
	}
	p.txFrames.Add(uint64(j))
	p.txBytes.Add(bytes)
}

// txWaitMax bounds one wait of WriteBatch for a TX slot, so that it
// notices Close.
const txWaitMax = 10 * time.Millisecond

func (p *ringPort) WriteBatch(frames [][]byte) (int, error) {
	if len(frames) == 0 {
		return 0, nil
	}
	p.txMu.RLock()
	if p.closed.Load() {
		p.txMu.RUnlock()
		return 0, ErrClosed
	}
	p.wframes, p.wsent, p.werr = frames, 0, nil
	var err error
	for !p.doWrite() {
		if err = p.waitTx(); err != nil {
			break
		}
	}
	if p.txArmed {
		_ = unix.EpollCtl(p.txEpoll, unix.EPOLL_CTL_DEL, p.txfd, nil)
		p.txArmed = false
	}
	p.wframes = nil
	sent := p.wsent
	p.txMu.RUnlock()
	if err != nil {
		return sent, err
	}
	return sent, p.werr
}

// waitTx blocks until the kernel signals that it freed TX buffer space
// (an edge of EPOLLOUT on the TX socket: a transmitted frame's slot went
// back to TP_STATUS_AVAILABLE), txWaitMax passes, or the port is closed.
// The first call of a WriteBatch joins the socket to the epoll set, which
// reports it writable at once; doWrite then looks at the ring again and
// the next call waits for a new edge, so no wakeup is lost.
func (p *ringPort) waitTx() error {
	if p.closed.Load() {
		return ErrClosed
	}
	if !p.txArmed {
		ev := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLET, Fd: int32(p.txfd)}
		if err := unix.EpollCtl(p.txEpoll, unix.EPOLL_CTL_ADD, p.txfd, &ev); err != nil {
			return err
		}
		p.txArmed = true
		return nil
	}
	_, err := unix.EpollWait(p.txEpoll, p.txEv[:], int(txWaitMax/time.Millisecond))
	if err != nil && err != unix.EINTR {
		return err
	}
	if p.closed.Load() {
		return ErrClosed
	}
	return nil
}

func (p *ringPort) Stats() PortStats { return p.snapshot(p.rc, &p.closed) }

// Close closes the RX socket, which wakes blocked readers and waits for
// the RawConn callbacks in progress to return, and waits for a WriteBatch
// in progress (txMu); only then are the rings unmapped.
func (p *ringPort) Close() error {
	if p.closed.Swap(true) {
		return ErrClosed
	}
	err := p.file.Close()
	if merr := unix.Munmap(p.mem); err == nil {
		err = merr
	}
	p.txMu.Lock()
	if terr := p.closeTx(); err == nil {
		err = terr
	}
	p.txMu.Unlock()
	return err
}
