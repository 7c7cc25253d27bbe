package update_test

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/otgw/otgw/update"
	"github.com/otgw/otgw/update/updatetest"
)

// FuzzGRUBEnv: DecodeGRUBEnv never panics, errors are ErrMalformed, and a
// decoded environment re-encodes to a block that decodes to the same
// variables. Seeds: an empty block, one with variables, an escaped value.
func FuzzGRUBEnv(f *testing.F) {
	for _, vars := range []map[string]string{{}, {"saved_entry": "slot-A", "boot_tries": "3"}, {"v": "a\\b\nc"}} {
		b, err := update.EncodeGRUBEnv(vars)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		vars, err := update.DecodeGRUBEnv(b)
		if err != nil {
			if vars != nil || !errors.Is(err, update.ErrMalformed) {
				t.Fatalf("err %v with vars %v", err, vars)
			}
			return
		}
		re, err := update.EncodeGRUBEnv(vars)
		if err != nil {
			return // e.g. names with '\\' that GRUB accepts but we never write
		}
		again, err := update.DecodeGRUBEnv(re)
		if err != nil || !reflect.DeepEqual(again, vars) {
			t.Fatalf("round trip: %v, %v != %v", err, again, vars)
		}
	})
}

// FuzzUBootEnv: DecodeUBootEnv never panics and a decoded environment
// round-trips. Seeds: single and redundant images.
func FuzzUBootEnv(f *testing.F) {
	for _, red := range []bool{false, true} {
		b, err := update.EncodeUBootEnv(map[string]string{"bootcmd": "run x", "bootcount": "1"}, 256, red, 7)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, red)
	}
	f.Fuzz(func(t *testing.T, b []byte, red bool) {
		vars, flags, err := update.DecodeUBootEnv(b, red)
		if err != nil {
			if !errors.Is(err, update.ErrMalformed) {
				t.Fatal(err)
			}
			return
		}
		re, err := update.EncodeUBootEnv(vars, int64(len(b)), red, flags)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, _, err := update.DecodeUBootEnv(re, red)
		if err != nil || !reflect.DeepEqual(again, vars) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzTimestamp: ParseTimestamp never panics; an accepted statement
// re-signs (with no signatures) to the same signed bytes.
func FuzzTimestamp(f *testing.F) {
	b, _ := update.SignTimestamp(&update.Timestamp{Version: 1, Board: "sim", Latest: "1.0.0", SVN: 1, Expires: updatetest.Epoch})
	f.Add(b)
	f.Add([]byte(`{"signed":{},"signatures":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := update.ParseTimestamp(b)
		if err != nil {
			if ts != nil {
				t.Fatal("error with a statement")
			}
			return
		}
		re, err := update.SignTimestamp(ts)
		if err != nil {
			t.Fatalf("accepted statement does not re-encode: %v", err)
		}
		if !bytes.Contains(b, re[len(`{"signed":`):bytes.Index(re, []byte(`,"signatures"`))]) {
			t.Fatalf("re-encoding differs from the accepted input")
		}
	})
}
