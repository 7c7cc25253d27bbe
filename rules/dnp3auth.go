package rules

import (
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/dnp3"
)

// dnp3Auth is the Secure Authentication state of the DNP3 association a
// flow carries (IEEE 1815-2012 clause 7), as far as the wire shows it: the
// gateway holds no keys and cannot check MACs, so it follows which
// messages of the challenge/reply exchange have crossed. Evaluate advances
// it with every DNP3 PDU it does not deny (allowed, or alerted in monitor
// mode), whatever rule decided; rules with require_auth read it. It lives
// in Flow, so it is per flow, survives reloads, and costs no allocation.
// The zero value is a fresh association.
//
// It is an authentication state machine, not a second request/response
// pairing: which response answers which request is the DNP3 session's
// (protocols/dnp3.Session pairs solicited responses by application
// sequence number) and reaches the rules as DNP3.PairedRequest, which
// authResponse consumes. What this state adds is what pairing cannot say:
// whether the request being answered was critical and had its challenge
// answered (or came in aggressive mode), whether a challenge or a key
// status awaits the master's reply, whether the association has ever
// authenticated. Its one pairing-like bit, outstanding, only lets an
// Authentication Response (FC 131, a challenge or an error, which
// answers a request without being its response and which the session
// does not pair) cross while some request that expects a response
// (dnp3.FunctionCode.ExpectsResponse, the session's own rule) has
// crossed and no final response yet.
type dnp3Auth struct {
	outstanding bool // a request that expects a response has crossed and no final response yet
	pending     bool // that request is critical and awaits its outcome
	answered    bool // the pending request's challenge was answered (g120v2), or it came in aggressive mode
	challenge   bool // the outstation's challenge (FC 131, g120v1) awaits the master's reply
	keyStatus   bool // the outstation's key status (FC 131, g120v5) awaits a key change (g120v6)
	// authenticated: at least one challenge (g120v1 or g120v5) on this
	// association was answered (g120v2 or g120v6); aggressive mode, whose
	// MAC covers the last challenge, is accepted only after that.
	authenticated bool
}

// DNP3Authenticated reports whether a Secure Authentication challenge has
// been answered on the flow's DNP3 association (for status and tests).
func (f *Flow) DNP3Authenticated() bool { return f.auth.authenticated }

// hasAuthObj reports whether the PDU carries an object header g120vV.
func hasAuthObj(p *DNP3, v uint8) bool {
	for _, o := range p.Objects[:min(int(p.NObjects), MaxObjects)] {
		if o.Group == gAuth && o.Variation == v {
			return true
		}
	}
	return false
}

// onlyAuthObjs reports whether every object header is of group 120.
func onlyAuthObjs(p *DNP3) bool {
	if p.ObjectsTruncated {
		return false
	}
	for _, o := range p.Objects[:min(int(p.NObjects), MaxObjects)] {
		if o.Group != gAuth {
			return false
		}
	}
	return true
}

// aggressive reports whether a request is in aggressive mode: its first
// object is g120v3 and its last g120v9 (IEEE 1815-2012 clause 7).
func aggressive(p *DNP3) bool {
	n := min(int(p.NObjects), MaxObjects)
	if n < 2 || p.ObjectsTruncated {
		return false
	}
	first, last := p.Objects[0], p.Objects[n-1]
	return first.Group == gAuth && first.Variation == vAuthAggressive && last.Group == gAuth && last.Variation == vAuthMAC
}

// advance records a forwarded DNP3 PDU.
func (a *dnp3Auth) advance(dir protocols.Dir, p *DNP3) {
	if dir == protocols.Response {
		switch p.FC {
		case fcAuthResp:
			if hasAuthObj(p, vAuthChallenge) {
				a.challenge = true
			}
			if hasAuthObj(p, vAuthKeyStatus) {
				a.keyStatus = true
			}
			if hasAuthObj(p, vAuthError) {
				// Authentication failed: the outstation discards the
				// request, so no response to it may follow as authorised.
				a.challenge = false
			}
		case fcResponse:
			if !p.Unsolicited {
				a.outstanding, a.pending, a.answered, a.challenge = false, false, false, false
			}
		}
		return
	}
	switch {
	case p.FC == fcAuthReq:
		if hasAuthObj(p, vAuthReply) && a.challenge {
			a.challenge, a.authenticated = false, true
			if a.pending {
				a.answered = true
			}
		}
		if hasAuthObj(p, vAuthKeyChange) && a.keyStatus {
			a.keyStatus, a.authenticated = false, true
		}
		a.outstanding = true
	case p.FC == fcAuthReqNoAck || p.FC == 0:
		// Error reports and confirmations start no new exchange.
	default:
		a.outstanding = dnp3.FunctionCode(p.FC).ExpectsResponse()
		a.pending = dnp3Critical(p.FC)
		a.answered = a.pending && aggressive(p)
		a.challenge = false
	}
}

// authRequest judges a request under require_auth. It returns
// ReasonAllowed when the allow list decides (with g120 objects of an
// aggressive-mode request removed from consideration via skipAuth).
func (d *cdnp3) authRequest(p *DNP3, a *dnp3Auth) (reason Reason, decided, skipAuth bool) {
	switch {
	case p.FC == fcAuthReq || p.FC == fcAuthReqNoAck:
		if !onlyAuthObjs(p) {
			return ReasonObjectNotAllowed, true, false
		}
		if p.FC == fcAuthReq && hasAuthObj(p, vAuthReply) && !a.challenge {
			return ReasonAuthRequired, true, false // a reply with no challenge to answer
		}
		if p.FC == fcAuthReq && hasAuthObj(p, vAuthKeyChange) && !a.keyStatus {
			return ReasonAuthRequired, true, false // a key change with no key status to answer
		}
		return ReasonAllowed, true, false
	case dnp3Critical(p.FC) && aggressive(p):
		if !a.authenticated {
			return ReasonAuthRequired, true, false
		}
		return ReasonAllowed, false, true
	}
	return ReasonAllowed, false, false
}

// authResponse judges a non-unsolicited response under require_auth.
func (d *cdnp3) authResponse(p *DNP3, a *dnp3Auth) Reason {
	if p.FC == fcAuthResp {
		if !onlyAuthObjs(p) {
			return ReasonObjectNotAllowed
		}
		if p.PairedRequest || a.outstanding {
			return ReasonAllowed
		}
		return ReasonResponseWithoutRequest
	}
	if !p.PairedRequest {
		return ReasonResponseWithoutRequest
	}
	if a.pending && !a.answered {
		return ReasonAuthRequired // the outstation acted on a control nobody authenticated
	}
	return ReasonAllowed
}
