package daemon

import (
	"slices"
	"strings"
	"testing"

	"github.com/otgw/otgw/board"
	"github.com/otgw/otgw/hal"
	"github.com/otgw/otgw/hal/xdp"
)

// TestAttachOrder: the attach modes openXDP tries, for each XDP mode,
// --xdp-attach value, port I/O and port kind. auto never reaches generic
// mode, tc never serves AF_XDP ports, native is not tried on a veth, and
// a forced mode is the only one tried.
func TestAttachOrder(t *testing.T) {
	const (
		N = xdp.ModeNative
		G = xdp.ModeGeneric
		C = xdp.ModeTC
	)
	for _, c := range []struct {
		mode   board.XDPMode
		attach string
		io     hal.IOMode
		veth   string
		want   []xdp.Mode
		err    string
	}{
		{board.XDPAuto, "", hal.IORing, "", []xdp.Mode{N, C}, ""},
		{board.XDPAuto, "", hal.IORing, "north0", []xdp.Mode{C}, ""},
		{board.XDPAuto, "", hal.IOMmsg, "north0", []xdp.Mode{C}, ""},
		{board.XDPAuto, "", hal.IOXDP, "", []xdp.Mode{N}, ""},
		{board.XDPAuto, "", hal.IOAuto, "north0", nil, ""},
		{board.XDPOn, "", hal.IORing, "", []xdp.Mode{N, C, G}, ""},
		{board.XDPOn, "", hal.IORing, "north0", []xdp.Mode{C, G}, ""},
		{board.XDPOn, "", hal.IOXDP, "", []xdp.Mode{N, G}, ""},
		{board.XDPOn, "", hal.IOXDP, "north0", []xdp.Mode{G}, ""},
		{board.XDPOn, "native", hal.IORing, "north0", []xdp.Mode{N}, ""},
		{board.XDPAuto, "generic", hal.IORing, "", []xdp.Mode{G}, ""},
		{board.XDPOn, "tc", hal.IOMmsg, "", []xdp.Mode{C}, ""},
		{board.XDPOn, "tc", hal.IOXDP, "", nil, "not I/O xdp"},
		{board.XDPAuto, "tc", hal.IOAuto, "", nil, "not I/O auto"},
		{board.XDPOn, "skb", hal.IORing, "", nil, `--xdp-attach "skb"`},
	} {
		got, err := attachOrder(c.mode, c.attach, c.io, c.veth)
		name := strings.Join([]string{string(c.mode), c.attach, string(c.io), c.veth}, "/")
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %v, %v; want an error with %q", name, got, err, c.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, %v; want %v", name, got, err, c.want)
		}
	}
}
