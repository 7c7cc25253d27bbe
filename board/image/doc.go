// Package image holds the recipe of otgw's bootable firmware images
// (mkimage.sh, grub.cfg, the two init scripts, README.md) and their QEMU
// test. It has no Go API: the test in this directory boots the image that
// `make image BOARD=x86-generic` wrote in qemu-system-x86_64 (TCG, OVMF)
// between two network namespaces and runs a real Modbus client and server
// through it. It runs only with OTGW_TEST_IMAGE=1 (`make test-image`).
package image
