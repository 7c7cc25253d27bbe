#!/usr/bin/env bash
# Assembles the bootable A/B disk image of a board from Debian packages and
# our static otgw binary (see board/image/README.md for the layout).
#
#   mkimage.sh [--slot-only] BOARD OUT
#
# BOARD   board profile with a recipe: x86-generic (GRUB, UEFI) or
#         qemu-arm64 (U-Boot, QEMU virt).
# OUT     the disk image to write (dist/image/BOARD.img); with
#         --slot-only, the root slot image alone (a squashfs: the payload
#         of a firmware bundle, `otgw fw sign`).
#
# Environment:
#   OTGW_BIN       the otgw binary to put in the slot (default: built here,
#                  CGO_ENABLED=0, into the work directory)
#   IMAGE_VERSION  release version written to /etc/otgw/release (default 0.1.0)
#   IMAGE_SVN      security version of the factory slot (default 1)
#   IMAGE_KEYS     directory holding the release signing key release.key/.pub
#                  (default dist/image/keys: a development key is created
#                  there when missing); root.json of the image is signed by it
#   IMAGE_CACHE    where Debian packages are kept between builds
#                  (default dist/image/cache)
#   IMAGE_WORK     scratch directory (default dist/image/work-BOARD)
#
# Needs: apt-get (download only), dpkg-deb, cpio, gzip, mksquashfs
# (squashfs-tools), mkfs.vfat (dosfstools), mcopy/mmd (mtools), mke2fs
# (e2fsprogs), sfdisk (fdisk); x86-generic: grub-mkimage (grub-common)
# with the x86_64-efi modules (grub-efi-amd64-bin), busybox
# (busybox-static); qemu-arm64: mkimage (u-boot-tools), `dpkg
# --add-architecture arm64` for the arm64 kernel and busybox-static .debs,
# and to run the arm64 otgw's --help checks qemu-aarch64-static
# (qemu-user-static; without it the host otgw's are used).
# No loop devices and no mounts: every file system is written into a file
# and placed at its partition's offset with dd.
set -euo pipefail

slot_only=0
if [[ "${1:-}" == --slot-only ]]; then slot_only=1; shift; fi
if [[ $# -ne 2 ]]; then
	echo "usage: mkimage.sh [--slot-only] BOARD OUT" >&2
	exit 2
fi
board=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
start=$(date +%s)
say() { echo "mkimage: $* ($(($(date +%s) - start))s)"; }
die() { echo "mkimage: $*" >&2; exit 1; }

case $board in
x86-generic) arch=amd64 ;;
qemu-arm64) arch=arm64 ;;
*) die "board $board: no image recipe (x86-generic, qemu-arm64; see board/image/README.md)" ;;
esac

version=${IMAGE_VERSION:-0.1.0}
cache=${IMAGE_CACHE:-$root/dist/image/cache}
work=${IMAGE_WORK:-$root/dist/image/work-$board}
keys=${IMAGE_KEYS:-$root/dist/image/keys}
mkdir -p "$cache" "$keys" "$(dirname "$out")"
rm -rf "$work"
mkdir -p "$work"

tools=(apt-get dpkg-deb cpio gzip mksquashfs mkfs.vfat mcopy mmd mke2fs sfdisk)
case $board in
x86-generic) tools+=(grub-mkimage) ;;
qemu-arm64) tools+=(mkimage) ;;
esac
for t in "${tools[@]}"; do
	command -v "$t" >/dev/null || die "$t missing (see the Needs list at the top of $0 and board/image/README.md)"
done
if [[ $board == x86-generic ]]; then
	grubmods=/usr/lib/grub/x86_64-efi
	[[ -f $grubmods/squash4.mod ]] || die "$grubmods/squash4.mod missing: apt-get install grub-efi-amd64-bin"
fi

# fetch PKG GLOB: the cached .deb of a Debian package of this image's
# architecture, downloaded with apt-get download (never installed) the
# first time; a rebuild works offline once it has been fetched. For a
# foreign architecture apt needs `dpkg --add-architecture` and apt-get
# update.
fetch() {
	local pkg=$1 glob=$2 deb
	deb=$(ls "$cache"/$glob 2>/dev/null | tail -1 || true)
	if [[ -z "$deb" ]]; then
		say "downloading $pkg (apt-get download)" >&2
		(cd "$cache" && apt-get download -q "$pkg" >/dev/null 2>&1) ||
			die "apt-get download $pkg failed (run apt-get update; for arm64: dpkg --add-architecture arm64 first)"
		deb=$(ls "$cache"/$glob | tail -1)
	fi
	echo "$deb"
}

