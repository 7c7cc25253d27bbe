package rules

import "github.com/otgw/otgw/protocols"

// Refusal says why a request is denied in the terms of a protocol's reply
// (protocols.Refusal): the reply's code picks its cause, a reply with
// text carries the reason's name.
func (r Reason) Refusal() protocols.Refusal {
	cause := protocols.CauseOther
	switch r {
	case ReasonFunctionNotAllowed:
		cause = protocols.CauseFunction
	case ReasonAddressOutOfRange:
		cause = protocols.CauseAddress
	case ReasonValueOutOfRange:
		cause = protocols.CauseValue
	case ReasonObjectNotAllowed:
		cause = protocols.CauseObject
	case ReasonServiceNotAllowed:
		cause = protocols.CauseService
	case ReasonNodeNotAllowed:
		cause = protocols.CauseNode
	case ReasonSecurityPolicyNotAllowed:
		cause = protocols.CauseSecurityPolicy
	case ReasonSecurityModeTooLow:
		cause = protocols.CauseSecurityMode
	case ReasonMalformed:
		cause = protocols.CauseMalformed
	}
	return protocols.Refusal{Cause: cause, Reason: r.String()}
}
