# otgw A/B boot for qemu-arm64 (board/image/boot-qemu-arm64.cmd; mkimage
# -T script makes /boot.scr of the otgw-boot partition, which the U-Boot
# distro boot runs). See board/image/README.md, "Boot (qemu-arm64)".
#
# The boot state is the U-Boot environment on the raw partition otgw-env:
# two redundant copies of 0x8000 bytes at 0 and 0x8000 (the image
# /etc/fw_env.config), each a CRC-32, a flags byte and name=value pairs,
# as fw_setenv writes them. The qemu_arm64 U-Boot of Debian keeps its own
# environment in the second flash bank of the virt board, which is not part of
# the disk and has neither a redundant copy nor CONFIG_BOOTCOUNT_LIMIT, so
# this script does what those would do:
#   - load the newer valid copy (the higher flags byte, 0 after 0xff);
#   - bootcount: with upgrade_available=1 count this boot and save;
#   - bootcount > bootlimit (bootlimit not 0): run altbootcmd, which the
#     slot driver writes (it switches boot_slot back to the committed slot
#     and ends the trial), with bootcmd standing in for "continue here";
#   - save: env export -c into the other copy with flags+1;
#   - boot boot_slot: the kernel and initramfs follow the squashfs of the slot.
# Script variables are hush locals, so they are not saved in the
# environment.

echo "otgw: U-Boot boot script"
if test -z "${devnum}"; then
	devnum=0
fi

# --- the environment: read both copies, import the newer valid one ---
part start virtio ${devnum} otgw-env ob_e0
e0=${ob_e0}
setenv ob_e0
setexpr ob_x ${e0} + 0x40
e1=${ob_x}
virtio read 0x4f000000 ${e0} 0x40
virtio read 0x4f010000 ${e1} 0x40
setexpr.b ob_x *0x4f000004
f0=${ob_x}
setexpr.b ob_x *0x4f010004
f1=${ob_x}
first=0
if itest ${f1} == 0 && itest ${f0} == 0xff; then
	first=1
elif itest ${f0} == 0 && itest ${f1} == 0xff; then
	first=0
elif itest ${f1} > ${f0}; then
	first=1
fi
# env import -c wants the CRC right before the data: move it over the
# flags byte (through a scratch buffer: cp.b copies upwards).
cp.b 0x4f000000 0x4f020000 4
cp.b 0x4f020000 0x4f000001 4
cp.b 0x4f010000 0x4f020000 4
cp.b 0x4f020000 0x4f010001 4
active=none
if test ${first} = 1; then
	if env import -c 0x4f010001 0x7fff; then
		active=1
	elif env import -c 0x4f000001 0x7fff; then
		active=0
	fi
else
	if env import -c 0x4f000001 0x7fff; then
		active=0
	elif env import -c 0x4f010001 0x7fff; then
		active=1
	fi
fi
setenv ob_x
if test ${active} = none; then
	echo "otgw: no valid environment on otgw-env: booting slot A"
	setenv boot_slot A
else
	echo "otgw: environment copy ${active} (flags ${f0}/${f1})"
fi

# --- boot counting (CONFIG_BOOTCOUNT_LIMIT with CONFIG_BOOTCOUNT_ENV) ---
save=0
failed=
if test "${upgrade_available}" = 1; then
	if test -z "${bootcount}"; then
		setenv bootcount 0
	fi
	n=x
	if test ${bootcount} = 0; then
		n=1
	elif test ${bootcount} = 1; then
		n=2
	elif test ${bootcount} = 2; then
		n=3
	elif test ${bootcount} = 3; then
		n=4
	elif test ${bootcount} = 4; then
		n=5
	elif test ${bootcount} = 5; then
		n=6
	elif test ${bootcount} = 6; then
		n=7
	elif test ${bootcount} = 7; then
		n=8
	elif test ${bootcount} = 8; then
		n=9
	elif test ${bootcount} = 9; then
		n=10
	fi
	if test ${n} = x; then
		# Beyond what this script counts (bootlimit up to 9): over.
		echo "otgw: bootcount ${bootcount} out of range: the trial is over"
		setenv bootlimit 1
		n=99
	fi
	setenv bootcount ${n}
	save=1
	# Decimal digits compare as hex numbers in the same order.
	if test -n "${bootlimit}" && itest ${bootlimit} != 0 && itest ${bootcount} > ${bootlimit}; then
		echo "otgw: bootcount ${bootcount} > bootlimit ${bootlimit}: running altbootcmd"
		failed=slot-${boot_slot}
		obbootcmd=${bootcmd}
		setenv bootcmd true
		run altbootcmd
		setenv bootcmd ${obbootcmd}
	fi
