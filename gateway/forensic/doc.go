// Package forensic keeps the live gateway's capture of denied frames
// (`otgw run --capture-denied DIR`): a rotating, size-bounded set of
// pcapng files that Wireshark, tshark and our own Reader open.
//
// Each frame a ruleset verdict denied (the frames behind deny events) is
// written as an Enhanced Packet Block on the interface it arrived on
// (interface 0 north, 1 south, named after the ports), with an
// opt_comment that joins it to the event: "otgw deny flow_id=N
// community_id=1:… reason=R conduit=C rule=R action=A app_proto=P". The
// flow_id and community_id are computed as the event's are
// (events.FlowID, Community ID v1), so `tshark -Y 'frame.comment contains
// "flow_id=N"'` finds the frames of an event. Formats: the pcapng draft
// (draft-ietf-opsawg-pcapng, sections 4.1 SHB, 4.2 IDB, 4.3 EPB, 3.5
// options).
//
// The datapath never waits on the disk: Tap copies a denied frame into one
// of a fixed set of slots allocated at Open and hands it to the writer
// goroutine over a bounded channel; with no free slot the frame is not
// captured and Stats.Dropped counts it. Nothing is allocated per frame.
//
// Bounds: at most Config.MaxFiles files and Config.MaxBytes bytes in DIR
// (files from earlier runs included): each file is closed at
// MaxBytes/MaxFiles bytes and the oldest is removed when a new one would
// exceed either bound.
package forensic