# --- the kernel: Debian's linux-image-$arch, downloaded (never installed) ---
# The metapackage names the current ABI package.
kmeta=linux-image-$arch
[[ $arch == "$(dpkg --print-architecture)" ]] || kmeta+=":$arch"
kpkg=$(apt-cache depends "$kmeta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}' || true)
if [[ -n "$kpkg" ]]; then
	kdeb=$(fetch "$kpkg" "${kpkg%:*}_*.deb")
else
	kdeb=$(ls "$cache"/linux-image-*-"$arch"_*_"$arch".deb 2>/dev/null | tail -1 || true)
	[[ -n "$kdeb" ]] || die "no $kmeta in apt's lists and none cached: run apt-get update"
fi
say "kernel package $(basename "$kdeb")"

# --- busybox: the host's busybox-static (amd64), else Debian's
# busybox-static of the image's architecture ---
if [[ $arch == amd64 ]]; then
	busybox=$(command -v busybox || true)
	[[ -x /bin/busybox ]] && busybox=/bin/busybox
	[[ -n "$busybox" ]] || die "busybox missing: apt-get install busybox-static"
	if ldd "$busybox" >/dev/null 2>&1; then die "$busybox is not a static BusyBox: apt-get install busybox-static"; fi
	applets=$("$busybox" --list)
else
	bdeb=$(fetch "busybox-static:$arch" "busybox-static_*_$arch.deb")
	mkdir -p "$work/busybox"
	dpkg-deb --fsys-tarfile "$bdeb" | tar -x -C "$work/busybox" ./bin/busybox
	busybox=$work/busybox/bin/busybox
	# Its applets: asked from the binary itself under qemu-user, else from
	# the host's busybox-static (Debian builds every architecture with the
	# same configuration).
	if command -v "qemu-aarch64-static" >/dev/null; then
		applets=$(qemu-aarch64-static "$busybox" --list)
	else
		host_bb=$(command -v busybox) || die "busybox missing: apt-get install busybox-static (or qemu-user-static)"
		applets=$("$host_bb" --list)
	fi
fi

# Modules the image loads, in load order (each after its dependencies; the
# check below fails the build if a kernel update changes that): virtio PCI
# transport, disk and NICs; squashfs for the slots; ext4 for the data
# partition; vfat for the ESP (grubenv); the i6300esb watchdog QEMU offers.
modules=(
	kernel/drivers/virtio/virtio_ring
	kernel/drivers/virtio/virtio
	kernel/drivers/virtio/virtio_pci_legacy_dev
	kernel/drivers/virtio/virtio_pci_modern_dev
	kernel/drivers/virtio/virtio_pci
	kernel/drivers/block/virtio_blk
	kernel/net/core/failover
	kernel/drivers/net/net_failover
	kernel/drivers/net/virtio_net
	kernel/fs/squashfs/squashfs
	kernel/lib/crc16
	kernel/fs/mbcache
	kernel/fs/jbd2/jbd2
	kernel/crypto/crc32c_generic
	kernel/fs/ext4/ext4
	kernel/fs/fat/fat
	kernel/fs/fat/vfat
	kernel/fs/nls/nls_cp437
	kernel/fs/nls/nls_ascii
	kernel/fs/nls/nls_utf8
	kernel/drivers/watchdog/watchdog
	kernel/drivers/watchdog/i6300esb
)
if [[ $arch == arm64 ]]; then
	# Built into Debian's arm64 kernel: virtio_ring, virtio and the watchdog
	# core. The virtio console (hvc0) is the lab's serial shell: QEMU's
	# virt board has one UART.
	builtin=" kernel/drivers/virtio/virtio_ring kernel/drivers/virtio/virtio kernel/drivers/watchdog/watchdog "
	all=("${modules[@]}") modules=()
	for m in "${all[@]}"; do [[ $builtin == *" $m "* ]] || modules+=("$m"); done
	modules+=(kernel/drivers/char/virtio_console)
fi
kx=$work/kernel
mkdir -p "$kx"
pats=('./boot/vmlinuz-*')
for m in "${modules[@]}"; do pats+=("./lib/modules/*/$m.ko"); done
dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$kx" --wildcards "${pats[@]}"
vmlinuz=$(ls "$kx"/boot/vmlinuz-* | head -1)
kver=${vmlinuz##*/vmlinuz-}
loaded=" "
for m in "${modules[@]}"; do
	ko=$kx/lib/modules/$kver/$m.ko
	[[ -f $ko ]] || die "module $m.ko not in $(basename "$kdeb")"
	deps=$(grep -a -o 'depends=[^[:cntrl:]]*' "$ko" | head -1 | cut -d= -f2 | tr ',' ' ')
	for d in $deps; do
		[[ "$loaded" == *" ${d//-/_} "* ]] || die "module $(basename "$m") needs $d, which is not loaded before it: fix the list in $0"
	done
	n=$(basename "$m")
	loaded+="${n//-/_} "
done

# --- otgw ---
bin=${OTGW_BIN:-}
if [[ -z "$bin" ]]; then
	say "building otgw (CGO_ENABLED=0)"
	bin=$work/otgw
	(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath \
		-ldflags "-s -w -X main.version=$version" -o "$bin" ./cmd/otgw)
fi
if ldd "$bin" >/dev/null 2>&1; then die "$bin is dynamically linked: build it with CGO_ENABLED=0"; fi
# tool: an otgw that runs here, for the keys and the boot state (the
# packed one when it is of this machine's architecture). binrun runs the
# packed otgw for its --help checks: under qemu-user for a foreign
# architecture when available, else the tool stands in for it.
tool=$bin binrun=("$bin")
if [[ $arch != "$(go env GOHOSTARCH)" ]]; then
	tool=${OTGW_TOOL:-}
	if [[ -z "$tool" ]]; then
		say "building the host's otgw (keys, boot state)"
		tool=$work/otgw-tool
		(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$tool" ./cmd/otgw)
	fi
	binrun=("$tool")
	if [[ $arch == arm64 ]] && command -v qemu-aarch64-static >/dev/null; then
		binrun=(qemu-aarch64-static "$bin")
	fi
fi

# --- the trust root the slot carries (factory root, read-only) ---
if [[ ! -f $keys/release.key ]]; then
	say "no release key in $keys: creating a development key (never ship it)"
	"$tool" fw keygen --out "$keys/release" >/dev/null
fi
if [[ ! -f $keys/root.json ]]; then
	"$tool" fw root --pub "$keys/release.pub" --key "$keys/release.key" --out "$keys/root.json" >/dev/null
fi

# --- initramfs: busybox, the modules, stage-1 init (mount the slot) ---
ird=$work/initramfs
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$busybox" "$ird/bin/busybox"
for a in $applets; do [[ $a == busybox ]] || ln -sf busybox "$ird/bin/$a"; done
for m in "${modules[@]}"; do cp "$kx/lib/modules/$kver/$m.ko" "$ird/lib/modules/"; done
for m in "${modules[@]}"; do basename "$m"; done >"$ird/lib/modules/load-order"
install -m 0755 "$here/initrd-init" "$ird/init"
(cd "$ird" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) | gzip -9n >"$work/initrd.img"

mib=$((1024 * 1024))
esp_mib=64 slot_mib=128 data_mib=64

# --- the root slot: squashfs with kernel, initramfs, busybox, otgw, init ---
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,sbin,usr/bin,dev,proc,sys,run,tmp,boot,etc/otgw,var/lib/otgw}
if [[ $board == x86-generic ]]; then
	# GRUB reads the kernel and initramfs from the slot's squashfs.
	cp "$vmlinuz" "$rootfs/boot/vmlinuz"
	cp "$work/initrd.img" "$rootfs/boot/initrd.img"
fi
cp "$busybox" "$rootfs/bin/busybox"
for a in $applets; do
	case $a in busybox | init) ;; *) ln -sf busybox "$rootfs/bin/$a" ;; esac
