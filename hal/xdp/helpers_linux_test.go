package xdp

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/internal/netns"
	"github.com/otgw/otgw/internal/testenv"
)

var (
	cliMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	srvMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

// frameSpec describes a test frame; zero fields take defaults.
type frameSpec struct {
	key      Key
	tcpFlags string // any of "SFRAP"; TCP only
	payload  int
	vlan     bool
	fragment bool // IPv4: MF set; IPv6: a fragment extension header
	ihl      int  // IPv4 header length in 32-bit words (options), 0 = 5
}

// frame serialises f with valid lengths and checksums (gopacket).
func frame(t testing.TB, f frameSpec) []byte {
	t.Helper()
	var ls []gopacket.SerializableLayer
	eth := &layers.Ethernet{SrcMAC: cliMAC, DstMAC: srvMAC}
	ls = append(ls, eth)
	etype := layers.EthernetTypeIPv4
	src, dst := f.key.Src.Addr().Unmap(), f.key.Dst.Addr().Unmap()
	if src.Is6() {
		etype = layers.EthernetTypeIPv6
	}
	if f.vlan {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: 7, Type: etype})
	} else {
		eth.EthernetType = etype
	}
	var netLayer gopacket.NetworkLayer
	proto := layers.IPProtocol(f.key.Proto)
	if src.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		if f.fragment {
			ip.Flags = layers.IPv4MoreFragments
		}
		if f.ihl > 5 {
			ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}}
			for i := 6; i < f.ihl; i++ {
				ip.Options = append(ip.Options, layers.IPv4Option{OptionType: 1}, layers.IPv4Option{OptionType: 1},
					layers.IPv4Option{OptionType: 1}, layers.IPv4Option{OptionType: 1})
			}
		}
		ls, netLayer = append(ls, ip), ip
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		ls, netLayer = append(ls, ip), ip
		if f.fragment {
			ip.NextHeader = layers.IPProtocolIPv6Fragment
			ls = append(ls, &layers.IPv6Fragment{NextHeader: proto, MoreFragments: true, Identification: 1})
		}
	}
	switch f.key.Proto {
	case ProtoTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(f.key.Src.Port()), DstPort: layers.TCPPort(f.key.Dst.Port()),
			Seq: 1000, Ack: 1, Window: 1000}
		for _, c := range f.tcpFlags {
			switch c {
			case 'S':
				tcp.SYN = true
			case 'F':
				tcp.FIN = true
			case 'R':
				tcp.RST = true
			case 'A':
				tcp.ACK = true
			case 'P':
				tcp.PSH = true
			}
		}
		_ = tcp.SetNetworkLayerForChecksum(netLayer)
		ls = append(ls, tcp)
	case ProtoUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(f.key.Src.Port()), DstPort: layers.UDPPort(f.key.Dst.Port())}
		_ = udp.SetNetworkLayerForChecksum(netLayer)
		ls = append(ls, udp)
	}
	ls = append(ls, gopacket.Payload(make([]byte, f.payload)))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// line builds netns.NewLine with what a transparent forwarder between
