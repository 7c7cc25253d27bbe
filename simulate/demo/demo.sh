#!/usr/bin/env bash
# make demo: the gateway's main job in under a minute.
#
# As root: three network namespaces (HMI — gateway — PLC), the real otgw
# binary between them enforcing simulate/demo/policy.yaml, a real Modbus
# server (simonvetter/modbus) as the PLC and an HMI client
# (goburrow/modbus) that polls and then tries one forbidden write. Live
# verdict lines and the counters are printed; everything is torn down on
# exit (trap), also on Ctrl-C or failure.
#
# Without root (or without iproute2): an offline demo on a generated
# capture: otgw check, otgw dissect, otgw replay (OTGW_DEMO_OFFLINE=1 forces
# it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
T0=$(date +%s%N)
elapsed() { local ms=$((($(date +%s%N) - T0) / 1000000)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
WORK=$(mktemp -d /tmp/otgw-demo.XXXXXX)
POLICY=simulate/demo/policy.yaml
BIN=dist/demo
PIDS=()
NSS=()

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
	set +e
	# In start order: the PLC, the gateway (it writes its stop event), and
	# last the event printer, so the stop event is still shown.
	for pid in "${PIDS[@]}"; do
		[[ $pid == "${PIDS[-1]}" ]] && sleep 0.3
		kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
	done
	for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null; done
	rm -rf "$WORK"
	echo "demo took $(elapsed) s"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# findgo: $GO, then go on PATH, then the usual install places. sudo resets
# PATH to its secure_path, which rarely holds Go: look where Go is usually
# installed before giving up, and then say what to do.
findgo() {
	local g
	for g in ${GO:-} go /usr/local/go/bin/go /usr/lib/go/bin/go ${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)/go/bin/go} ${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)/sdk/go/bin/go}; do
		if command -v "$g" >/dev/null 2>&1; then command -v "$g"; return 0; fi
	done
	return 1
}

# build compiles just the two programs the demo runs (otgw and the demo's
# PLC/HMI peer) in one go build, so shared packages compile once, and shows
# what it compiles: a cold build (empty Go cache) compiles ~240 packages.
build() {
	say "building otgw and the demo peers (dist/demo/)"
	local gobin
	if ! gobin=$(findgo); then
		if [[ -x $BIN/otgw && -x $BIN/otgw-peer ]]; then
			echo "go not found; using the binaries already in $BIN/ (run 'make demo' as your user once to rebuild them)"
			return 0
		fi
		echo "go not found on PATH${SUDO_USER:+ (sudo replaces PATH with its secure_path)}. Either:"
		echo "  sudo env PATH=\"\$PATH\" make demo      # keep your PATH, Go included"
		echo "  make demo && sudo make demo             # build as yourself first; the root run reuses dist/demo/"
		exit 1
	fi
	mkdir -p "$BIN"
	local n=0 tty=0 status=1
	[[ -t 1 ]] && tty=1
	# go build -v names each package as it compiles it (cached ones are not
	# named): a running count, so a cold build is visibly busy.
	while IFS= read -r line; do
		case $line in
		"exit "*) status=${line#exit } ;;
		*" "* | "#"*) echo "$line" ;; # an error or a note from go build: print it whole
		*)
			n=$((n + 1))
			if ((tty)); then printf '\r  compiling %3d: %-60.60s' "$n" "$line"; elif ((n % 40 == 1)); then echo "  compiling $n: $line ..."; fi ;;
		esac
	# Through sudo, compile as the user who called it: their Go cache is warm
	# (root's usually is not), and dist/ stays theirs.
	local as=()
	if [[ $(id -u) -eq 0 && -n ${SUDO_USER:-} && $SUDO_USER != root && $(stat -c %U .) == "$SUDO_USER" ]]; then
		as=(runuser -u "$SUDO_USER" -- env HOME="$(getent passwd "$SUDO_USER" | cut -d: -f6)")
		echo "  compiling as $SUDO_USER (sudo), with their Go cache"
	fi
	done < <("${as[@]}" env CGO_ENABLED=0 "$gobin" build -v -trimpath -ldflags '-s -w' -o "$BIN/" ./cmd/otgw ./simulate/peers/cmd/otgw-peer 2>&1; echo "exit $?")
	((tty)) && printf '\r%80s\r' ''
	[[ $status == 0 && -x $BIN/otgw && -x $BIN/otgw-peer ]] || { echo "build failed (go build exit $status)"; exit 1; }
	if ((n > 1)); then echo "  compiled $n packages in $(elapsed) s (cold Go cache; later runs reuse it)"; else echo "  up to date ($(elapsed) s)"; fi
}
build
OTGW=$BIN/otgw
PEER=$BIN/otgw-peer
echo "otgw: $OTGW ($("$OTGW" version))"

