package envelope

import (
	"context"
	"testing"

	"github.com/verbund/verbund/keys"
)

func BenchmarkSeal(b *testing.B) {
	f := newFixture(b)
	c := f.claims()
	enc := pub(f.bEnc)
	ctx := context.Background()
	for b.Loop() {
		if _, err := Seal(ctx, c, f.aSig, enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	f := newFixture(b)
	tok := f.seal(b, f.claims())
	b.SetBytes(int64(len(tok)))
	for b.Loop() {
		if _, err := f.open(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignReceipt(b *testing.B) {
	f := newFixture(b)
	o, err := f.open(f.seal(b, f.claims()))
	if err != nil {
		b.Fatal(err)
	}
	r := NewReceipt(o, fixedNow)
	for b.Loop() {
		if _, err := SignReceipt(r, f.bSig); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyReceipt(b *testing.B) {
	f := newFixture(b)
	o, err := f.open(f.seal(b, f.claims()))
	if err != nil {
		b.Fatal(err)
	}
	r, err := SignReceipt(NewReceipt(o, fixedNow), f.bSig)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		if _, err := VerifyReceipt(ctx, r, f.resolver, orgB, o.Digest, keys.Now(fixedNow)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenRejectTampered measures a rejection that gets as far as
// decryption.
func BenchmarkOpenRejectTampered(b *testing.B) {
	f := newFixture(b)
	tok := mutatePart(b, f.seal(b, f.claims()), 4, flipLast)
	for b.Loop() {
		if _, err := f.open(tok); err == nil {
			b.Fatal("accepted")
		}
	}
}
