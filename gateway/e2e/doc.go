// Package e2e holds the end-to-end tests of the inline gateway: real
// network namespaces and veth pairs (internal/netns), the real `otgw run`
// binary between a client and a server namespace, and real peers on both
// sides — a pymodbus server (Debian python3-pymodbus) and a simonvetter/modbus
// server, the mbpoll and goburrow/modbus clients, a DNP3 master and
// outstation from simulate/dnp3sim, and a gopcua server and client.
//
// Topology (netns.NewLine): client 192.0.2.1 (eth0) — north0 [otgw] south0
// — server 192.0.2.2 (eth0). The tests need root (testenv.NeedRoot) and
// skip otherwise; every namespace and process they create is removed in
// t.Cleanup, processes are killed by their PID only.
//
// TestScenariosLive replays every simulate/scenarios capture through the
// live datapath (hal AF_PACKET ports, daemon.Forwarder, gateway.Engine) in
// the gateway namespace, in-process rather than through the binary so that
// it sees every engine event before the pipeline aggregates repeats; client
// frames go in on one port and server frames on the other, and the
// verdicts, drop counters and crafted frames must equal offline replay's.
//
// The datapath benchmark behind `make bench-datapath` lives here too
// (TestDatapathBench, enabled by OTGW_BENCH_DATAPATH=1).
package e2e
