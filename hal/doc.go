// Package hal is the hardware layer of the inline gateway: the two
// Ethernet ports the datapath reads and writes, their link setup, and the
// board's watchdog, LEDs and bypass relay.
//
// It owns:
//
//   - Port: batched frame I/O on one interface. The Linux implementation
//     (OpenPort) is an AF_PACKET SOCK_RAW socket bound to the interface
//     (packet(7)) with PACKET_IGNORE_OUTGOING, promiscuous membership
//     (PACKET_MR_PROMISC) and PACKET_AUXDATA; 802.1Q/802.1ad tags that the
//     kernel strips on receive (skb->vlan_tci) are put back into the frame
//     from tpacket_auxdata (IEEE 802.1Q-2018 clause 9: TPID, then TCI,
//     after the source address). Two I/O methods (PortOptions.IO): the
//     default TPACKET_V2 RX and TX rings mapped into the process
//     (PACKET_RX_RING/PACKET_TX_RING, Documentation/networking/packet_mmap.rst;
//     the tag comes from tpacket2_hdr's tp_vlan_tci/tp_vlan_tpid there),
//     where a batch costs no system call to receive and one send(2) kick
//     to transmit; and recvmmsg(2)/sendmmsg(2) on a plain socket, the
//     fallback where rings are unavailable (qemu-user). A third method,
//     IOXDP (afxdp_linux.go), is an AF_XDP socket (XDP_COPY,
//     XDP_USE_NEED_WAKEUP; Documentation/networking/af_xdp.rst) on the
//     interface's one receive queue, fed by an XDP program: the port's
//     own (bpf_redirect_map on an XSKMAP, held by a BPF link of this
//     process) or hal/xdp's flow bypass (PortOptions.XSKMap). Not TPACKET_V3:
//     its block timeout adds latency. Either way the socket sits in the
//     Go runtime's poller, so Close and read deadlines wake a blocked
//     reader.
//   - Link: interface setup over rtnetlink (github.com/vishvananda/netlink):
//     up, promiscuous, equal MTUs, no IP addresses and no IPv6, offloads
//     (GRO, LRO, TSO, GSO) off through the ethtool ioctl (SIOCETHTOOL,
//     ETHTOOL_GFEATURES/ETHTOOL_SFEATURES, include/uapi/linux/ethtool.h),
//     and link up/down notifications.
//   - Watchdog (/dev/watchdog, Documentation/watchdog/watchdog-api.rst),
//     LED (/sys/class/leds, Documentation/leds/leds-class.rst) and Bypass
//     (a relay on a GPIO line through the character device v2 uAPI,
//     include/uapi/linux/gpio.h; or the kernel-bridge fallback, Bridge).
//
// Fail modes: the gateway is fail-closed because nothing but this process
// moves frames between the ports. Fail-open is only ever done by a Bypass
// (a hardware relay, or Bridge joining the ports in a kernel bridge) that a
// separate supervisor engages; see DESIGN.md.
//
// hal/halsim holds simulated twins for what cannot run on a build host:
// the relay, the LEDs and the watchdog device.
package hal
