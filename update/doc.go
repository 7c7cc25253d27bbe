// Package update owns otgw's signed firmware updates: the bundle format, the
// trust root (Ed25519 keys with an m-of-n threshold, rotated by chained root
// versions), a verifier state machine that refuses steps out of order, an A/B
// slot installer with boot counting, anti-rollback by a security version
// number (SVN) that advances only after commit, and health-check commit or
// automatic rollback.
//
// The design follows the threat model of The Update Framework (TUF
// specification, section 1.5.2 "attacks"; section 5.3 "update the root role"
// for rotation) and of Uptane (IEEE-ISTO 6100, section 5.4.3.4 "verify
// image"), reduced to a single signed manifest per bundle, in front of a
// RAUC-like A/B installer. Signatures are Ed25519 (RFC 8032) from the
// standard library; hashes are SHA-256 (FIPS 180-4). The byte formats are
// specified in FORMAT.md, and the boot state and its mapping to U-Boot and
// GRUB environments in BOOT.md, both beside this file.
//
// Flow of one update:
//
//	Verifier.ReadHeader  manifest: size cap, canonical form, signatures,
//	                     threshold, expiry, board, arch, SVN/version rollback.
//	                     Nothing has been written yet.
//	Verifier.Payload     streams exactly Manifest.Size bytes to the inactive
//	                     slot, hashing the bytes it writes; trailing data is
//	                     oversize, short data is truncation.
//	Installer            marks the slot "pending" (bootable on trial) only
//	                     after the hash matched and the slot read back equal.
//	Boot (bootloader)    counts tries down; an exhausted counter boots the
//	                     other slot.
//	Installer.Commit     runs the HealthCheck; on success the slot becomes
//	                     primary and the SVN counter advances; on failure the
//	                     slot is marked bad and the next boot falls back.
//
// Every step is an Event (Step one of "started", "rejected", "installed",
// "committed", "rolled_back", "root_rotated", "refreshed", "stale",
// "anchor_repaired") passed to Config.Events; the gateway adapts it to its
// event pipeline (gateway/daemon.UpdateEvents), so this package imports no
// exporter.
//
// Errors are sentinels (ErrSignature, ErrThreshold, ErrRollback, ...) to be
// matched with errors.Is; Reason maps an error to the short reason token
// carried in events.
package update