fi

# --- save (into the other copy, flags + 1) ---
if test ${save} = 1; then
	if test ${active} = 0; then
		tgt=${e1}
		setexpr ob_x ${f0} + 1
	elif test ${active} = 1; then
		tgt=${e0}
		setexpr ob_x ${f1} + 1
	else
		tgt=${e0}
		setenv ob_x 1
	fi
	setexpr ob_x ${ob_x} % 0x100
	nf=${ob_x}
	setenv ob_x
	# env export clears a whole CONFIG_ENV_SIZE (0x40000) at the address
	# and reports that as filesize, so the length used is not known here:
	# the variables (about 6 KiB) must stay below the 0x7ffb of a copy.
	env export -c -s 0x7fff 0x4f100001
	cp.b 0x4f100001 0x4f020000 4
	cp.b 0x4f020000 0x4f100000 4
	mw.b 0x4f100004 ${nf}
	if virtio write 0x4f100000 ${tgt} 0x40; then
		echo "otgw: environment saved (bootcount=${bootcount} flags ${nf})"
	else
		echo "otgw: saving the environment failed"
	fi
fi

# --- boot boot_slot ---
if test "${boot_slot}" = B; then
	slotpart=otgw-b
else
	setenv boot_slot A
	slotpart=otgw-a
fi
trial=0
tries=
if test "${upgrade_available}" = 1; then
	trial=1
	setexpr ob_x ${bootlimit} - ${bootcount}
	tries=${ob_x}
	setenv ob_x
fi
echo "otgw: booting slot-${boot_slot} (trial=${trial} tries_left=${tries} failed_trial=${failed})"
part start virtio ${devnum} ${slotpart} ob_x
s=${ob_x}
virtio read 0x50000000 ${s} 1
# squashfs bytes_used (superblock offset 0x28), rounded up to 4 KiB, in
# 512-byte blocks: where the boot uImage starts.
setexpr.l ob_x *0x50000028
setexpr ob_x ${ob_x} + 0xfff
setexpr ob_x ${ob_x} / 0x1000
setexpr ob_x ${ob_x} * 8
setexpr ob_x ${ob_x} + ${s}
ublk=${ob_x}
virtio read 0x50000000 ${ublk} 1
# Its length: the 64-byte header and ih_size (big endian, offset 12).
setexpr.b ob_x *0x5000000c
setexpr ob_y ${ob_x} * 0x1000000
setexpr.b ob_x *0x5000000d
setexpr ob_x ${ob_x} * 0x10000
setexpr ob_y ${ob_y} + ${ob_x}
setexpr.b ob_x *0x5000000e
setexpr ob_x ${ob_x} * 0x100
setexpr ob_y ${ob_y} + ${ob_x}
setexpr.b ob_x *0x5000000f
setexpr ob_y ${ob_y} + ${ob_x}
setexpr ob_y ${ob_y} + 0x23f
setexpr ob_y ${ob_y} / 0x200
ucnt=${ob_y}
setenv ob_x
setenv ob_y
virtio read 0x50000000 ${ublk} ${ucnt}
imxtract 0x50000000 0 ${kernel_addr_r}
setenv kernel_comp_addr_r 0x48000000
setenv kernel_comp_size ${filesize}
imxtract 0x50000000 1 ${ramdisk_addr_r}
rdsize=${filesize}
setenv bootargs "root=PARTLABEL=${slotpart} otgw.slot=${boot_slot} otgw.trial=${trial} otgw.tries=${tries} otgw.failed=${failed} console=ttyAMA0,115200 net.ifnames=0 panic=5 quiet"
booti ${kernel_addr_r} ${ramdisk_addr_r}:${rdsize} ${fdtcontroladdr}
echo "otgw: booting slot-${boot_slot} failed: resetting"
sleep 5
reset
