package envelope

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/verbund/verbund/keys"
)

// fuzzSeeds returns real envelopes and receipts for the fixture keys.
func fuzzSeeds(t testing.TB, f *fixture) (envelopes, receipts []string, digest [32]byte) {
	t.Helper()
	minimal := f.claims()
	minimal.TrackingCode, minimal.Reason, minimal.Data, minimal.Attachments, minimal.Previous = "", "", nil, nil, nil
	envelopes = []string{f.seal(t, f.claims()), f.seal(t, minimal)}
	o, err := f.open(envelopes[0])
	if err != nil {
		t.Fatal(err)
	}
	digest = o.Digest
	r, err := SignReceipt(NewReceipt(o, fixedNow), f.bSig)
	if err != nil {
		t.Fatal(err)
	}
	old, err := SignReceipt(NewReceipt(o, fixedNow.Add(-72*time.Hour)), f.bSigOld)
	if err != nil {
		t.Fatal(err)
	}
	return envelopes, []string{r, old}, digest
}

// FuzzOpen feeds arbitrary tokens to Open. Nothing may panic, and whatever
// is accepted must be a valid, independently verifiable envelope.
func FuzzOpen(f *testing.F) {
	fx := newFixture(f)
	envelopes, _, _ := fuzzSeeds(f, fx)
	for _, e := range envelopes {
		f.Add(e)
		f.Add(e[:len(e)/2])
		f.Add(strings.Replace(e, ".", "..", 1))
	}
	f.Add("")
	f.Add(strings.Repeat(".", 1000))
	bPub := fx.resolver.sig
	f.Fuzz(func(t *testing.T, token string) {
		o, err := fx.open(token)
		if err != nil {
			if o != nil {
				t.Fatal("result together with an error")
			}
			return
		}
		// Accepted: it must really be a valid envelope for org-b.
		if o.Digest != Digest(token) {
			t.Fatal("digest is not over the token")
		}
		if o.Claims.Audience != orgB {
			t.Fatalf("accepted for audience %q", o.Claims.Audience)
		}
		if err := o.Claims.Validate(); err != nil {
			t.Fatalf("accepted invalid claims: %v", err)
		}
		if err := checkTime(o.Claims.IssuedAt, o.Claims.NotBefore, o.Claims.Expiry, fixedNow); err != nil {
			t.Fatalf("accepted at wrong time: %v", err)
		}
		k, ok := bPub[o.SignerKID]
		if !ok || k.org != o.Claims.Issuer || k.revoked {
			t.Fatalf("accepted signer %q for %q", o.SignerKID, o.Claims.Issuer)
		}
		// Independent verification of the inner JWS with the published key.
		parts := strings.Split(o.SignedJWS, ".")
		if len(parts) != 3 {
			t.Fatal("inner JWS is not compact")
		}
		sig, err1 := base64.RawURLEncoding.DecodeString(parts[2])
		payload, err2 := base64.RawURLEncoding.DecodeString(parts[1])
		if err1 != nil || err2 != nil || !ed25519.Verify(k.pub.Key.(ed25519.PublicKey), []byte(parts[0]+"."+parts[1]), sig) {
			t.Fatal("accepted inner JWS does not verify")
		}
		var w wireClaims
		if err := decodeStrict(payload, &w); err != nil || !reflect.DeepEqual(w.claims(), o.Claims) {
			t.Fatalf("claims are not the signed payload: %v", err)
		}
	})
}

// FuzzVerifyReceipt feeds arbitrary receipts and expected digests to
// VerifyReceipt (the digest is an input because ECDH-ES makes every sealed
// envelope, and so its digest, different). Whatever is accepted must verify
// with a published, unrevoked key of org-b.
func FuzzVerifyReceipt(f *testing.F) {
	fx := newFixture(f)
	_, receipts, digest := fuzzSeeds(f, fx)
	for _, r := range receipts {
		f.Add(r, digest[:])
		f.Add(r[:len(r)-3], digest[:])
	}
	f.Add("", []byte{})
	f.Add(strings.Repeat(".", 1000), digest[:])
	f.Fuzz(func(t *testing.T, token string, d []byte) {
		var want [32]byte
		copy(want[:], d)
		r, err := VerifyReceipt(context.Background(), token, fx.resolver, orgB, want, keys.Now(fixedNow))
		if err != nil {
			if r != nil {
				t.Fatal("result together with an error")
			}
			return
		}
		if r.Issuer != orgB || r.Status != StatusDelivered || r.Digest != hexDigest(want) {
			t.Fatalf("accepted wrong receipt %+v", r)
		}
		parts := strings.Split(token, ".")
		if len(parts) != 3 {
			t.Fatal("receipt is not compact")
		}
		hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
		h, herr := decodeHeader(parts[0], jwsHeaderAllowed)
		if herr != nil {
			t.Fatalf("accepted header %s: %v", hdr, herr)
		}
		kid, _ := h.str("kid")
		k, ok := fx.resolver.sig[kid]
		if !ok || k.org != orgB || k.revoked {
			t.Fatalf("accepted key %q", kid)
		}
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil || !ed25519.Verify(k.pub.Key.(ed25519.PublicKey), []byte(parts[0]+"."+parts[1]), sig) {
			t.Fatal("accepted receipt does not verify")
		}
	})
}

