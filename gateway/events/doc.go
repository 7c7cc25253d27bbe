// Package events is otgw's security event model and pipeline: every deny,
// alert (monitor mode), policy reload or error, link change, start/stop,
// firmware update step and exporter health change is an Event with a
// sequence number and the boot id, handed to a Sink.
//
// Producers (the gateway loop, rules reload, update, the exporters) call
// Sink.Emit, which never blocks the caller: the datapath must not wait for
// logging. The engine builds an Event only when it has one to report (a
// deny or alert), never on the allow path. The Pipeline assigns Seq
// (contiguous per boot) and BootID (a random UUID per process start), folds
// repeats of identical denies into one TypeAggregated event per window
// (never events of severity critical or worse), queues them in a bounded
// queue (a full queue drops, counts and later reports "dropped N" as a
// TypeDropped event), and fans them out to the exporters from one
// dispatcher goroutine. Offline tools (otgw replay) set
// PipelineConfig.Block instead: a full queue makes Emit wait (backpressure
// on the replayed capture), so nothing is dropped. JSONFile is the default exporter (JSON lines,
// size-capped with one rotation); gateway/syslog is the SOC exporter.
// Severities follow RFC 5424 section 6.2.1; TimeQuality follows RFC 5424
// section 7.1.
//
// # The record
//
// One record schema serves the live events file, otgw replay --json,
// report.json's timeline, syslog MSG (and format=json) and the spool:
// AppendJSON writes it, UnmarshalJSONEvent reads it back (and the previous
// schema's records), and schema.json (Schema, JSON Schema 2020-12)
// describes it. Names follow Suricata's EVE JSON where EVE has one:
//
//	timestamp      RFC 3339 UTC with exactly six fractional digits
//	flow_id        the first 53 bits of the Community ID hash: the same
//	               for both directions, for live and replayed traffic
//	community_id   Community ID v1, seed 0 (corelight/community-id-spec)
//	event_type     deny, alert, aggregated, policy_reload, policy_error,
//	               link, start, stop, update, exporter, dropped, gap,
//	               watchdog, bypass, flow_table_full, transaction
//	src_ip src_port dest_ip dest_port   the packet's endpoints
//	proto          transport: TCP, UDP, ICMP, IPv6-ICMP, SCTP or a number
//	icmp_type icmp_code                 for ICMP
//	app_proto      modbus, dnp3 or opcua when a PDU was judged; s7comm,
//	               enip or iec104 on a flow a plain tcp/udp rule judged
//	               whose ports and payload show that protocol
//	               (protocols.Recognise: recognised, not inspected)
//	ether          {src_mac, dest_mac, ether_type} of the frame (the only
//	               addresses of an L2 event)
//	verdict action reason conduit rule mode   the decision: action is the
//	               policy's deny action taken (drop, reset, reply)
//	src_zone dest_zone severity message seq boot_id time_quality
//	pcap_filename pcap_cnt                    replay: capture and frame
//	after_reset    replay, deny only, written only when true: the
//	               enforcing gateway never judged this PDU, because an
//	               earlier deny had already reset (or, action drop,
//	               blocked) its connection; replay's what-if evaluation
//	               judged it, and reason is the policy's reason. No
//	               action was taken, so the record has no action
//	count          repeats (aggregated) or events lost (dropped); in
//	               replay's report.json timeline, the frames of a closed
//	               connection one deny entry stands for (with a message)
//	modbus dnp3 opcua   the protocol object: the dissect fields with the
//	               specification's names beside the numbers ("function"
//	               beside "fc", OPC UA "service" name beside "service_id",
//	               DNP3 objects as "g12v1"); in a transaction, the
//	               request's, with the response's in its "response" member
//	fields         event-specific fields of events without a protocol
//	step version file line port   update, policy and link context
//
// Examples, one per event type (the fields a type does not use are
// omitted). A Modbus write refused with a native exception reply:
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","flow_id":5068389443149628,"community_id":"1:wdIBrGBXnzx+VHlwkVy5h2Vgm5M=","event_type":"deny","src_ip":"192.0.2.130","src_port":40001,"dest_ip":"192.0.2.10","dest_port":502,"proto":"TCP","app_proto":"modbus","ether":{"src_mac":"02:00:00:00:00:82","dest_mac":"02:00:00:00:00:0a","ether_type":2048},"verdict":"deny","action":"reply","reason":"function_not_allowed","conduit":"hmi-polls-plc","rule":"modbus#1","mode":"enforce","src_zone":"supervisory","dest_zone":"cell3","severity":"notice","message":"deny modbus 192.0.2.130:40001 -> 192.0.2.10:502: function_not_allowed","seq":1,"boot_id":"b","modbus":{"addr":40,"dir":"request","fc":6,"function":"write_single_register","tid":2,"unit":1}}
//
// The next write on the same connection, in `otgw replay --json`: the
// connection was reset at the first, so the gateway never saw this one;
// the policy refuses it too (after_reset):
//
//	{"timestamp":"2026-01-01T08:00:00.007000Z","flow_id":5068389443149628,"community_id":"1:wdIBrGBXnzx+VHlwkVy5h2Vgm5M=","event_type":"deny","src_ip":"192.0.2.130","src_port":40001,"dest_ip":"192.0.2.10","dest_port":502,"proto":"TCP","app_proto":"modbus","ether":{"src_mac":"02:00:00:00:00:82","dest_mac":"02:00:00:00:00:0a","ether_type":2048},"verdict":"deny","reason":"function_not_allowed","conduit":"hmi-polls-plc","rule":"modbus#1","mode":"enforce","severity":"notice","seq":0,"pcap_filename":"plant.pcap","pcap_cnt":9,"after_reset":true,"modbus":{"addr":41,"dir":"request","fc":6,"function":"write_single_register","tid":3,"unit":1,"value":7}}
//
// A DNP3 direct operate over UDP in a monitor-mode conduit:
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","flow_id":5836270011984961,"community_id":"1:3jS8DoDgrEH2yb2+4i93lSgi2K4=","event_type":"alert","src_ip":"192.0.2.140","src_port":20000,"dest_ip":"192.0.2.20","dest_port":20000,"proto":"UDP","app_proto":"dnp3","ether":{"src_mac":"02:00:00:00:00:82","dest_mac":"02:00:00:00:00:0a","ether_type":2048},"verdict":"alert","reason":"object_not_allowed","conduit":"scada-rtu","rule":"dnp3#1","mode":"monitor","severity":"warning","seq":2,"boot_id":"b","dnp3":{"dir":"request","fc":5,"function":"direct_operate","link_dst":10,"link_src":1,"objects":["g12v1"]}}
//
// An OPC UA Write refused by a reset:
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","flow_id":1622381476520402,"community_id":"1:2yXDjB+ZIdKuGiAcyv6hr7Y03Pk=","event_type":"deny","src_ip":"192.0.2.140","src_port":50000,"dest_ip":"192.0.2.30","dest_port":4840,"proto":"TCP","app_proto":"opcua","ether":{"src_mac":"02:00:00:00:00:82","dest_mac":"02:00:00:00:00:0a","ether_type":2048},"verdict":"deny","action":"reset","reason":"service_not_allowed","conduit":"opc-clients","rule":"opcua#1","mode":"enforce","severity":"notice","seq":3,"boot_id":"b","opcua":{"dir":"request","msg_type":"MSG","service":"write","service_id":673}}
//
// An LLDP frame the policy's l2 section does not allow:
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","event_type":"deny","ether":{"src_mac":"02:00:00:00:00:82","dest_mac":"ff:ff:ff:ff:ff:ff","ether_type":35020},"verdict":"deny","action":"drop","reason":"ethertype_not_allowed","mode":"enforce","severity":"notice","message":"deny l2 02:00:00:00:00:82 -> ff:ff:ff:ff:ff:ff ethertype 0x88cc: ethertype_not_allowed","seq":4,"boot_id":"b"}
//
// A ping on no conduit, in monitor mode:
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","flow_id":5790187585279788,"community_id":"1:bfSSJRo0FyyXs4YnHr7BJM1QmwM=","event_type":"alert","src_ip":"192.0.2.130","dest_ip":"192.0.2.10","proto":"ICMP","icmp_type":8,"icmp_code":0,"ether":{"src_mac":"02:00:00:00:00:82","dest_mac":"02:00:00:00:00:0a","ether_type":2048},"verdict":"alert","reason":"flow_not_allowed","mode":"monitor","severity":"warning","seq":5,"boot_id":"b"}
//
// A TCP connection to a port no conduit allows:
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","flow_id":2290167392921794,"community_id":"1:yOgi5SXuaMK13po/qHJVKQbalOI=","event_type":"deny","src_ip":"192.0.2.130","src_port":40002,"dest_ip":"192.0.2.10","dest_port":22,"proto":"TCP","ether":{"src_mac":"02:00:00:00:00:82","dest_mac":"02:00:00:00:00:0a","ether_type":2048},"verdict":"deny","action":"drop","reason":"flow_not_allowed","mode":"enforce","severity":"notice","seq":6,"boot_id":"b"}
//
// Four repeats of a deny within the aggregation window:
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","flow_id":5068389443149628,"community_id":"1:wdIBrGBXnzx+VHlwkVy5h2Vgm5M=","event_type":"aggregated","src_ip":"192.0.2.130","src_port":40001,"dest_ip":"192.0.2.10","dest_port":502,"proto":"TCP","app_proto":"modbus","ether":{"src_mac":"02:00:00:00:00:82","dest_mac":"02:00:00:00:00:0a","ether_type":2048},"verdict":"deny","action":"reply","reason":"function_not_allowed","conduit":"hmi-polls-plc","rule":"modbus#1","mode":"enforce","severity":"notice","seq":7,"boot_id":"b","count":4,"modbus":{"aggregated_type":"deny","fc":6,"first_seen":"2026-01-01T08:00:00.011000Z","function":"write_single_register","last_seen":"2026-01-01T08:00:00.029000Z"}}
//
// An allowed read and its response on a conduit with log: transactions
// (gateway/txlog; severity info, rate-bounded; endpoints and packet
// context of the request):
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","flow_id":5068389443149628,"community_id":"1:wdIBrGBXnzx+VHlwkVy5h2Vgm5M=","event_type":"transaction","src_ip":"192.0.2.130","src_port":40001,"dest_ip":"192.0.2.10","dest_port":502,"proto":"TCP","app_proto":"modbus","ether":{"src_mac":"02:00:00:00:00:82","dest_mac":"02:00:00:00:00:0a","ether_type":2048},"verdict":"allow","conduit":"hmi-polls-plc","rule":"modbus#1","mode":"enforce","severity":"info","message":"transaction modbus 192.0.2.130:40001 -> 192.0.2.10:502: read_holding_registers: ok","seq":18,"boot_id":"b","modbus":{"addr":0,"dir":"request","fc":3,"function":"read_holding_registers","qty":10,"response":{"dir":"response","fc":3,"function":"read_holding_registers","tid":4,"unit":1},"tid":4,"unit":1}}
//
// Policy reloaded, and a reload refused (the previous ruleset stays):
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","event_type":"policy_reload","severity":"notice","message":"policy reloaded","seq":8,"boot_id":"b","version":"3","file":"/etc/otgw/policy.yaml"}
//	{"timestamp":"2026-01-01T08:00:00.005000Z","event_type":"policy_error","severity":"error","message":"policy.yaml:12:5: conduit \"x\": unknown zone \"cell4\" (previous ruleset kept)","seq":11,"boot_id":"b","file":"/etc/otgw/policy.yaml","line":12}
//
// A bridge port's link went down:
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","event_type":"link","severity":"warning","message":"link south (eth1) down","seq":12,"boot_id":"b","port":"south"}
//
// A firmware update step:
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","event_type":"update","severity":"notice","message":"firmware 1.3.0 installed in slot B","seq":13,"boot_id":"b","step":"installed","version":"1.3.0"}
//
// A syslog destination became unreachable (events stay spooled):
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","event_type":"exporter","severity":"warning","message":"syslog destination tls-soc.example-6514 down: connection refused","seq":14,"boot_id":"b","step":"down"}
//
// Events lost to a full queue or spool:
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","event_type":"dropped","severity":"warning","message":"dropped 120 events: queue full","seq":15,"boot_id":"b","count":120}
//
// The flow table is full:
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","event_type":"flow_table_full","severity":"warning","message":"flow table full (65536 flows): evicting","seq":16,"boot_id":"b"}
//
// Start and stop (a start that fails is a stop of severity error):
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","event_type":"start","severity":"notice","message":"otgw started","seq":9,"boot_id":"b","version":"1.0.0"}
//	{"timestamp":"2026-01-01T08:00:00.005000Z","event_type":"stop","severity":"notice","message":"otgw stopped","seq":17,"boot_id":"b","version":"1.0.0"}
//
// The previous run ended without a clean stop:
//
//	{"timestamp":"2026-01-01T08:00:00.005000Z","event_type":"gap","severity":"warning","seq":10,"boot_id":"b","fields":{"lastSeq":300,"missingFrom":301,"prevBootId":"a"}}
package events
