package gateway

import (
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/rules"
)

// TestRefusal: every deny reason reaches a protocol's reply as the cause
// its reply code is picked by (a Modbus illegal data address for an
// address out of range, a DNP3 object unknown for an object, ...) and by
// its name, which an OPC UA ERR carries; reasons without a reply code of
// their own are CauseOther.
func TestRefusal(t *testing.T) {
	want := map[rules.Reason]protocols.Cause{
		rules.ReasonFunctionNotAllowed:       protocols.CauseFunction,
		rules.ReasonAddressOutOfRange:        protocols.CauseAddress,
		rules.ReasonValueOutOfRange:          protocols.CauseValue,
		rules.ReasonObjectNotAllowed:         protocols.CauseObject,
		rules.ReasonServiceNotAllowed:        protocols.CauseService,
		rules.ReasonNodeNotAllowed:           protocols.CauseNode,
		rules.ReasonSecurityPolicyNotAllowed: protocols.CauseSecurityPolicy,
		rules.ReasonSecurityModeTooLow:       protocols.CauseSecurityMode,
		rules.ReasonMalformed:                protocols.CauseMalformed,
	}
	for _, r := range rules.Reasons() {
		got := refusal(r)
		if got.Cause != want[r] || got.Reason != r.String() {
			t.Errorf("refusal(%v) = %+v, want cause %d, reason %q", r, got, want[r], r.String())
		}
	}
}