done
install -m 0755 "$here/init" "$rootfs/sbin/init"
install -m 0755 "$bin" "$rootfs/usr/bin/otgw"
install -m 0644 "$keys/root.json" "$rootfs/etc/otgw/root.json"
install -m 0644 "$here/factory-policy.yaml" "$rootfs/etc/otgw/policy.yaml"
# Arguments of `otgw run` that this otgw build takes beyond the basics:
# with the firmware health check (--fw-root), a trial slot is committed
# or rolled back by the gateway itself (update/BOOT.md).
: >"$rootfs/etc/otgw/run.args"
run_help=$("${binrun[@]}" run -h 2>&1 || true)
if grep -q -- '-fw-root' <<<"$run_help"; then
	echo "--fw-root /etc/otgw/root.json --fw-state /var/lib/otgw" >"$rootfs/etc/otgw/run.args"
fi
printf 'version=%s\nboard=%s\nkernel=%s\n' "$version" "$board" "$kver" >"$rootfs/etc/otgw/release"
if [[ $board == qemu-arm64 ]]; then
	# The U-Boot environment (redundant, two copies) on the raw partition
	# otgw-env, as fw_printenv and the U-Boot slot driver read it.
	install -m 0644 "$here/fw_env.config" "$rootfs/etc/fw_env.config"
