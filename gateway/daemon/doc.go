// Package daemon is the live inline gateway behind `otgw run`: it wires a
// board profile's two Ethernet ports (hal), the inspection engine
// (gateway.Engine), the policy watcher (Watcher: fsnotify and
// SIGHUP), the event pipeline (gateway/events, with a JSON-lines file,
// stderr until syslog is configured, and gateway/syslog exporters), link
// state events, the watchdog and a status endpoint.
//
// The datapath (Forwarder) has the shape of wireguard-go's device loop:
// one owner goroutine per direction reads a batch of frames from its
// ingress port (recvmmsg), hands each to the engine, and writes what the
// engine sent with one WriteBatch (sendmmsg) per egress port. Buffers come
// from a bounded set allocated at start; nothing is allocated per packet.
//
// Frames that a local stack sent with checksum offload (veth peers, or a
// NIC with partial checksum offload: hal.FrameMeta.ChecksumNotReady) carry
// only the pseudo-header sum in their TCP/UDP checksum field; forwarded
// unchanged, the receiver drops them. The Forwarder completes the checksum
// (CompleteChecksum, RFC 793 section 3.1, RFC 768, RFC 8200 section 8.1)
// before the engine sees the frame, as the sender's NIC would have.
//
// Fail-closed: nothing but this process connects the ports. Run refuses to
// start when a port is enslaved to a bridge and the board profile is not
// fail-open; when the process dies (even by SIGKILL) the AF_PACKET sockets
// close and no frame crosses. A fail-open profile's bypass (relay, kernel
// bridge, or its simulated twin) is released while the gateway forwards and
// engaged on a clean stop. The watchdog is petted only while both workers
// make progress (Forwarder.Healthy).
//
// Status endpoint: GET /status (JSON, snake_case keys: counters, drops by
// reason, flow table, policy name/generation/hash and reloads, ports, event
// pipeline, verdict events by conduit and reason, syslog spool) and GET
// /metrics (Prometheus exposition through client_golang, with the Go and
// process collectors; see MetricsHandler).
package daemon
