package protocols

import "testing"

// TestRecognise: a flow to or from a registered port is named by the port
// alone while it carries no payload, and by port and header once it does;
// a payload that is not the protocol, or the right header on another port,
// is not named.
func TestRecognise(t *testing.T) {
	cotpCR := []byte{0x03, 0x00, 0x00, 0x16, 0x11, 0xe0, 0x00, 0x00, 0x00, 0x01, 0x00, 0xc1, 0x02, 0x01, 0x00, 0xc2, 0x02, 0x01, 0x02, 0xc0, 0x01, 0x0a}
	s7data := []byte{0x03, 0x00, 0x00, 0x1f, 0x02, 0xf0, 0x80, 0x32, 0x01, 0x00, 0x00}
	register := append([]byte{0x65, 0x00, 0x04, 0x00}, make([]byte, 24)...) // RegisterSession, 4 data bytes
	listID := make([]byte, 24)
	listID[0] = 0x63
	startdt := []byte{0x68, 0x04, 0x07, 0x00, 0x00, 0x00}
	cpf := []byte{0x02, 0x00, 0x02, 0x80, 0x08, 0x00}
	tests := []struct {
		name     string
		udp      bool
		src, dst uint16
		payload  []byte
		want     App
	}{
		{"s7 syn", false, 49152, 102, nil, AppS7comm},
		{"s7 cotp connect request", false, 49152, 102, cotpCR, AppS7comm},
		{"s7 data from the plc", false, 102, 49152, s7data, AppS7comm},
		{"not tpkt on 102", false, 49152, 102, []byte("GET / HTTP/1.1\r\n"), AppNone},
		{"tpkt on another port", false, 49152, 103, cotpCR, AppNone},
		{"s7 port over udp", true, 49152, 102, nil, AppNone},
		{"enip register session", false, 49152, 44818, register, AppENIP},
		{"enip list identity over udp", true, 49152, 44818, listID, AppENIP},
		{"enip unknown command", false, 49152, 44818, append([]byte{0x99, 0x99}, make([]byte, 22)...), AppNone},
		{"enip short", false, 49152, 44818, []byte{0x65, 0x00}, AppNone},
		{"enip implicit io", true, 2222, 2222, cpf, AppENIPIO},
		{"enip io port over tcp", false, 49152, 2222, nil, AppNone},
		{"iec104 startdt", false, 49152, 2404, startdt, AppIEC104},
		{"iec104 from the outstation", false, 2404, 49152, startdt, AppIEC104},
		{"iec104 bad start", false, 49152, 2404, []byte{0x05, 0x64, 0x05, 0xc9}, AppNone},
		{"iec104 length too short", false, 49152, 2404, []byte{0x68, 0x02, 0, 0}, AppNone},
		{"modbus port", false, 49152, 502, nil, AppNone},
	}
	for _, tc := range tests {
		if got := Recognise(tc.udp, tc.src, tc.dst, tc.payload); got != tc.want {
			t.Errorf("%s: Recognise = %v (%q), want %v (%q)", tc.name, got, got, tc.want, tc.want)
		}
	}
	for a, want := range map[App]string{AppNone: "", AppS7comm: "s7comm", AppENIP: "enip", AppENIPIO: "enip", AppIEC104: "iec104"} {
		if a.String() != want || (a != AppNone) == (a.Title() == "") {
			t.Errorf("App %d: String %q Title %q, want name %q and a title", a, a.String(), a.Title(), want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { Recognise(false, 49152, 102, cotpCR) }); n != 0 {
		t.Errorf("Recognise allocates %v times", n)
	}
}
