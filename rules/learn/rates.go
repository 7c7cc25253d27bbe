package learn

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/otgw/otgw/rules"
)

// rates records, per rate detector (rules.Detector) and subject, the times
// of the responses the detector counts, so that the draft can raise a
// threshold the captured baseline already reaches: learn allows what was
// observed, and a reviewer reads in the comment how busy it was.
type rates [rules.NumDetectors]map[netip.Addr][]time.Time

func (r *rates) observe(hits []DetectorHit, t time.Time) {
	for _, h := range hits {
		if r[h.Detector] == nil {
			r[h.Detector] = map[netip.Addr][]time.Time{}
		}
		r[h.Detector][h.Subject] = append(r[h.Detector][h.Subject], t)
	}
}

// peak returns the largest number of times within any window of length w
// (as the engine counts: a match at now counts those after now-w), the
// subject and the time it was reached.
func peak(ts map[netip.Addr][]time.Time, w time.Duration) (n int, subj netip.Addr, at time.Time) {
	subjects := make([]netip.Addr, 0, len(ts))
	for a := range ts {
		subjects = append(subjects, a)
	}
	sort.Slice(subjects, func(i, j int) bool { return subjects[i].Less(subjects[j]) })
	for _, a := range subjects {
		t := append([]time.Time(nil), ts[a]...)
		sort.Slice(t, func(i, j int) bool { return t[i].Before(t[j]) })
		lo := 0
		for hi := range t {
			for t[hi].Sub(t[lo]) >= w {
				lo++
			}
			if k := hi - lo + 1; k > n {
				n, subj, at = k, a, t[hi]
			}
		}
	}
	return n, subj, at
}

// detections drafts the detections section: a detector whose default
// threshold the capture reaches gets its count raised just above the
// observed peak (or is turned off where the peak is beyond what the
// engine counts), with a comment saying why. The others keep their
// defaults and are not written.
func (r *rates) detections() []rules.Detection {
	var out []rules.Detection
	for i := rules.Detector(0); i < rules.NumDetectors; i++ {
		def := rules.DefaultThresholds[i]
		if len(r[i]) == 0 || def.Count == 0 {
			continue
		}
		n, subj, at := peak(r[i], def.Window)
		if n < def.Count {
			continue
		}
		what := fmt.Sprintf("observed %d %s %s within %s (reached %s); the default of %d would alert on this capture.",
			n, i.What(), subj, def.Window, at.UTC().Format(time.RFC3339), def.Count)
		det := rules.Detection{Name: i.String()}
		if n+1 > rules.MaxDetectCount {
			det.Off = true
			det.Comment = what + fmt.Sprintf("\nmore than the %d a detector counts: turned off. Review: a baseline this busy, or a scan in the capture?", rules.MaxDetectCount)
		} else {
			det.Count = strconv.Itoa(n + 1)
			det.Comment = what + "\nraised above the observed peak. Review: normal for this plant, or a scan in the capture?"
		}
		out = append(out, det)
	}
	return out
}
