package gateway

import (
	"fmt"
	"testing"

	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/simulate/capture"
)

// opcuaWriteConduit allows writes to one node only, and tolerates an
// anomaly that leaves the NodeIds of a message unread.
const opcuaWriteConduit = `  - name: hmi-ua
    from: hmi
    to: ua
    rules:
      - opcua:
          min_security_mode: none
          tolerate: [%s]
          allow:
            - service: write
              nodes: ["ns=2;s=Line1.Setpoint"]
`

// TestOPCUAWriteWithUnreadNodesDenied: a Write whose NodeIds the parser
// could not read (a message over the negotiated size, chunks over the
// limit, a body that does not decode) is refused by a rule that restricts
// nodes, even when the policy tolerates the anomaly: tolerating it may let
// the message through unread, never let it address any node. Before the
// fix a tolerated message_too_large Write to a forbidden node crossed.
func TestOPCUAWriteWithUnreadNodesDenied(t *testing.T) {
	for _, tc := range []struct {
		name, tolerate string
		write          func() []byte
	}{
		{"message_too_large", "message_too_large", func() []byte {
			vals := make([]opcua.WriteValue, 60)
			for i := range vals {
				vals[i] = opcua.WriteValue{Node: opcua.StringID(2, fmt.Sprintf("Line1.Forbidden%02d", i)), Value: 1}
			}
			body := opcua.AppendWriteRequest(nil, 3, vals...)
			return opcua.AppendChunks(nil, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 3, RequestID: 3}, body, 256)
		}},
		{"truncated", "truncated", func() []byte {
			body := opcua.AppendWriteRequest(nil, 3, opcua.WriteValue{Node: opcua.StringID(2, "Line1.Forbidden"), Value: 1})
			body = body[:len(body)-5] // the last WriteValue cut short
			return opcua.AppendMessage(nil, opcua.ChunkFinal, opcua.SecureHeader{ChannelID: 7, TokenID: 1, SequenceNumber: 3, RequestID: 3}, body)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, policy(t, "enforce", "reset", "", fmt.Sprintf(opcuaWriteConduit, tc.tolerate)), nil)
			f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:40201")}, uaEP)
			r.handshake(f)
			hello := opcua.Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536, EndpointURL: "opc.tcp://192.0.2.30:4840"}
			ack := hello
			ack.MaxMessageSize = 1024 // the server accepts requests up to 1 KiB
			r.uaOpen(f, opcua.AppendHello(nil, hello), opcua.AppendAcknowledge(nil, ack),
				opcua.AppendOpenRequest(nil, opcua.SecureHeader{SequenceNumber: 1, RequestID: 1}, opcua.ModeNone),
				opcua.AppendOpenResponse(nil, opcua.SecureHeader{ChannelID: 7, SequenceNumber: 1, RequestID: 1}, 1))
			write := tc.write()
			got := r.client(f.Send(true, write))
			crossed := 0
			for _, s := range got {
				if s.out == South {
					crossed += len(decode(t, s.frame).payload)
				}
			}
			if crossed == len(write) {
				t.Fatalf("the whole Write with unread NodeIds crossed (%d bytes: %s)", crossed, describe(got))
			}
			ev := r.lastEvent()
			if ev == nil || ev.Reason != "node_not_allowed" {
				t.Fatalf("event %+v, want a deny for node_not_allowed", ev)
			}
		})
	}
}
