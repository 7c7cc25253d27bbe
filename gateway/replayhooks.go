package gateway

// This file holds the engine's hooks for offline replay only
// (simulate/replay): a harness that replays a capture tells the engine
// what the capture cannot show (a connection joined mid-stream, bytes the
// capture lost), and the engine resynchronises its parsers after such a
// hole. The live gateway never calls MarkPickedUp or CaptureGap, so in
// enforce mode every response must pair with a request the engine saw and
// resyncAt is not reached. The gap handling both share with a monitor-mode
// mid-stream pickup (Engine.gap) stays with the inspector (inspect.go).

import (
	"net/netip"

	"github.com/otgw/otgw/gateway/packet"
)

// MarkPickedUp tells the engine that its harness joined the TCP connection
// from client to server after the connection had opened, so that requests
// sent before may still await their responses. Offline replay calls it
// right after the handshake it synthesises for a connection the capture
// joins mid-stream (simulate/replay); the live gateway never does, so in
// enforce mode every response must pair with a request the engine saw.
//
// On such a flow, until the first response that pairs with a request seen
// by the engine, a response that pairs with nothing is judged as paired
// (the answer to a request before the pickup) rather than as
// response_without_request; for Modbus the pairing anomaly is dropped too.
// An OPC UA channel is taken as opened before the pickup (no
// msg_before_open), as when a monitor-mode conduit picks a flow up.
// It reports whether an inspected flow between the two endpoints exists.
func (e *Engine) MarkPickedUp(client, server netip.AddrPort) bool {
	k, _ := keyOfAddrs(client.Addr(), server.Addr(), client.Port(), server.Port(), packet.ProtoTCP)
	f, _ := e.tab.lockFlow(k, nil)
	if f == nil {
		return false
	}
	defer f.mu.Unlock()
	if f.insp == nil {
		return false
	}
	// Whatever opened the session (an OPC UA channel's HEL/ACK/OPN) went
	// before the pickup, as in a monitor-mode pickup (gap): MSG is not
	// msg_before_open.
	f.insp.sess.Gap(sideClient.dir())
	f.insp.sess.Gap(sideServer.dir())
	f.insp.sess.PickUp()
	return true
}

// CaptureGap tells the engine that the capture it replays lost bytes that
// src sent to dst on their TCP connection, up to sequence number to: the
// gateway on the wire would have seen them, the capture did not. The
// normaliser continues from to (so that the segments and acknowledgements
// after the hole are not refused as out of order or out of window), the
// parser of that direction resynchronises as after a mid-stream pickup,
// and responses to requests that may have been lost are not denied as
// responses without request (as MarkPickedUp). Offline replay calls it
// where its pre-pass finds a hole no later frame fills; the live gateway
// never does. It reports whether the connection exists and the sender's
// stream was behind to.
func (e *Engine) CaptureGap(src, dst netip.AddrPort, to uint32) bool {
	k, fromA := keyOfAddrs(src.Addr(), dst.Addr(), src.Port(), dst.Port(), packet.ProtoTCP)
	f, _ := e.tab.lockFlow(k, nil)
	if f == nil {
		return false
	}
	defer f.mu.Unlock()
	s := f.sideOf(fromA)
	h := &f.dir[s]
	if !h.hasISN || !seqGT(to, h.nxt) {
		return false
	}
	h.nxt = to
	if f.insp != nil {
		e.gap(f, s)
		f.insp.sess.PickUp()
		f.insp.dir[s].afterHole = true
	}
	return true
}

// maxResyncScan bounds the offsets resyncAt tries.
const maxResyncScan = 2048

// resyncAt returns the first offset after 0 in b from which PDUs frame one
// after another to the end of b (at least one complete, the last possibly
// incomplete), or 0 when there is none within maxResyncScan bytes. Only
// replay reaches it, after a hole the capture lost (CaptureGap).
func (in *inspector) resyncAt(s side, b []byte) int {
	for o := 1; o < len(b) && o <= maxResyncScan; o++ {
		q, whole := o, 0
		for q < len(b) {
			n, need, err := in.frame(s, b[q:])
			if err != nil || (n == 0 && need <= 0) {
				break
			}
			if n == 0 {
				q = len(b) // an incomplete last PDU
				break
			}
			if !in.plausible(s, b[q:q+n]) {
				break
			}
			q += n
			whole++
		}
		if q == len(b) && whole > 0 {
			return o
		}
	}
	return 0
}
