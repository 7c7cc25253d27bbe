#!/usr/bin/env bash
# Whole-process timings of the offline tools on the benchmark capture
# (make bench-offline): otgw dissect --json, otgw replay and tshark -T fields
# on the same file, RUNS runs each taken in turn (A B C A B C ...), each
# run's wall and CPU seconds from /usr/bin/time; prints min / median / max
# and frames per second at the median wall time.
set -euo pipefail
otgw=${1:?usage: bench-offline.sh OTGW DIR}
dir=${2:?usage: bench-offline.sh OTGW DIR}
runs=${RUNS:-5}
cap=$dir/offline.pcap
pol=$dir/policy.yaml
frames=$(tshark -r "$cap" -T fields -e frame.number 2>/dev/null | tail -1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
names=(dissect replay tshark)
cmds=(
	"$otgw dissect --json $cap"
	"$otgw replay --policy $pol $cap"
	"tshark -n -r $cap -T fields -e frame.number -e ip.src -e ip.dst -e mbtcp.trans_id -e modbus.func_code -e dnp3.al.func"
)
for ((r = 0; r < runs; r++)); do
	for i in "${!names[@]}"; do
		# shellcheck disable=SC2086 # the command is split into words on purpose
		/usr/bin/time -f '%e %U %S %M' -a -o "$tmp/${names[$i]}" ${cmds[$i]} >/dev/null 2>"$tmp/err" || {
			cat "$tmp/err" >&2
			exit 1
		}
	done
done
printf '%s: %s frames, %d runs each (min / median / max)\n' "$cap" "$frames" "$runs"
printf '%-8s %-24s %-24s %-10s %s\n' tool "wall s" "cpu s" "peak MiB" "frames/s (median wall)"
for n in "${names[@]}"; do
	awk -v n="$n" -v frames="$frames" '
		{ w[NR] = $1; c[NR] = $2 + $3; m[NR] = $4 / 1024 }
		function med(a, k,   i, j, t, b) {
			for (i = 1; i <= k; i++) b[i] = a[i]
			for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (b[j] < b[i]) { t = b[i]; b[i] = b[j]; b[j] = t }
			lo = b[1]; hi = b[k]
			return b[int((k + 1) / 2)]
		}
		END {
			mw = med(w, NR); wl = lo; wh = hi
			mc = med(c, NR); cl = lo; ch = hi
			mm = med(m, NR)
			printf "%-8s %-24s %-24s %-10.0f %.0f\n", n, sprintf("%.2f / %.2f / %.2f", wl, mw, wh), sprintf("%.2f / %.2f / %.2f", cl, mc, ch), mm, frames / mw
		}' "$tmp/$n"
done