offline() {
	say "offline demo ($1)"
	"$PEER" capture -o "$WORK/demo.pcap"
	echo "generated $WORK/demo.pcap: an HMI polls a PLC five times, then writes holding register 5"
	say "otgw check $POLICY"
	"$OTGW" check "$POLICY"
	say "otgw dissect demo.pcap"
	"$OTGW" dissect "$WORK/demo.pcap"
	say "otgw replay --policy $POLICY demo.pcap (the same engine as the live gateway)"
	mkdir -p dist && "$OTGW" replay --policy "$POLICY" --out dist/demo-report "$WORK/demo.pcap" || true
	say "verdict events"
	"$OTGW" replay --policy "$POLICY" --json "$WORK/demo.pcap" || true
	echo
	echo "Run 'sudo make demo' for the live gateway between network namespaces."
}

if [[ ${OTGW_DEMO_OFFLINE:-} == 1 ]]; then
	offline "OTGW_DEMO_OFFLINE=1"
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	offline "not root: network namespaces and AF_PACKET need root"
	exit 0
fi
if ! command -v ip >/dev/null; then
	offline "iproute2 'ip' not found"
	exit 0
fi

say "creating namespaces: hmi (192.0.2.140) — gw [north0|south0] — plc (192.0.2.10)"
SUF=$$
HMI=otgw-demo-hmi-$SUF GW=otgw-demo-gw-$SUF PLC=otgw-demo-plc-$SUF
for ns in "$HMI" "$GW" "$PLC"; do
	ip netns add "$ns"; NSS+=("$ns"); ip -n "$ns" link set lo up
	# IPv4-only hosts: keeps IPv6 neighbour discovery out of the demo's output.
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
ip link add eth0 netns "$HMI" type veth peer name north0 netns "$GW"
ip link add south0 netns "$GW" type veth peer name eth0 netns "$PLC"
ip -n "$HMI" addr add 192.0.2.140/24 dev eth0
ip -n "$PLC" addr add 192.0.2.10/24 dev eth0
for l in "$HMI:eth0" "$GW:north0" "$GW:south0" "$PLC:eth0"; do ip -n "${l%%:*}" link set "${l#*:}" up; done

say "starting the PLC (Modbus/TCP server, simonvetter/modbus)"
ip netns exec "$PLC" "$PEER" plc -listen 0.0.0.0:502 &
PIDS+=($!)

say "starting the gateway: otgw run --policy $POLICY --board sim"
EVENTS=$WORK/events.jsonl
ip netns exec "$GW" "$OTGW" run --policy "$POLICY" --board sim --ports north0,south0 \
	--events "$EVENTS" --status 127.0.0.1:9102 --spool "$WORK/spool" 2>"$WORK/otgw.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q '"event_type":"start"' "$EVENTS" 2>/dev/null && break; sleep 0.1; done
grep -q '"event_type":"start"' "$EVENTS" || { echo "the gateway did not start:"; cat "$WORK/otgw.log"; exit 1; }

# Live verdict lines: every event as one readable line. $! is tail's own
# PID (process substitution), so the teardown stops it and the formatter
# ends with it.
pretty() {
	while IFS= read -r line; do
		typ=$(sed -n 's/.*"event_type":"\([a-z_]*\)".*/\1/p' <<<"$line")
		msg=$(sed -n 's/.*"message":"\([^"]*\)".*/\1/p' <<<"$line")
		printf '  \033[33mgateway event\033[0m [%s] %s\n' "$typ" "$msg"
	done
}
tail -n +1 -f "$EVENTS" 2>/dev/null > >(pretty) &
PIDS+=($!)

sleep 0.3
say "HMI polls the PLC, then tries a forbidden write (holding 5 = 4242)"
ip netns exec "$HMI" "$PEER" hmi -plc 192.0.2.10:502 -polls 5 -interval 200ms -write 5=4242 || true
sleep 0.5

say "gateway counters (GET /metrics on the status endpoint)"
ip netns exec "$GW" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9102 && printf "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n" >&3 && cat <&3' |
	grep -E '^otgw_(up|pdus_[a-z]*_total|rx_frames_total|tx_frames_total|injected_frames_total|replies_total|resets_total|flows_active|drops_total\{reason="(pdu_denied|l2_policy|flow_denied)"\})' || true

say "gateway flow table (GET /flows?proto=modbus)"
ip netns exec "$GW" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9102 && printf "GET /flows?proto=modbus HTTP/1.0\r\nHost: x\r\n\r\n" >&3 && cat <&3' |
	python3 -c '
import json, sys
body = sys.stdin.read().split("\r\n\r\n", 1)[-1]
for f in json.loads(body)["flows"]:
    print("  %-22s -> %-17s %-6s %-14s %-6s pkts %d/%d  pdus %d (denied %d)" % (f["client"], f["server"], f["proto"], f.get("conduit", ""), f["verdict"], f["packets"][0], f["packets"][1], f["pdus"], f["pdus_denied"]))
' || true

say "tearing down"
