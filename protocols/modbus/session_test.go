package modbus

import (
	"reflect"
	"testing"

	"github.com/otgw/otgw/protocols"
)

// feed runs b through s.Feed and hands every unit to emit as a Record.
func feed(s protocols.Session, dir protocols.Dir, b []byte, gap bool, emit func(protocols.Record)) {
	s.Feed(dir, b, gap, func() { emit(protocols.NewRecord(s)) })
}

// recordOf decodes one ADU in a fresh session and renders it.
func recordOf(b []byte, dir protocols.Dir) protocols.Record {
	var s Session
	s.Decode(dir, b)
	return protocols.NewRecord(&s)
}

// The values a write request carries are among its fields (an event shows
// the value refused), bounded.
func TestWriteValues(t *testing.T) {
	mbap := func(pdu ...byte) []byte {
		n := len(pdu) + 1
		return append([]byte{0, 1, 0, 0, byte(n >> 8), byte(n), 1}, pdu...)
	}
	many := []byte{16, 0, 0, 0, 40, 80}
	want40 := make([]int, 0, 32)
	for i := range 40 {
		many = append(many, 0, byte(i))
		if i < 32 {
			want40 = append(want40, i)
		}
	}
	for _, tc := range []struct {
		name string
		adu  []byte
		want []int
	}{
		{"fc16 two registers", mbap(16, 0, 40, 0, 2, 4, 0x10, 0x92, 0, 7), []int{4242, 7}},
		{"fc23 write part", mbap(23, 0, 0, 0, 1, 0, 9, 0, 1, 2, 0x03, 0xe8), []int{1000}},
		{"fc16 capped at 32", mbap(many...), want40},
		{"fc6 has no list", mbap(6, 0, 5, 0x10, 0x92), nil},
	} {
		r := recordOf(tc.adu, protocols.Request)
		if r.Anomaly != "" {
			t.Fatalf("%s: anomaly %s", tc.name, r.Anomaly)
		}
		got, _ := r.Get("values")
		if tc.want == nil && got != nil || tc.want != nil && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: values %v, want %v", tc.name, got, tc.want)
		}
	}
	r := recordOf(mbap(15, 0, 0, 0, 3, 1, 0b101), protocols.Request)
	if got, want := r.Fields[len(r.Fields)-1], (protocols.KV{Key: "coils", Value: []bool{true, false, true}}); !reflect.DeepEqual(got, want) {
		t.Errorf("fc15 coils %v, want %v", got, want)
	}
}
