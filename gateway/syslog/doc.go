// Package syslog exports otgw security events to a plant SOC: RFC 5424
// syslog (or CEF, LEEF 2.0, JSON lines) over UDP (RFC 5426), TCP with
// octet counting (RFC 6587 section 3.4.1) or TLS (RFC 5425, TLS 1.2+,
// server verified against a configured CA, optional client certificate),
// through a persistent on-disk spool, to one or more destinations.
//
// # Message format
//
// RFC 5424: HEADER with PRI = facility*8 + severity (default facility 13,
// log audit), an RFC 3339 UTC timestamp with microseconds, and the field
// limits of section 6 (HOSTNAME 255, APP-NAME 48, PROCID 128, MSGID 32,
// printable US-ASCII, "-" for NILVALUE). MSGID is the event class
// (MODBUS_DENY, POLICY_RELOAD, LOG_DROPPED, LOG_GAP, EVENTS_SUPPRESSED,
// LOG_DEST_DOWN ...). A destination needs no configuration beyond its
// address: udp://soc:514 works. Structured data uses the SD-IDs that RFC
// 5424 section 7 registers, which need no enterprise number:
//
//	[meta sequenceId=.. sysUpTime=..]
//	[timeQuality tzKnown=.. isSynced=.. syncAccuracy=..]
//	[origin software="otgw" swVersion=.. ip=.. ip=.. enterpriseId=PEN]
//
// sequenceId is the pipeline's per-boot Seq (wrapping 2147483647 -> 1,
// section 7.3.1); sysUpTime (section 7.3.2) is the time since the exporter
// started in hundredths of a second, given only for events of the running
// process (not for records spooled by an earlier run); ip repeats for each
// global unicast address of the host (section 7.2.1; Config.OriginIPs
// overrides). MSG is the event itself, one JSON object in the
// events.AppendJSON schema with every non-ASCII character \u-escaped, so
// MSG is plain ASCII (no BOM, section 6.4), one line, and any JSON parser
// reads it:
//
//	<108>1 2025-01-15T10:21:33.123456Z gw-01 otgw 2417 MODBUS_DENY
//	  [meta sequenceId="81234" sysUpTime="129312"][timeQuality tzKnown="1" isSynced="1"]
//	  [origin software="otgw" swVersion="0.1.0" ip="192.0.2.1"] {"seq":81234,...,"type":"deny",...}
//
// With pen= in the URL (the IANA Private Enterprise Number; 32473, the
// documentation number of RFC 5612, appears only in tests and examples)
// our own element comes first, repeating the event's fields as SD params
// for receivers that index structured data but not JSON:
//
//	[otgw@PEN bootId=.. type=.. mode=.. verdict=.. action=.. conduit=.. rule=..
//	  reason=.. zoneSrc=.. zoneDst=.. src=.. srcPort=.. dst=.. dstPort=.. proto=..
//	  frame=.. count=.. step=.. version=.. file=.. line=.. port=.. <dissect fields>]
//
// and origin gets enterpriseId=PEN. SD values escape '"', '\' and ']'
// (section 6.3.3); SD names are cut to 32 characters, and a protocol field
// whose name collides with one above is prefixed "f_". bootId (in otgw@PEN,
// and boot_id in the JSON) tells boots apart, so with sequenceId the SOC
// sees gaps and duplicates. A message longer than the destination's
// maxbytes (default 8192 on streams, 2048 on UDP) is shortened, never
// split: text values cut to 64 bytes, then the protocol fields dropped,
// marked truncated="1" (and "truncated":true in the JSON fields); only a
// message still too long after that (a huge hostname) is cut at the end.
//
// # CEF and LEEF
//
// CEF and LEEF are carried as the MSG of an RFC 5424 header with "-" SD.
// The header is CEF:0|otgw|otgw|<swVersion>|<MSGID>|<message>|<severity>
// (severity 0..10: emergency 10, alert 9, critical 8, error 7, warning 5,
// notice 3, info 2, debug 0) and LEEF:2.0|otgw|otgw|<swVersion>|<MSGID>|x09|.
// CEF escapes '\' and '|' in the header and '\', '=', CR and LF in
// extension values; LEEF 2.0 declares a tab delimiter ("x09") and maps
// tab, CR and LF in values to spaces. The event's fields map as follows
// (a dash: the key is written as itself, in CEF prefixed "ad."):
//
//	event field      CEF key                 LEEF key
//	time             rt (epoch ms)           devTime + devTimeFormat
//	hostname         dvchost                 -
//	seq              cn1 (cn1Label=seq)      seq
//	severity         header severity         sev (1..10)
//	type             cat                     cat
//	src / srcPort    src / spt               src / srcPort
//	dst / dstPort    dst / dpt               dst / dstPort
//	proto            app                     app
//	action           act                     action
//	verdict          outcome                 verdict
//	count            cnt                     count
//	conduit          cs1 (cs1Label=conduit)  conduit
//	rule             cs2 (cs2Label=rule)     rule
//	reason           cs3 (cs3Label=reason)   reason
//	zoneSrc          cs4 (cs4Label=zoneSrc)  zoneSrc
//	zoneDst          cs5 (cs5Label=zoneDst)  zoneDst
//	bootId           cs6 (cs6Label=bootId)   bootId
//	mode, step, version, file, line, port, frame, protocol fields
//	                 ad.<name>               <name>
//	message          header name             msg
//
// JSON (format=json) is the events.AppendJSON schema, one object per line
// (LF framed on streams).
//
// # Spool and delivery
//
// Emit appends the event (as JSON) to the spool: segment files of
// CRC-32C-checked records with a spool-wide increasing id, fsynced in
// batches every SyncInterval (a power cut loses at most that batch), under
// a size cap. Each destination has its own cursor (the next id to send),
// persisted atomically with the fsync batch; segments are deleted once
// every destination is past them. A destination that is down only holds
// back its own cursor. When the spool is full, the undelivered records of
// the lowest severity go first (oldest first), down to 7/8 of the cap; a
// record never displaces a more severe one, and the count becomes a
// TypeDropped event ("dropped N"). On start, new ids start past every
// persisted cursor, and corrupt bytes in a segment (a torn tail, or damage
// anywhere) are skipped: the reader resynchronises on the next record with
// a valid CRC and a growing id, rewrites the segment without the damage,
// and reports the records lost (an estimate, at least one per damaged
// region) as a TypeDropped event with Step "spool_corrupt" and in
// Stats.SpoolLost.
//
// # Crash detection
//
// The file exporter-state in the spool directory holds the boot id and
// last sequence number of the events spooled by the running process,
// rewritten with each fsync batch, marked unclean at start and clean by
// Close. A start that finds the previous run unclean (killed, power cut)
// emits one TypeGap event (MSGID LOG_GAP, severity warning) with Fields
// prevBootId, lastSeq (the newest of the state file and the records that
// survived in the spool) and missingFrom (lastSeq+1; the end of the range is
// not knowable), or prevBootId "unknown" when that run spooled nothing.
//
// # Offline: wait, then fail loudly
//
// The live gateway never waits on the SOC: a full spool drops, counted.
// Offline tools have no such excuse (DESIGN.md: replay never drops
// events): with Config.SpoolFullWait, Emit waits for room in a full spool
// while the destinations keep confirming records, and gives up (the spool
// drops, counted in Stats.Dropped and Stats.GaveUp) only after the spool
// has been full for SpoolFullWait with no record leaving it. Behind an
// events.Pipeline with Block set, that wait slows the producer down.
// Flush(ctx) then waits until every destination has confirmed every
// spooled record, or returns an error matching ErrUndelivered naming the
// records each destination lacks. Close keeps what is left in the spool
// directory for the next start (a named spool: otgw replay --spool DIR,
// otgw run --spool DIR).
//
// Delivery is at least once. A destination advances its cursor only after
// a batch is confirmed; otherwise it reconnects with jittered exponential
// backoff (BackoffMin..BackoffMax) and resends the batch (duplicates carry
// the same sequenceId).
//
// # What "confirmed" means on TCP and TLS
//
// Syslog over TCP and TLS has no application acknowledgement, and a
// successful write proves nothing: with TLS 1.3 the server checks the
// client certificate after the client's handshake has returned, so a
// receiver that rejects our certificate still lets the first writes
// succeed, then drops them. We measured this against rsyslog: with the
// check below disabled, five events to an OpenSSL-driver listener that
// rejected our certificate were all "written", none logged. So:
//
//  1. A new connection must complete the TLS handshake (our side verifies
//     the server against the CA and name) and then stay quiet for
//     ConfirmWait (default 500 ms, confirm= in the URL; set it above twice
//     the round-trip time). A reader goroutine watches the receive side: a
//     syslog receiver never sends data, so any alert, EOF or reset marks
//     the session dead. A session that dies in that window is a failed
//     connection (a "tls_fail" exporter event); nothing was sent on it.
//  2. After each batch is written, the sender waits until the receiver's
//     TCP has acknowledged every byte (SIOCOUTQ == 0, Linux) and checks
//     that the session is still alive.
//  3. The batch is then held for ConfirmWait: only when the session is
//     still alive after that does the cursor move past it. A receiver that
//     is stopped (rsyslogd on SIGTERM) discards what sat in its socket
//     buffer and queues and closes the session; a session that dies within
//     the hold has its held batches sent again. Measured: rsyslogd stopped
//     by SIGTERM mid-stream under load lost 453 of 200,000 acknowledged
//     records without the hold.
//
// The residual risk is a receiver that acknowledged the bytes and lost
// them while keeping the session open longer than the hold (a crash
// without a reset, a queue discarded at a slow shutdown); only an acknowledging
// protocol (RELP) closes that gap. UDP offers no confirmation at all: the
// cursor advances after the datagram is sent (an ICMP unreachable reported
// on the connected socket fails the batch), and sequenceId shows the SOC
// what was lost.
//
// # Concurrency
//
// Exporter is safe for concurrent use. Emit does disk I/O and must not be
// called from the datapath: put the Exporter behind an events.Pipeline,
// whose bounded queue and aggregation keep producers from ever waiting
// (unless the pipeline is set to Block, offline only).
// One goroutine per destination sends; one goroutine fsyncs.
package syslog
