package update_test

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/otgw/otgw/update"
	"github.com/otgw/otgw/update/updatetest"
)

// BenchmarkVerify measures bundle verification: the signed header alone
// (2-of-3 Ed25519) and header plus a 1 MiB payload hash.
func BenchmarkVerify(b *testing.B) {
	e := updatetest.New(b, updatetest.Options{ImageBytes: 1 << 20})
	bundle := e.Bundle(updatetest.Spec{})
	p := update.Policy{Board: "sim", Arch: "amd64", Now: func() time.Time { return updatetest.Epoch }}
	b.Run("header", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := update.NewVerifier(e.Trust, p).ReadHeader(bytes.NewReader(bundle)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("payload-1MiB", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(1 << 20)
		for i := 0; i < b.N; i++ {
			v := update.NewVerifier(e.Trust, p)
			r := bytes.NewReader(bundle)
			if _, err := v.ReadHeader(r); err != nil {
				b.Fatal(err)
			}
			if err := v.Payload(r, io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	})
}
