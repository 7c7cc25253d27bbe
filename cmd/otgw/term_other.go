//go:build !linux

package main

import "io"

// isTerminal is false off Linux: no progress bar.
func isTerminal(io.Writer) bool { return false }
