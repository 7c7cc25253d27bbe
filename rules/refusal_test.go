package rules

import (
	"testing"

	"github.com/otgw/otgw/protocols"
)

// TestRefusal: every deny reason reaches a protocol's reply as the cause
// its reply code is picked by (a Modbus illegal data address for an
// address out of range, a DNP3 object unknown for an object, ...) and by
// its name, which an OPC UA ERR carries; reasons without a reply code of
// their own are CauseOther.
func TestRefusal(t *testing.T) {
	want := map[Reason]protocols.Cause{
		ReasonFunctionNotAllowed:       protocols.CauseFunction,
		ReasonAddressOutOfRange:        protocols.CauseAddress,
		ReasonValueOutOfRange:          protocols.CauseValue,
		ReasonObjectNotAllowed:         protocols.CauseObject,
		ReasonServiceNotAllowed:        protocols.CauseService,
		ReasonNodeNotAllowed:           protocols.CauseNode,
		ReasonSecurityPolicyNotAllowed: protocols.CauseSecurityPolicy,
		ReasonSecurityModeTooLow:       protocols.CauseSecurityMode,
		ReasonMalformed:                protocols.CauseMalformed,
	}
	for _, r := range Reasons() {
		got := r.Refusal()
		if got.Cause != want[r] || got.Reason != r.String() {
			t.Errorf("%v.Refusal() = %+v, want cause %d, reason %q", r, got, want[r], r.String())
		}
	}
}
