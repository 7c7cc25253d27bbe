package gateway

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/otgw/otgw/protocols"
	"github.com/otgw/otgw/protocols/opcua"
	"github.com/otgw/otgw/simulate/capture"
)

// TestEventFieldsAreDissectFields: a deny event carries the fields `otgw
// dissect` prints for the same PDU, because both come from the session's
// one renderer. The case is one where the two renderers used to disagree:
// an OPN under a security policy URI that is not a standard one (the
// engine printed "", dissect the URI; both now print the URI).
func TestEventFieldsAreDissectFields(t *testing.T) {
	const uri = "http://example.com/UA/SecurityPolicy#Custom"
	opn := opcua.AppendOpenRequest(nil, opcua.SecureHeader{SequenceNumber: 1, RequestID: 1}, opcua.ModeNone)
	none := []byte(opcua.PolicyNone.URI())
	i := bytes.Index(opn, none)
	if i < 4 {
		t.Fatal("no policy URI in the OPN")
	}
	custom := append(append(append([]byte(nil), opn[:i-4]...), binary.LittleEndian.AppendUint32(nil, uint32(len(uri)))...), uri...)
	custom = append(custom, opn[i+len(none):]...)
	binary.LittleEndian.PutUint32(custom[4:], uint32(len(custom)))

	r := newRig(t, policy(t, "enforce", "reset", "", opcuaConduit), nil)
	f := capture.NewTCPFlow(capture.Endpoint{MAC: hmiEP.MAC, Addr: netipAP("192.0.2.130:40210")}, uaEP)
	r.handshake(f)
	hello := opcua.Hello{ReceiveBufferSize: 65536, SendBufferSize: 65536, EndpointURL: "opc.tcp://192.0.2.30:4840"}
	hel := f.Send(true, opcua.AppendHello(nil, hello))
	r.mustForward(r.client(hel), South, hel)
	ack := f.Send(false, opcua.AppendAcknowledge(nil, hello))
	r.mustForward(r.server(ack), North, ack)
	r.client(f.Send(true, custom))
	ev := r.lastEvent()
	if ev == nil {
		t.Fatalf("no event for the OPN under %s", uri)
	}

	s := opcua.NewSession(protocols.Config{})
	var recs []protocols.Record
	for _, b := range [][]byte{opcua.AppendHello(nil, hello), custom} {
		s.Feed(protocols.Request, b, false, func() { recs = append(recs, protocols.NewRecord(s)) })
	}
	want := map[string]any{"dir": "request"}
	for _, kv := range recs[len(recs)-1].Fields {
		want[kv.Key] = kv.Value
	}
	if a := recs[len(recs)-1].Anomaly; a != "" {
		want["anomaly"] = a
	}
	if want["security_policy"] != uri {
		t.Fatalf("dissect fields %v, want security_policy %s", want, uri)
	}
	if !reflect.DeepEqual(ev.Fields, want) {
		t.Errorf("event fields %v,\nwant the dissect fields %v", ev.Fields, want)
	}
}
