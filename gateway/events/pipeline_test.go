package events

import (
	"bufio"
	"fmt"
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
	// A blocking Emit would hang here for good (the exporter stays stuck
	// until block is closed); the bound only catches a slow one, with room
	// for a loaded machine.
	if d := time.Since(start); d > time.Second {
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

// Block (offline tools): a slow exporter makes Emit wait, never drop;
// every event arrives once, in sequence order, from several producers.
func TestPipelineBlockWaitsInsteadOfDropping(t *testing.T) {
	var c collect
	n := 0
	p := NewPipeline(PipelineConfig{QueueLen: 16, AggregateWindow: -1, Block: true}, SinkFunc(func(e *Event) {
		if n++; n%64 == 0 {
			time.Sleep(time.Millisecond) // an exporter slower than the producers
		}
		c.Emit(e)
	}))
	const producers, each = 4, 1000
	var wg sync.WaitGroup
	for g := 0; g < producers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				p.Emit(&Event{Type: TypeLink, Severity: SevInfo})
			}
		}()
	}
	wg.Wait()
	p.Close()
	st := p.Stats()
	if len(c.ev) != producers*each || st.Dropped != 0 {
		t.Fatalf("delivered %d, dropped %d; want %d, 0", len(c.ev), st.Dropped, producers*each)
	}
	for i, e := range c.ev {
		if e.Seq != uint64(i+1) {
			t.Fatalf("seq %d at %d: not contiguous", e.Seq, i)
		}
	}
	if st.Waited == 0 {
		t.Errorf("no Emit waited (stats %+v): the queue of 16 never filled, the test proves nothing", st)
	}
}

// Block with aggregation: windows that end while the queue is full are
// closed later, never dropped; delivered denies plus the counts of the
// summaries add up to what was emitted.
func TestPipelineBlockAggregationAddsUp(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var c collect
	p := NewPipeline(PipelineConfig{QueueLen: 8, AggregateWindow: 10 * time.Millisecond, Now: clock, Block: true},
		SinkFunc(func(e *Event) {
			if len(c.ev)%128 == 0 {
				time.Sleep(time.Millisecond)
			}
			c.Emit(e)
		}))
	const n = 20000
	for i := 0; i < n; i++ {
		if i%50 == 0 {
			mu.Lock()
			now = now.Add(3 * time.Millisecond)
			mu.Unlock()
		}
		// 64 keys (sources), so the aggregation table has many open windows
		p.Emit(deny(fmt.Sprintf("192.0.2.%d:40000", 1+i%64)))
	}
	p.Close()
	st := p.Stats()
	denies, folded := 0, 0
	for i, e := range c.ev {
		if e.Seq != uint64(i+1) {
			t.Fatalf("seq %d at %d: not contiguous", e.Seq, i)
		}
		switch e.Type {
		case TypeDeny:
			denies++
		case TypeAggregated:
			folded += e.Count
		default:
			t.Errorf("unexpected %s event: %s", e.Type, e.Message)
		}
	}
	if denies+folded != n || st.Dropped != 0 {
		t.Errorf("%d denies + %d folded = %d, dropped %d; want %d, 0 (stats %+v)", denies, folded, denies+folded, st.Dropped, n, st)
	}
	if folded == 0 {
		t.Error("nothing was aggregated: the test proves nothing about windows closed under backpressure")
	}
}

// Close while an Emit waits for room: the Emit returns (counted as
// dropped, loudly) instead of hanging.
func TestPipelineBlockCloseReleasesWaiters(t *testing.T) {
	gate := make(chan struct{})
	p := NewPipeline(PipelineConfig{QueueLen: 8, AggregateWindow: -1, Block: true}, SinkFunc(func(*Event) { <-gate }))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 20; i++ {
			p.Emit(&Event{Type: TypeLink, Severity: SevInfo})
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Waited == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if p.Stats().Waited == 0 {
		t.Fatal("the producer never waited")
	}
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Emit still waiting after Close")
	}
	close(gate)
	<-closed
	st := p.Stats()
	if st.Delivered+st.Dropped != 20 || st.Dropped == 0 {
		t.Errorf("stats %+v: want delivered+dropped = 20 with the late ones dropped", st)
	}
}
