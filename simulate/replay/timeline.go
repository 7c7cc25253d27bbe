package replay

import (
	"fmt"

	"github.com/otgw/otgw/gateway"
)

// closedReason is the reason of a frame the gateway dropped because its
// connection was already closed (gateway.DropClosed): after a deny reset
// it, every later frame of the connection is one.
var closedReason = gateway.DropClosed.String()

// addTimeline adds ev to the timeline while it has fewer than
// maxTimeline entries. The frames of a connection the gateway had closed
// (closedReason) are one entry per connection, the first of them, whose
// Count and Last grow with each: a large message cut by a reset is
// followed by thousands of such frames (100 connections of 15 MB OPC UA
// Writes: 1.25 million), which would otherwise fill the timeline (and
// the replay's heap: issue 15) with one entry each. The events given to
// Options.OnEvent (--json) are not collapsed, nor are the what-if
// evaluation's after-reset refusals, which are the policy's own.
func (rep *Report) addTimeline(ev *Event, maxTimeline int) {
	closed := ev.Verdict == "deny" && !ev.AfterReset && ev.Reason == closedReason
	if closed {
		if i, ok := rep.closedIdx[flowKeyOf(ev.Src, ev.Dst)]; ok {
			e := &rep.Timeline[i]
			e.Count++
			e.Last = FrameRef{File: ev.File, Index: ev.Frame, Time: ev.Time}
			return
		}
	}
	if rep.timelineN >= maxTimeline {
		return
	}
	rep.Timeline = append(rep.Timeline, *ev)
	rep.timelineN++
	e := &rep.Timeline[len(rep.Timeline)-1]
	e.Count, e.Last = 1, FrameRef{File: ev.File, Index: ev.Frame, Time: ev.Time}
	if closed {
		if rep.closedIdx == nil {
			rep.closedIdx = map[flowKey]int{}
		}
		rep.closedIdx[flowKeyOf(ev.Src, ev.Dst)] = len(rep.Timeline) - 1
	}
}

// timelineEvents is how many events the timeline's entries stand for.
func (rep *Report) timelineEvents() int {
	n := 0
	for i := range rep.Timeline {
		n += max(rep.Timeline[i].Count, 1)
	}
	return n
}

// collapsedMessage describes a timeline entry that stands for Count
// frames of a closed connection ("" for one frame).
func (e *Event) collapsedMessage() string {
	if e.Count <= 1 {
		return ""
	}
	last := fmt.Sprint(e.Last.Index)
	if e.Last.File != e.File {
		last = fmt.Sprintf("%s:%d", e.Last.File, e.Last.Index)
	}
	return fmt.Sprintf("%d frames of this connection after the gateway closed it, frames %d to %s", e.Count, e.Frame, last)
}
