package forensic_test

import (
	"io"
	"testing"
	"time"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/gateway/forensic"
)

// BenchmarkDenied is the datapath's cost of capturing a denied 1514-byte
// frame (copy into a slot, hand-over); the writer drains concurrently.
func BenchmarkDenied(b *testing.B) {
	c, err := forensic.Open(forensic.Config{Dir: b.TempDir(), QueueLen: 1024, MaxBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	d := deny()
	frame := make([]byte, 1514)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		c.Denied(gateway.North, frame, d)
	}
	b.StopTimer()
	st := c.Stats()
	b.ReportMetric(float64(st.Dropped)/float64(st.Dropped+st.Frames+uint64(st.Queued)+1), "dropped/op")
}

// BenchmarkWritePacket is the writer's cost per Enhanced Packet Block
// (1514-byte frame with an 180-byte comment).
func BenchmarkWritePacket(b *testing.B) {
	w, err := forensic.NewWriter(io.Discard, "bench", []forensic.Interface{{Name: "north", LinkType: forensic.LinkEthernet}})
	if err != nil {
		b.Fatal(err)
	}
	frame := make([]byte, 1514)
	comment := "otgw deny flow_id=5068389443149628 community_id=1:wdIBrGBXnzx+VHlwkVy5h2Vgm5M= reason=function_not_allowed conduit=hmi-polls-plc rule=modbus#1 action=reply app_proto=modbus"
	t := time.Unix(1700000000, 0)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		_ = w.WritePacket(0, t, frame, len(frame), forensic.FlagInbound, comment)
	}
}

// BenchmarkCaptureSustained is the writer's sustained rate: each denied
// frame waits for a free slot, so ns/op is the writer's cost per frame
// (decode, flow_id, comment, one write(2) to a file).
func BenchmarkCaptureSustained(b *testing.B) {
	c, err := forensic.Open(forensic.Config{Dir: b.TempDir(), QueueLen: 256, MaxBytes: 1 << 30, MaxFiles: 4})
	if err != nil {
		b.Fatal(err)
	}
	d := deny()
	frame := tcpFrame()
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		for !c.Denied(gateway.North, frame, d) {
		}
	}
	c.Close()
}
