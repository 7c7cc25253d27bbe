package replay

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	"github.com/otgw/otgw/gateway/packet"
	"github.com/otgw/otgw/internal/pcaptest"
	"github.com/otgw/otgw/internal/testenv"
)

// TestPrescanSameResults checks that the pre-scan with its table in
// prefaulted chunks (segTable) finds what the pre-scan over one slice
// found (prescan_ref_test.go): every field of the midstream, every TCP
// frame's record in order, and scanRepairs' holes, deferred ACKs and
// engine holes. On the scenarios, the shared captures one by one and
// merged, and random generated captures; with chunks of 4 segs (every
// capture crosses chunks) and of the default size.
func TestPrescanSameResults(t *testing.T) {
	type input struct {
		name  string
		paths []string
		sp    map[uint16]bool
	}
	var inputs []input
	for _, in := range scenarioInputs(t) {
		inputs = append(inputs, input{in.name, in.paths, serverPorts(in.pol)})
	}
	everything := serverPorts(mustPolicy(t, readEverything))
	shared, _ := filepath.Glob(filepath.Join(testenv.Pcaps(t), "*.pcap*"))
	sort.Strings(shared)
	for _, p := range shared {
		inputs = append(inputs, input{filepath.Base(p), []string{p}, everything})
	}
	inputs = append(inputs, input{"shared captures, merged", shared, everything})
	r := rand.New(rand.NewPCG(18, 4))
	dir := t.TempDir()
	cases := 100
	if testing.Short() {
		cases = 20
	}
	for n := range cases {
		path := filepath.Join(dir, fmt.Sprintf("case%d.pcap", n))
		frames := randomCapture(r)
		if n%2 == 1 {
			// Frames lost and swapped: mid-stream pickups, holes and
			// ACKs before what they acknowledge.
			var kept [][]byte
			for _, f := range frames {
				if r.IntN(10) > 0 {
					kept = append(kept, f)
				}
			}
			for i := 1; i < len(kept); i++ {
				if r.IntN(20) == 0 {
					kept[i-1], kept[i] = kept[i], kept[i-1]
				}
			}
			frames = kept
		}
		pcaptest.WriteFile(t, path, frames)
		inputs = append(inputs, input{filepath.Base(path), []string{path}, serverPorts(mustPolicy(t, randomPolicy(r).yaml(false)))})
	}
	var pickups, holes, deferred, frags int
	defer func(s int) { segShift = s }(segShift)
	for _, shift := range []int{2, segShift} {
		segShift = shift
		for _, in := range inputs {
			ctx := fmt.Sprintf("%s (chunks of %d)", in.name, 1<<shift)
			want, wantSegs, err := refScanMidstream(in.paths, in.sp)
			if err != nil {
				t.Fatalf("%s: reference: %v", ctx, err)
			}
			got, err := scanMidstream(in.paths, in.sp)
			if err != nil {
				t.Fatalf("%s: %v", ctx, err)
			}
			if got.segs.n != len(wantSegs) {
				t.Fatalf("%s: %d TCP frames, want %d", ctx, got.segs.n, len(wantSegs))
			}
			for i := range wantSegs {
				if *got.segs.at(i) != wantSegs[i] {
					t.Fatalf("%s: TCP frame %d: %+v, want %+v", ctx, i, *got.segs.at(i), wantSegs[i])
				}
			}
			segs := got.segs
			got.segs = nil
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: midstream\n%+v\nwant\n%+v", ctx, got, want)
			}
			got.segs = segs
			gotRp, wantRp := scanRepairs(got), refScanRepairs(want, wantSegs)
			if !reflect.DeepEqual(gotRp, wantRp) {
				t.Fatalf("%s: repairs\n%+v\nwant\n%+v", ctx, gotRp, wantRp)
			}
			pickups += len(want.at)
			holes += len(wantRp.holes) + wantRp.engineHoles
			deferred += len(wantRp.deferred)
			frags += len(want.frags)
		}
	}
	t.Logf("%d inputs; twice: %d pickups, %d frames after holes, %d deferred ACKs, %d fragments", len(inputs), pickups/2, holes/2, deferred/2, frags/2)
	if pickups == 0 || holes == 0 || deferred == 0 || frags == 0 {
		t.Error("the inputs do not exercise every part of the pre-scan")
	}
}

// TestPackedKeyOf checks packedKeyOf against packKey(keyOf) and
// laneOfPacked against laneOfKey, on IPv4 and IPv6 endpoints that are
// equal, differ in the address or only in the port, v4-mapped included.
func TestPackedKeyOf(t *testing.T) {
	r := rand.New(rand.NewPCG(18, 5))
	addr := func(v6 bool) netip.Addr {
		if v6 {
			var b [16]byte
			b[0], b[15] = byte(r.IntN(3)), byte(r.IntN(3))
			if r.IntN(4) == 0 {
				b[10], b[11] = 0xff, 0xff // v4-mapped: an IPv6 address still
			}
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(2)), byte(r.IntN(3))})
	}
	for range 5000 {
		v6 := r.IntN(2) == 0
		var p packet.Packet
		p.Src, p.Dst = addr(v6), addr(v6)
		p.SrcPort, p.DstPort = uint16(r.IntN(3)), uint16(r.IntN(3))
		if r.IntN(50) == 0 {
			p.Dst = addr(!v6) // not from Decode: two families
		}
		k, fromA := keyOf(&p)
		got, gotA := packedKeyOf(&p)
		if got != packKey(k) || gotA != fromA {
			t.Fatalf("%v:%d > %v:%d: packedKeyOf %+v %v, want %+v %v", p.Src, p.SrcPort, p.Dst, p.DstPort, got, gotA, packKey(k), fromA)
		}
		for _, n := range []int{1, 2, 3, 7} {
			if a, b := laneOfPacked(got, n), laneOfKey(k, n); a != b {
				t.Fatalf("%+v: lane %d of %d, want %d", k, a, n, b)
			}
		}
	}
}
