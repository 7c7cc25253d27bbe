package events

import (
	"bufio"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

type collect struct {
	mu sync.Mutex
	ev []*Event
}

func (c *collect) Emit(e *Event) { c.mu.Lock(); c.ev = append(c.ev, e); c.mu.Unlock() }

func deny(src string) *Event {
	return &Event{Severity: SevWarning, Type: TypeDeny, Conduit: "c", Rule: "r", Reason: "fc",
		Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort("192.0.2.10:502"), Proto: "modbus"}
}

func TestPipelineSeqContiguousAndBootID(t *testing.T) {
	var c collect
	p := NewPipeline(PipelineConfig{AggregateWindow: -1}, &c)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				p.Emit(&Event{Type: TypeLink, Severity: SevInfo})
			}
		}()
	}
	wg.Wait()
	p.Close()
	if len(c.ev) != 2000 {
		t.Fatalf("delivered %d, want 2000", len(c.ev))
	}
	for i, e := range c.ev {
		if e.Seq != uint64(i+1) || e.BootID != p.BootID() || e.Time.IsZero() {
			t.Fatalf("event %d: seq %d boot %q time %v, want seq %d boot %q", i, e.Seq, e.BootID, e.Time, i+1, p.BootID())
		}
	}
	if q := NewPipeline(PipelineConfig{}); q.BootID() == p.BootID() {
		t.Error("two pipelines share a boot id")
	} else {
		q.Close()
	}
}

// A full queue drops (never blocks) and reports "dropped N" with its own
// sequence number; critical events use the reserved part of the queue.
func TestPipelineFullQueueDropsAndReports(t *testing.T) {
	block := make(chan struct{})
	var c collect
	first := true
	p := NewPipeline(PipelineConfig{QueueLen: 16, AggregateWindow: -1}, SinkFunc(func(e *Event) {
		if first {
			first = false
			<-block // the exporter is stuck
		}
		c.Emit(e)
	}))
	p.Emit(&Event{Type: TypeLink, Severity: SevInfo})
	time.Sleep(20 * time.Millisecond) // dispatcher now holds event 1
	start := time.Now()
	for i := 0; i < 100; i++ {
		p.Emit(&Event{Type: TypeLink, Severity: SevInfo})
	}
	p.Emit(&Event{Type: TypeBypass, Severity: SevCritical})
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("101 Emits into a full queue took %v", d)
	}
	close(block)
	p.Close()
	var dropped, crit int
	for i, e := range c.ev {
		if e.Seq != uint64(i+1) {
			t.Fatalf("seq %d at %d: not contiguous", e.Seq, i)
		}
		if e.Type == TypeDropped {
			dropped += e.Count
		}
		if e.Severity == SevCritical {
			crit++
		}
	}
	st := p.Stats()
	if dropped == 0 || uint64(dropped) != st.Dropped {
		t.Errorf("dropped reported %d, counted %d", dropped, st.Dropped)
	}
	if crit != 1 {
		t.Errorf("critical event delivered %d times, want 1", crit)
	}
}

func TestPipelineAggregates(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var c collect
	p := NewPipeline(PipelineConfig{AggregateWindow: time.Second, Now: clock}, &c)
	for i := 0; i < 100; i++ {
		p.Emit(deny("192.0.2.1:4000" + string(rune('0'+i%10)))) // source port ignored
	}
	p.Emit(deny("192.0.2.2:40000"))                                                              // another source: its own key
	p.Emit(&Event{Severity: SevCritical, Type: TypeDeny, Conduit: "c", Rule: "r", Reason: "fc"}) // never aggregated
	advance(2 * time.Second)
	p.Emit(deny("192.0.2.1:40000")) // new window: passes, previous summary first
	p.Close()
	var types []Type
	var counts []int
	for _, e := range c.ev {
		types = append(types, e.Type)
		counts = append(counts, e.Count)
	}
	wantTypes := []Type{TypeDeny, TypeDeny, TypeDeny, TypeAggregated, TypeDeny}
	wantCounts := []int{0, 0, 0, 99, 0}
	if !reflect.DeepEqual(types, wantTypes) || !reflect.DeepEqual(counts, wantCounts) {
		t.Errorf("got types %v counts %v, want %v %v", types, counts, wantTypes, wantCounts)
	}
	if st := p.Stats(); st.Suppressed != 99 || st.Aggregates != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestJSONRoundTripAndFile(t *testing.T) {
	e := &Event{Seq: 7, BootID: "b", Time: time.Date(2025, 1, 15, 10, 21, 33, 123456000, time.UTC),
		TimeQuality: TimeQuality{TZKnown: true, IsSynced: true, SyncAccuracy: 10}, Severity: SevAlert, Type: TypeDeny,
		Message: "m\n\"x\"", Src: netip.MustParseAddrPort("[2001:db8::1]:502"), Dst: netip.MustParseAddrPort("192.0.2.1:1"),
		Conduit: "c", Count: 3, Fields: map[string]any{"fc": 16}, Line: 4}
	var got Event
	if err := UnmarshalJSONEvent(e.AppendJSON(nil), &got); err != nil {
		t.Fatal(err)
	}
	got.Fields, e.Fields = nil, nil
	if !reflect.DeepEqual(&got, e) {
		t.Errorf("round trip:\ngot  %+v\nwant %+v", got, *e)
	}
	path := filepath.Join(t.TempDir(), "events.jsonl")
	j, err := OpenJSONFile(path, 800)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		j.Emit(e)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	lines := 0
	for _, p := range []string{path, path + ".1"} {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var x Event
			if err := UnmarshalJSONEvent(sc.Bytes(), &x); err != nil {
				t.Errorf("%s: %v", p, err)
			}
			lines++
		}
		f.Close()
		if st, _ := os.Stat(p); st.Size() > 800 {
			t.Errorf("%s is %d bytes, cap 800", p, st.Size())
		}
	}
	if lines == 0 || lines > 5 {
		t.Errorf("%d lines across the rotated files", lines)
	}
}

func BenchmarkPipelineEmit(b *testing.B) {
	b.Run("aggregated-deny", func(b *testing.B) {
		p := NewPipeline(PipelineConfig{AggregateWindow: time.Hour}, Discard)
		e := deny("192.0.2.1:40000")
		p.Emit(e)
		b.ReportAllocs()
		for b.Loop() {
			p.Emit(e) // suppressed: the flood path
		}
		p.Close()
	})
	b.Run("queued", func(b *testing.B) {
		p := NewPipeline(PipelineConfig{AggregateWindow: -1, QueueLen: 1 << 16}, Discard)
		ev := make([]Event, 1024)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			ev[i%len(ev)] = Event{Type: TypeLink, Severity: SevInfo}
			p.Emit(&ev[i%len(ev)])
			i++
		}
		p.Close()
	})
}
