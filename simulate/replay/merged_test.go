package replay_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/otgw/otgw/gateway"
	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/rules/learn"
	"github.com/otgw/otgw/simulate/learnrun"
	"github.com/otgw/otgw/simulate/replay"
)

// mergedCorpus concatenates the captures of ../shared/pcaps, in name
// order, into one pcapng with Wireshark's mergecap, as
// simulate/capture's TestMergedCorpusSamePDUs does (one interface per
// input file, several link types in one section, times out of order).
func mergedCorpus(t *testing.T) (merged string, files []string) {
	t.Helper()
	dir := testenv.Pcaps(t)
	for _, pat := range []string{"*.pcap", "*.pcapng"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		files = append(files, m...)
	}
	sort.Strings(files)
	if len(files) < 80 {
		t.Fatalf("found %d captures in %s, want the whole corpus", len(files), dir)
	}
	merged = filepath.Join(t.TempDir(), "merged.pcapng")
	args := append([]string{"-a", "-F", "pcapng", "-w", merged}, files...)
	if out, err := exec.Command(testenv.NeedCmd(t, "mergecap"), args...).CombinedOutput(); err != nil {
		t.Fatalf("mergecap: %v: %s", err, out)
	}
	return merged, files
}

// TestMergedCorpusReplaysAsFiles: replaying the merged corpus with a
// monitor-mode policy (learned from it) judges the same PDUs, with the
// same verdicts and events (time, reason, rule, addresses, fields), as
// replaying the files one by one. The corpus reuses 4-tuples across files
// (one connection captured in pieces, the same ports on different days,
// files out of time order): the engine must start a new flow where a
// receiving stack would (the flow expired, or its clock ran back), and
// replay must pick each mid-stream piece up on its own.
func TestMergedCorpusReplaysAsFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("replays the shared corpus twice (about 10 s)")
	}
	merged, files := mergedCorpus(t)
	pol, _, err := learnrun.Learn(learn.Options{}, merged)
	if err != nil {
		t.Fatal(err)
	}
	pol = monitorCopy(pol)
	run := func(path string, evs *[]string) *replay.Report {
		rep, err := replay.Run(replay.Options{Policy: pol, WhatIf: false, OnEvent: func(e *replay.Event) {
			if strings.HasPrefix(e.Reason, gateway.ReasonDetectPrefix) {
				return // rate windows span the files of the merged capture
			}
			f, _ := json.Marshal(e.Fields)
			*evs = append(*evs, fmt.Sprintf("%s %s %s %s/%s %s>%s %s", e.Time.UTC().Format("2006-01-02T15:04:05.000000"),
				e.Verdict, e.Reason, e.Conduit, e.Rule, e.Src, e.Dst, f))
		}}, path)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(path), err)
		}
		return rep
	}
	var wantEvs, gotEvs []string
	var want replay.Report
	for _, f := range files {
		r := run(f, &wantEvs)
		want.Frames += r.Frames
		want.PDUsAllowed += r.PDUsAllowed
		want.PDUsDenied += r.PDUsDenied
		want.PDUsAlerted += r.PDUsAlerted
		want.Dropped += r.Dropped
	}
	got := run(merged, &gotEvs)
	t.Logf("merged: %d frames, PDUs %d allowed, %d denied, %d alerted, %d dropped, %d events; files one by one: %d frames, PDUs %d/%d/%d, %d dropped, %d events",
		got.Frames, got.PDUsAllowed, got.PDUsDenied, got.PDUsAlerted, got.Dropped, len(gotEvs),
		want.Frames, want.PDUsAllowed, want.PDUsDenied, want.PDUsAlerted, want.Dropped, len(wantEvs))
	if got.Frames != want.Frames || got.PDUsAllowed != want.PDUsAllowed || got.PDUsDenied != want.PDUsDenied ||
		got.PDUsAlerted != want.PDUsAlerted || got.Dropped != want.Dropped {
		t.Errorf("merged and files one by one differ (see the log line)")
	}
	if got.PDUsAllowed+got.PDUsAlerted < 20000 {
		t.Errorf("only %d PDUs judged: the policy no longer covers the corpus", got.PDUsAllowed+got.PDUsAlerted)
	}
	sort.Strings(gotEvs)
	sort.Strings(wantEvs)
	if !slices.Equal(gotEvs, wantEvs) {
		for _, e := range gotEvs {
			if !slices.Contains(wantEvs, e) {
				t.Errorf("merged only: %s", e)
			}
		}
		for _, e := range wantEvs {
			if !slices.Contains(gotEvs, e) {
				t.Errorf("files only: %s", e)
			}
		}
	}
}
