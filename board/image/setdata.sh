#!/usr/bin/env bash
# Provisions the data partition (otgw-data) of a disk image before it is
# flashed: the files of DIR (e.g. policy.yaml, otgw.conf) are added to
# what the partition holds (the update state `otgw fw provision` left
# there stays), replacing files of the same name. The partition's ext4 is
# read with debugfs, rebuilt with mke2fs -d and written at its offset.
#
#   setdata.sh IMAGE DIR
#
# Needs sfdisk (fdisk), debugfs and mke2fs (e2fsprogs); no loop devices
# or mounts.
set -euo pipefail
if [[ $# -ne 2 ]]; then
	echo "usage: setdata.sh IMAGE DIR" >&2
	exit 2
fi
img=$1 dir=$2
[[ -f $img ]] || { echo "setdata: $img: no such image" >&2; exit 1; }
[[ -d $dir ]] || { echo "setdata: $dir: no such directory" >&2; exit 1; }
# "IMAGE4 : start=  ..., size=  ..., type=..., uuid=..., name="otgw-data""
line=$(sfdisk -d "$img" | grep 'name="otgw-data"' || true)
[[ -n $line ]] || { echo "setdata: $img has no partition named otgw-data" >&2; exit 1; }
start=$(sed -E 's/.*start= *([0-9]+).*/\1/' <<<"$line")
size=$(sed -E 's/.*size= *([0-9]+).*/\1/' <<<"$line")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/data"
dd if="$img" of="$tmp/old.ext4" bs=512 skip="$start" count="$size" status=none
if debugfs -R "rdump / $tmp/data" "$tmp/old.ext4" >"$tmp/debugfs.log" 2>&1 && [ -d "$tmp/data/lost+found" ]; then
	rm -rf "$tmp/data/lost+found"
else
	echo "setdata: otgw-data of $img holds no readable ext4: starting from an empty partition" >&2
	rm -rf "$tmp/data" && mkdir -p "$tmp/data"
fi
rm -f "$tmp/old.ext4"
cp -a "$dir/." "$tmp/data"
mkdir -p "$tmp/data/spool" "$tmp/data/trust"
mke2fs -q -t ext4 -L otgw-data -E root_owner=0:0 -d "$tmp/data" "$tmp/data.ext4" "$((size / 2))k" >/dev/null
dd if="$tmp/data.ext4" of="$img" bs=512 seek="$start" conv=notrunc status=none
echo "setdata: wrote $dir to otgw-data of $img (sector $start, $((size / 2048)) MiB)"
