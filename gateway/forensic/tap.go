package forensic

import (
	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/rules"
)

// Handler is what a Tap wraps: the daemon's datapath handler
// (gateway.Engine).
type Handler interface {
	Handle(in gateway.PortID, frame []byte, tx gateway.Tx)
}

// Tap joins the frames a datapath handles to the verdicts the engine
// reports about them: Handle remembers the frame of each ingress port
// while Next handles it, and OnVerdict (the engine's Config.OnVerdict
// hook, called during that Handle on the same goroutine) hands the frame
// of a deny verdict to the Capture, once per frame, before the engine
// rewrites it. Alerts (monitor mode), allowed traffic and the normaliser's
// own drops (retransmissions, out-of-window segments: no event) are not
// captured.
//
// A Tap serves one datapath: one goroutine per ingress port calls Handle,
// as the daemon's Forwarder does. Build a new one when the datapath is
// rebuilt.
type Tap struct {
	// Next handles the frames (set before the first Handle).
	Next Handler
	c    *Capture
	cur  [2]tapPort
}

// tapPort is the frame one ingress port's goroutine is handling; padded
// to its own cache line (the two ports' goroutines write their own).
type tapPort struct {
	frame []byte
	done  bool
	_     [64 - 24 - 1]byte
}

// NewTap returns a Tap that captures into c.
func (c *Capture) NewTap() *Tap { return &Tap{c: c} }

// Handle passes the frame to Next, remembering it for OnVerdict.
func (t *Tap) Handle(in gateway.PortID, frame []byte, tx gateway.Tx) {
	if in > gateway.South {
		t.Next.Handle(in, frame, tx)
		return
	}
	p := &t.cur[in]
	p.frame, p.done = frame, false
	t.Next.Handle(in, frame, tx)
	p.frame = nil
}

// OnVerdict captures the current frame of d.In when d denies it.
func (t *Tap) OnVerdict(d *gateway.Decision) {
	if !d.HasVerdict || d.Verdict.Action != rules.Deny || d.Detection != "" || d.In > gateway.South {
		return
	}
	p := &t.cur[d.In]
	if p.frame == nil || p.done {
		return
	}
	p.done = true
	t.c.Denied(d.In, p.frame, d)
}
