package rules

import (
	"testing"

	"github.com/otgw/otgw/protocols/opcua"
)

// Compile-time assertions: gateway/adapt.go (and any caller that casts)
// relies on these enumerations agreeing in value with the OPC UA parser's.
// A reordering on either side makes the index non-zero (or negative) and
// this test file stop compiling, so `go test ./rules` fails instead of a
// production build silently matching the wrong NodeId kind, message type
// or security mode.
var (
	_ = [1]struct{}{}[int(NodeNumeric)-int(opcua.NodeIDNumeric)]
	_ = [1]struct{}{}[int(NodeString)-int(opcua.NodeIDString)]
	_ = [1]struct{}{}[int(NodeGUID)-int(opcua.NodeIDGUID)]
	_ = [1]struct{}{}[int(NodeOpaque)-int(opcua.NodeIDOpaque)]

	_ = [1]struct{}{}[int(MsgHEL)-int(opcua.TypeHEL)]
	_ = [1]struct{}{}[int(MsgACK)-int(opcua.TypeACK)]
	_ = [1]struct{}{}[int(MsgERR)-int(opcua.TypeERR)]
	_ = [1]struct{}{}[int(MsgRHE)-int(opcua.TypeRHE)]
	_ = [1]struct{}{}[int(MsgOPN)-int(opcua.TypeOPN)]
	_ = [1]struct{}{}[int(MsgMSG)-int(opcua.TypeMSG)]
	_ = [1]struct{}{}[int(MsgCLO)-int(opcua.TypeCLO)]

	_ = [1]struct{}{}[int(SecurityModeUnknown)-int(opcua.ModeInvalid)]
	_ = [1]struct{}{}[int(SecurityModeNone)-int(opcua.ModeNone)]
	_ = [1]struct{}{}[int(SecurityModeSign)-int(opcua.ModeSign)]
	_ = [1]struct{}{}[int(SecurityModeSignAndEncrypt)-int(opcua.ModeSignAndEncrypt)]
)

func TestNodeIDKindOf(t *testing.T) {
	tests := []struct {
		name string
		in   opcua.NodeIDType
		want NodeIDKind
	}{
		{"numeric", opcua.NodeIDNumeric, NodeNumeric},
		{"string", opcua.NodeIDString, NodeString},
		{"guid", opcua.NodeIDGUID, NodeGUID},
		{"opaque", opcua.NodeIDOpaque, NodeOpaque},
		{"unknown fails closed", opcua.NodeIDType(200), NodeUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NodeIDKindOf(tt.in); got != tt.want {
				t.Errorf("NodeIDKindOf(%d): got %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

// TestNodeIDFromParserMatchesPolicy: a NodeId the parser decodes, converted
// with NodeIDKindOf, is the node the same text names in a policy.
func TestNodeIDFromParserMatchesPolicy(t *testing.T) {
	for _, text := range []string{"i=2258", "ns=2;s=Line1.Setpoint", "ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a", "ns=1;b=M/RbKBsRVkePCePcx24oRA=="} {
		pn, err := opcua.ParseNodeID(text)
		if err != nil {
			t.Fatalf("opcua.ParseNodeID(%q): %v", text, err)
		}
		// opcua.NodeID holds GUIDs in wire order, as decoded NodeIds do.
		got := NodeID{Namespace: pn.Namespace, Kind: NodeIDKindOf(pn.Type), Numeric: pn.Numeric, ID: pn.Bytes}
		want, err := ParseNodeID(text)
		if err != nil {
			t.Fatalf("ParseNodeID(%q): %v", text, err)
		}
		if !nodeEqual(&got, &want) {
			t.Errorf("%s: parser's NodeId %+v converted to %+v, policy's is %+v", text, pn, got, want)
		}
	}
}