// TestWriteFuzzSeeds regenerates the committed seed corpus under
// testdata/fuzz when VERBUND_WRITE_FUZZ_SEEDS=1. The seeds use the fixed
// test keys and clock, so they stay valid envelopes and receipts.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("VERBUND_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set VERBUND_WRITE_FUZZ_SEEDS=1 to regenerate testdata/fuzz")
	}
	fx := newFixture(t)
	envelopes, receipts, digest := fuzzSeeds(t, fx)
	write := func(target, name string, args ...any) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch v := a.(type) {
			case string:
				fmt.Fprintf(&b, "string(%q)\n", v)
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, e := range envelopes {
		write("FuzzOpen", fmt.Sprintf("envelope-%d", i), e)
	}
	write("FuzzOpen", "tampered-tag", mutatePart(t, envelopes[0], 4, flipLast))
	write("FuzzOpen", "zip", fx.wrapJWE(t, fx.legitJWS(t, fx.claims()), jweOpts{zip: true}))
	for i, r := range receipts {
		write("FuzzVerifyReceipt", fmt.Sprintf("receipt-%d", i), r, digest[:])
	}
	write("FuzzVerifyReceipt", "alg-none", signRaw(t, map[string]any{"alg": "none", "kid": fx.bSig.KeyID, "typ": TypeReceiptJWS}, []byte(`{"iss":"org-b"}`), nil), digest[:])
}

// The committed seeds must stay what they claim to be: valid for the
// fixed keys and clock. receipt-1 is signed with org-b's old key three days
// ago: valid at the moment it was recorded then, refused now (the key rule
// judges the verifier's moment, not the receipt's received_at).
func TestCommittedFuzzSeedsAreValid(t *testing.T) {
	fx := newFixture(t)
	now, recorded := keys.Now(fixedNow), keys.At(1, fixedNow.Add(-72*time.Hour))
	for _, tc := range []struct {
		target, name string
		at           keys.Moment
		accept       bool
	}{
		{"FuzzOpen", "envelope-0", now, true},
		{"FuzzOpen", "envelope-1", now, true},
		{"FuzzOpen", "tampered-tag", now, false},
		{"FuzzOpen", "zip", now, false},
		{"FuzzVerifyReceipt", "receipt-0", now, true},
		{"FuzzVerifyReceipt", "receipt-1", recorded, true},
		{"FuzzVerifyReceipt", "receipt-1", now, false},
		{"FuzzVerifyReceipt", "alg-none", now, false},
	} {
		t.Run(fmt.Sprintf("%s/%s@%d", tc.target, tc.name, tc.at.Index), func(t *testing.T) {
			args := readSeed(t, filepath.Join("testdata", "fuzz", tc.target, tc.name))
			var err error
			if tc.target == "FuzzOpen" {
				_, err = fx.open(args[0].(string))
			} else {
				var d [32]byte
				copy(d[:], args[1].([]byte))
				_, err = VerifyReceipt(context.Background(), args[0].(string), fx.resolver, orgB, d, tc.at)
			}
			if tc.accept && err != nil {
				t.Fatalf("seed no longer valid: %v", err)
			}
			if !tc.accept && err == nil {
				t.Fatal("seed unexpectedly accepted")
			}
		})
	}
}

func readSeed(t *testing.T, path string) []any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 || lines[0] != "go test fuzz v1" {
		t.Fatalf("%s: not a fuzz seed", path)
	}
	var out []any
	for _, l := range lines[1:] {
		var s string
		switch {
		case strings.HasPrefix(l, "string("):
			if _, err := fmt.Sscanf(l[len("string("):len(l)-1], "%q", &s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		case strings.HasPrefix(l, "[]byte("):
			if _, err := fmt.Sscanf(l[len("[]byte("):len(l)-1], "%q", &s); err != nil {
				t.Fatal(err)
			}
			out = append(out, []byte(s))
		default:
			t.Fatalf("%s: unexpected line %q", path, l)
		}
	}
	return out
}
