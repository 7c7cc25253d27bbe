package echo7

import (
	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/rules"
)

// The rule section, as rules/echo7.go would register it: a policy rule
// "echo7: { ports, tolerate }" allows functions 1 and 2 and responses that
// pair with a request.
func init() {
	rules.RegisterSection(rules.Section{
		Proto: Proto, Port: Port, TCP: true,
		Set: func(p *rules.PDU, ss protocols.Session) bool {
			s, ok := ss.(*Session)
			if !ok {
				return false
			}
			p.Malformed(Proto, s.Dir(), s.Anomaly())
			p.Other = rules.Other{Func: uint32(s.fn), PairedRequest: s.paired}
			return true
		},
		Judge: func(dir protocols.Dir, o rules.Other) rules.Reason {
			switch {
			case dir == protocols.Response && !o.PairedRequest:
				return rules.ReasonResponseWithoutRequest
			case dir == protocols.Request && o.Func > 2:
				return rules.ReasonFunctionNotAllowed
			}
			return rules.ReasonAllowed
		},
	})
}