fi
slot=$work/slot.sqfs
mksquashfs "$rootfs" "$slot" -noappend -quiet -comp gzip -all-root -mkfs-time 0 -all-time 0 >/dev/null
if [[ $board == qemu-arm64 ]]; then
	# U-Boot reads no squashfs: the slot's kernel (gzip, booti unpacks it)
	# and initramfs follow the squashfs (mksquashfs pads it to 4 KiB) as a
	# legacy multi-file uImage, whose CRC imxtract checks. boot.scr finds
	# it at bytes_used of the squashfs superblock rounded up to 4 KiB.
	gzip -6n <"$vmlinuz" >"$work/vmlinuz.gz"
	mkimage -A arm64 -O linux -T multi -C none -a 0 -e 0 -n "otgw $version $kver" \
		-d "$work/vmlinuz.gz:$work/initrd.img" "$work/boot.uimg" >/dev/null
	cat "$work/boot.uimg" >>"$slot"
fi
say "slot image $(($(stat -c %s "$slot") / 1024)) KiB (kernel $kver, otgw $version)"
if [[ $slot_only == 1 ]]; then
	mv "$slot" "$out"
	rm -rf "$work"
	say "wrote $out"
	exit 0
fi

if [[ $board == qemu-arm64 ]]; then
	# --- boot partition: FAT with boot.scr, which U-Boot's distro boot
	# finds on the first partition of the virtio disk ---
	boot_mib=16 env_mib=1
	mkimage -A arm64 -O linux -T script -C none -n "otgw A/B boot" \
		-d "$here/boot-qemu-arm64.cmd" "$work/boot.scr" >/dev/null
	bootfs=$work/boot.vfat
	truncate -s $((boot_mib * mib)) "$bootfs"
	mkfs.vfat -n OTGW-BOOT "$bootfs" >/dev/null
	mcopy -i "$bootfs" "$work/boot.scr" ::/boot.scr
	mcopy -i "$bootfs" "$here/boot-qemu-arm64.cmd" ::/boot.cmd
	# --- U-Boot environment: otgw fw provision writes the boot state of
	# slot A through an fw_env.config naming the file that stands for the
	# otgw-env partition (same offsets as the image's /etc/fw_env.config) ---
	dd=$work/data
	mkdir -p "$dd"/{spool,trust}
	envpart=$work/env.part slot_part=$work/slot-a.part
	truncate -s $((env_mib * mib)) "$envpart"
	truncate -s $((slot_mib * mib)) "$slot_part" "$work/slot-b.part"
	sed -n 's|^/dev/disk/by-partlabel/otgw-env |'"$envpart"' |p' "$here/fw_env.config" >"$work/fw_env.config"
	grep -q -- '-env' <<<"$("$tool" fw provision -h 2>&1 || true)" || die "$tool has no fw provision --env (U-Boot slot driver)"
	"$tool" fw provision --board "$board" --state "$dd" --slot-a "$slot_part" --slot-b "$work/slot-b.part" \
		--env "$work/fw_env.config" --version "$version" --svn "${IMAGE_SVN:-1}" "$slot" >/dev/null
	rm -f "$dd/lock"
	say "boot state provisioned by otgw fw provision (slot A = $version, svn ${IMAGE_SVN:-1})"
	data=$work/data.ext4
	install -m 0644 "$here/factory-policy.yaml" "$dd/policy.yaml"
	mke2fs -q -t ext4 -L otgw-data -E root_owner=0:0 -d "$dd" "$data" "${data_mib}M" >/dev/null
	rm -f "$out.tmp"
	total_mib=$((1 + boot_mib + 2 * slot_mib + data_mib + env_mib + 1))
	truncate -s $((total_mib * mib)) "$out.tmp"
	sfdisk -q --label gpt "$out.tmp" <<EOF
