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
// The datapath benchmark behind `make bench-datapath` lives here too
// (TestDatapathBench, enabled by OTGW_BENCH_DATAPATH=1).
package e2e