// the gateway's ports needs from the endpoints when nothing in the
// gateway answers ARP or completes checksums: static neighbours (fixed
// MACs), transmit checksumming off (an XDP redirect carries no
// CHECKSUM_PARTIAL state: the frame must be complete, as on a wire),
// IPv6 off (no stray neighbour discovery), and GRO on, which gives a veth
// the NAPI context that a native-mode redirect to its peer needs
// (drivers/net/veth.c, veth_xdp_xmit).
func line(t *testing.T) *netns.Line {
	t.Helper()
	testenv.NeedRoot(t)
	l := netns.NewLine(t)
	for _, p := range []struct {
		ns      *netns.NS
		mac     net.HardwareAddr
		peer    string
		peerMAC net.HardwareAddr
	}{
		{l.Client, cliMAC, l.ServerAddr, srvMAC},
		{l.Server, srvMAC, l.ClientAddr, cliMAC},
	} {
		p.ns.MustRun("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
		p.ns.IP("link", "set", "eth0", "address", p.mac.String())
		p.ns.IP("neigh", "replace", p.peer, "lladdr", p.peerMAC.String(), "dev", "eth0", "nud", "permanent")
		peerFeatures(t, p.ns, "eth0")
	}
	l.Gateway.MustRun("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
	return l
}

func peerFeatures(t *testing.T, ns *netns.NS, dev string) {
	t.Helper()
	err := ns.Do(func() error {
		have, err := hal.Features(dev)
		if err != nil {
			return err
		}
		want := map[string]bool{"rx-gro": true}
		for _, f := range []string{"tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6",
			"tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-generic-segmentation", "tx-tcp-ecn-segmentation",
			"tx-tcp-mangleid-segmentation"} {
			if _, ok := have[f]; ok {
				want[f] = false
			}
		}
		return hal.SetFeatures(dev, want)
	})
	if err != nil {
		t.Fatalf("features of %s in %s: %v", dev, ns.Name, err)
	}
}

// newFastPath opens a FastPath on the line's gateway ports. Tests that are
// not about the lease get a 2 s one, so a test process descheduled on a
// loaded machine does not let it lapse (TestLease and the fail-closed
// test use short ones).
func newFastPath(t *testing.T, l *netns.Line, cfg Config) *FastPath {
	t.Helper()
	cfg.North, cfg.South = l.North, l.South
	if cfg.Lease == 0 {
		cfg.Lease = 2 * time.Second
	}
	var b *FastPath
	if err := l.Gateway.Do(func() (err error) { b, err = New(cfg); return err }); err != nil {
		t.Fatalf("xdp.New: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// forwarder stands in for the gateway engine: it copies every frame that
// reaches user space on one gateway port (AF_PACKET, hal.Port) to the
// other, and records the TCP frames it saw with destination or source
// port watchPort.
type forwarder struct {
	t         *testing.T
	ports     [2]hal.Port
	watchPort uint16
	mu        sync.Mutex // guards seen
	seen      []tcpSeen
	wg        sync.WaitGroup
}

type tcpSeen struct {
	sport, dport uint16
	flags        uint8
	payload      int
}

func startForwarder(t *testing.T, l *netns.Line, watchPort uint16) *forwarder {
	t.Helper()
	return startForwarderOpts(t, l, watchPort, hal.PortOptions{IO: hal.IOMmsg})
}

// startForwarderOpts is startForwarder with ports opened with opts.
func startForwarderOpts(t *testing.T, l *netns.Line, watchPort uint16, opts hal.PortOptions) *forwarder {
	t.Helper()
	f := &forwarder{t: t, watchPort: watchPort}
	for i, name := range []string{l.North, l.South} {
		if err := l.Gateway.Do(func() (err error) {
			f.ports[i], err = hal.OpenPort(name, opts)
			return err
		}); err != nil {
			t.Fatalf("open %s: %v", name, err)
		}
	}
	for i := range f.ports {
		f.wg.Add(1)
		go f.run(f.ports[i], f.ports[1-i])
	}
	t.Cleanup(f.stop)
	return f
}

func (f *forwarder) run(in, out hal.Port) {
	defer f.wg.Done()
	bufs := make([][]byte, hal.MaxBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, hal.MaxBatch)
	for {
		n, err := in.ReadBatch(bufs, sizes, nil)
		if errors.Is(err, hal.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		batch := make([][]byte, n)
		for i := 0; i < n; i++ {
			batch[i] = bufs[i][:sizes[i]]
			f.record(batch[i])
		}
		if _, err := out.WriteBatch(batch); errors.Is(err, hal.ErrClosed) {
			return
		}
	}
}

func (f *forwarder) record(b []byte) {
	if len(b) < 34 || binary.BigEndian.Uint16(b[12:]) != 0x0800 || b[23] != ProtoTCP {
		return
	}
	ihl := int(b[14]&0x0f) * 4
	l4 := 14 + ihl
	if len(b) < l4+20 {
		return
	}
	s := tcpSeen{sport: binary.BigEndian.Uint16(b[l4:]), dport: binary.BigEndian.Uint16(b[l4+2:]), flags: b[l4+13]}
	if s.sport != f.watchPort && s.dport != f.watchPort {
		return
	}
	s.payload = int(binary.BigEndian.Uint16(b[16:])) - ihl - int(b[l4+12]>>4)*4
	f.mu.Lock()
	f.seen = append(f.seen, s)
	f.mu.Unlock()
}

// take returns and clears what the forwarder saw.
func (f *forwarder) take() []tcpSeen {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.seen
	f.seen = nil
	return s
}

func (f *forwarder) stop() {
	for _, p := range f.ports {
		if p != nil {
			_ = p.Close()
		}
	}
	f.wg.Wait()
}

// listen starts a listener inside ns.
func listen(t *testing.T, ns *netns.NS, network, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen(network, addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// dialFrom connects from a fixed local address inside ns.
func dialFrom(t *testing.T, ns *netns.NS, network, local, remote string) net.Conn {
	t.Helper()
	var c net.Conn
	err := ns.Do(func() (err error) {
		la, err := net.ResolveTCPAddr(network, local)
		if err != nil {
			return err
		}
		d := net.Dialer{LocalAddr: la, Timeout: 3 * time.Second}
		c, err = d.Dial(network, remote)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", remote, local, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sink accepts one connection and counts what it reads, with the time of
// the last read.
type sink struct {
	n        atomic.Int64
	lastRead atomic.Int64 // UnixNano
	eof      chan struct{}
}

func newSink(ln net.Listener) *sink {
	s := &sink{eof: make(chan struct{})}
	go func() {
		defer close(s.eof)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 256<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				s.n.Add(int64(n))
				s.lastRead.Store(time.Now().UnixNano())
			}
			if err != nil {
				return
			}
		}
	}()
	return s
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