start=1MiB, size=${boot_mib}MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=otgw-boot
size=${slot_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=otgw-a
size=${slot_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=otgw-b
size=${data_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=otgw-data
size=${env_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=otgw-env
EOF
	place() { dd if="$1" of="$out.tmp" bs=1M seek="$2" conv=notrunc,sparse status=none; }
	place "$bootfs" 1
	place "$slot_part" $((1 + boot_mib))
	place "$data" $((1 + boot_mib + 2 * slot_mib))
	place "$envpart" $((1 + boot_mib + 2 * slot_mib + data_mib))
	mv "$out.tmp" "$out"
	rm -rf "$work"
	say "wrote $out ($total_mib MiB: boot ${boot_mib} MiB, slots A/B ${slot_mib} MiB each, data ${data_mib} MiB, env ${env_mib} MiB; slot B empty)"
	exit 0
fi

# --- ESP: GRUB (standalone EFI image), grub.cfg, grubenv and its backup ---
esp=$work/esp.vfat
grub-mkimage -O x86_64-efi -d "$grubmods" -p /grub -o "$work/BOOTX64.EFI" \
	part_gpt fat squash4 normal linux loadenv test regexp echo configfile \
	reboot halt sleep true efi_gop all_video gzio
truncate -s $((esp_mib * mib)) "$esp"
mkfs.vfat -F 32 -s 1 -n OTGW-ESP "$esp" >/dev/null
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/grub
mcopy -i "$esp" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$esp" "$here/grub.cfg" ::/grub/grub.cfg
# grubenv (and its .bak copy, the updater's redundancy; update/BOOT.md):
# the committed slot is A, no trial. GRUB rewrites the file in place
# (save_env), so it is exactly 1024 bytes. An otgw with the GRUB slot
# driver writes it itself (`otgw fw provision` on files standing for the
# partitions), with the boot state of slot A (version, SVN, hash); the
# data partition then gets the state directory it made.
env=$work/grubenv
dd=$work/data
mkdir -p "$dd"/{spool,trust}
slot_part=$work/slot-a.part
{
	printf '# GRUB Environment Block\n# WARNING: Do not edit this file by tools other than grub-editenv!!!\n'
	printf 'saved_entry=slot-A\n'
} >"$env"
pad=$((1024 - $(stat -c %s "$env")))
head -c "$pad" /dev/zero | tr '\0' '#' >>"$env"
cp "$env" "$env.bak"
provision_help=$("$bin" fw provision -h 2>&1 || true)
if grep -q -- '-env' <<<"$provision_help"; then
	truncate -s $((slot_mib * mib)) "$slot_part" "$work/slot-b.part"
	"$bin" fw provision --board "$board" --state "$dd" --slot-a "$slot_part" --slot-b "$work/slot-b.part" \
		--env "$env" --version "$version" --svn "${IMAGE_SVN:-1}" "$slot" >/dev/null
	rm -f "$dd/lock"
	say "boot state provisioned by otgw fw provision (slot A = $version, svn ${IMAGE_SVN:-1})"
else
	cp "$slot" "$slot_part"
	say "this otgw has no GRUB slot driver: grubenv holds saved_entry=slot-A only"
fi
mcopy -i "$esp" "$env" ::/grub/grubenv
mcopy -i "$esp" "$env.bak" ::/grub/grubenv.bak

# --- data partition: ext4 with the policy, spool and state directories ---
data=$work/data.ext4
install -m 0644 "$here/factory-policy.yaml" "$dd/policy.yaml"
mke2fs -q -t ext4 -L otgw-data -E root_owner=0:0 -d "$dd" "$data" "${data_mib}M" >/dev/null

# --- the disk: GPT, four partitions, file systems placed with dd ---
rm -f "$out.tmp"
total_mib=$((1 + esp_mib + 2 * slot_mib + data_mib + 1))
truncate -s $((total_mib * mib)) "$out.tmp"
sfdisk -q --label gpt "$out.tmp" <<EOF
start=1MiB, size=${esp_mib}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=otgw-esp
size=${slot_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=otgw-a
size=${slot_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=otgw-b
size=${data_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=otgw-data
EOF
place() { dd if="$1" of="$out.tmp" bs=1M seek="$2" conv=notrunc,sparse status=none; }
place "$esp" 1
place "$slot_part" $((1 + esp_mib))
place "$data" $((1 + esp_mib + 2 * slot_mib))
mv "$out.tmp" "$out"
rm -rf "$work"
say "wrote $out ($total_mib MiB: ESP ${esp_mib} MiB, slots A/B ${slot_mib} MiB each, data ${data_mib} MiB; slot B empty)"
