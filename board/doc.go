// Package board describes the hardware the gateway runs on, as data:
// which NIC is north (supervisory side), south (control side) and
// management, the watchdog device, the LEDs, the bypass relay and the fail
// mode, and the A/B update slots. Profiles are embedded YAML
// (profiles.yaml); Detect picks one from DMI (/sys/class/dmi/id, SMBIOS
// DSP0134 board_name/product_name) or the device tree's root "compatible"
// (/proc/device-tree/compatible, Devicetree Specification v0.4 §3.3: a
// NUL-separated list, most specific first).
//
// Fail mode is closed unless a profile names a bypass relay or asks for
// the kernel-bridge fallback; see hal.Bypass.
package board
