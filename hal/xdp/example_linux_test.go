package xdp_test

import (
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/otgw/otgw/hal/xdp"
)

// The gateway's use of the bypass: attach at start (falling back when
// XDP is unavailable), hand over a flow after its handshake was allowed
// on a conduit without payload inspection, harvest counters and expire
// flows periodically, remove flows whose conduit changed at reload.
func Example() {
	log := slog.Default()
	b, err := xdp.New(xdp.Config{North: "north0", South: "south0", Logger: log})
	if errors.Is(err, xdp.ErrUnavailable) {
		log.Warn("XDP fast path unavailable: every flow stays in user space", "err", err)
		return
	} else if err != nil {
		log.Error("xdp", "err", err)
		return
	}
	defer b.Close()

	// The engine saw the client's ACK that completes the handshake of an
	// allowed flow on a plain tcp: conduit; the server is on the south port.
	k := xdp.Key{
		Proto: xdp.ProtoTCP,
		Src:   netip.MustParseAddrPort("192.0.2.1:40000"),
		Dst:   netip.MustParseAddrPort("192.0.2.130:5001"),
	}
	if err := b.Add(k, xdp.South); err != nil {
		log.Info("flow stays in user space", "flow", k, "err", err) // e.g. ErrFull
	}

	// Every second: counters for /metrics, and expiry with the flow
	// table's idle timeout; a flow closed by FIN/RST/SYN is expired at once.
	_ = b.Walk(func(f xdp.Flow) bool {
		_ = f.Forward.Bytes + f.Reverse.Bytes // add the delta to the flow's conduit
		return true
	})
	_, _ = b.Expire(5*time.Minute, func(f xdp.Flow) {
		_ = f // final figures of a removed flow
	})

	// Policy reload changed the flow's conduit: take it back.
	_ = b.Remove(k)
}
