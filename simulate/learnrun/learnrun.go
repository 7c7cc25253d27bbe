// Package learnrun drives `otgw learn` over captures: it replays them
// (simulate/replay) through gateway.Engine under a bootstrap policy in
// monitor mode and feeds each engine decision to rules/learn as an
// Observation, so that each PDU is decoded by the very parsers and
// adapters whose output the learned policy will later be evaluated
// against, while rules/learn itself stays pure (issue 12). The bootstrap
// inspects Modbus/TCP (502), DNP3 (20000) and OPC UA (4840), the ports
// given with --port, and the ports where the captures show one of the
// three protocols by content (dissect.Detect), and allows every other
// flow. The draft is then replayed in enforce mode until it denies
// nothing new (bounded), observing what it denies.
package learnrun

import (
	"errors"
	"net/netip"
	"sort"
	"strconv"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/rules"
	"github.com/otgw/otgw/rules/learn"
	"github.com/otgw/otgw/simulate/dissect"
	"github.com/otgw/otgw/simulate/replay"
)

// Bootstrap returns the observation policy: monitor mode, every address in
// one zone, one conduit that inspects the three protocols on their
// standard ports. Other flows, ICMP and non-IP frames match no rule, so the
// engine reports each (as an alert on its first packet, oriented the way
// it will orient it under the learned policy) and forwards it. It compiles.
//
// extra adds server ports to inspect as a protocol besides the standard
// ones (502, 20000, 4840).
func Bootstrap(extra map[uint16]protocols.Proto) *rules.Policy {
	ports := func(p protocols.Proto, def uint16) []string {
		if len(extra) == 0 {
			return nil
		}
		out := []string{strconv.Itoa(int(def))}
		for _, pt := range sortedPorts(extra) {
			if extra[pt] == p && pt != def {
				out = append(out, strconv.Itoa(int(pt)))
			}
		}
		if len(out) == 1 {
			return nil
		}
		return out
	}
	return &rules.Policy{
		Version: 1, Name: "learn-bootstrap", Mode: "monitor",
		Zones: []rules.Zone{{Name: "any", Networks: []string{"0.0.0.0/0", "::/0"}}},
		L2:    rules.L2{},
		Conduits: []rules.Conduit{{Name: "observe", From: []string{"any"}, To: []string{"any"}, Rules: []rules.Rule{
			{Modbus: &rules.ModbusRule{Ports: ports(protocols.ProtoModbus, 502)}},
			{DNP3: &rules.DNP3Rule{Ports: ports(protocols.ProtoDNP3, 20000)}},
			{OPCUA: &rules.OPCUARule{Ports: ports(protocols.ProtoOPCUA, 4840)}},
		}}},
	}
}

func sortedPorts(m map[uint16]protocols.Proto) []uint16 {
	out := make([]uint16, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// inspectPorts returns the extra ports Learn inspects: opts.Ports and,
// unless opts.PortsOnly, the ports where the captures show a protocol by
// content (dissect.Detect). A port given with --port keeps its protocol.
func inspectPorts(opts learn.Options, paths []string) (map[uint16]protocols.Proto, error) {
	out := map[uint16]protocols.Proto{}
	known := dissect.DefaultPorts()
	for pt, p := range opts.Ports {
		out[pt] = p
		known[pt] = p
	}
	if opts.PortsOnly {
		return out, nil
	}
	found, _, err := dissect.Detect(known, paths...)
	if err != nil {
		return nil, err
	}
	for pt, p := range found {
		out[pt] = p
	}
	return out, nil
}

// Learn replays the captures through the engine and drafts the policy.
func Learn(opts learn.Options, paths ...string) (*rules.Policy, *learn.Stats, error) {
	if len(paths) == 0 {
		return nil, nil, errors.New("learn: no capture given")
	}
	extra, err := inspectPorts(opts, paths)
	if err != nil {
		return nil, nil, err
	}
	l := learn.New(opts)
	l.Inspected(extra)
	observe := func(f replay.FrameRef, p *packet.Packet, d *gateway.Decision) {
		if o, ok := observation(f, p, d); ok {
			l.Observe(o)
		}
	}
	rep, err := replay.Run(replay.Options{Policy: Bootstrap(extra), Sides: opts.Zones, OnDecision: observe}, paths...)
	if err != nil {
		return nil, nil, err
	}
	// The engine judges some streams differently in enforce mode (monitor
	// mode resynchronises where enforce mode frames every byte), so the
	// draft is replayed in enforce mode and what it denies is observed
	// too, until nothing new is denied (bounded).
	p := l.Policy()
	prev := -1
	for pass := 0; pass < maxRefine; pass++ {
		denies := 0
		_, err := replay.Run(replay.Options{Policy: p, Sides: opts.Zones, OnDecision: func(f replay.FrameRef, pk *packet.Packet, d *gateway.Decision) {
			if d.HasVerdict && d.Verdict.Action == rules.Deny {
				denies++
				observe(f, pk, d)
			}
		}}, paths...)
		if err != nil {
			return nil, nil, err
		}
		if denies == 0 || denies == prev {
			break
		}
		prev = denies
		p = l.Policy()
	}
	st := l.Stats()
	st.Frames = rep.Frames
	st.CaptureDamage = rep.CaptureDamage
	return p, st, nil
}

// maxRefine bounds the enforce-mode refinement passes of Learn.
const maxRefine = 4

// observation turns one engine decision into what learn reads; false
// for decisions learn ignores (no verdict, or a rate detection, which
// repeats a PDU already observed).
func observation(f replay.FrameRef, p *packet.Packet, d *gateway.Decision) (*learn.Observation, bool) {
	if !d.HasVerdict || d.Detection != "" {
		return nil, false
	}
	o := &learn.Observation{Time: f.Time, Proto: d.Proto, Verdict: d.Verdict, Src: d.Src, Dst: d.Dst, PDU: d.PDU}
	switch d.Proto {
	case "l2":
		if p == nil {
			return nil, false
		}
		o.EtherType = p.EtherType
	case "icmp":
		if p == nil || p.IPVersion == 0 {
			return nil, false
		}
		o.IPSrc, o.IPDst, o.ICMPType = p.Src, p.Dst, p.ICMPType
	}
	d.Detectors(func(det rules.Detector, subj netip.Addr) {
		o.Detectors = append(o.Detectors, learn.DetectorHit{Detector: det, Subject: subj})
	})
	return o, true
}
