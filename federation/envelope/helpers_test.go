package envelope

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/keys"
)

// fixedNow is the clock of all tests, so that committed fuzz seeds stay
// valid.
var fixedNow = time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)

const (
	orgA = "org-a" // sender of handovers
	orgB = "org-b" // receiver
	orgC = "org-c" // some other organisation
)

// resolverKey is one published signing key of the test registry.
type resolverKey struct {
	org         string
	pub         jose.JSONWebKey
	from, until time.Time // valid in [from, until); until zero: no end
	revoked     bool
}

// testResolver is an in-memory KeyResolver. It deliberately returns the key
// together with ErrRevokedKey, ErrKeyNotOwned and ErrKeyInactive, like a
// careless registry might: callers must never use a key that came with an
// error.
type testResolver struct {
	sig map[string]resolverKey
	enc map[string]jose.JSONWebKey
}

func (r *testResolver) VerificationKey(_ context.Context, org, kid string, m keys.Moment) (jose.JSONWebKey, error) {
	at := m.Time()
	k, ok := r.sig[kid]
	if !ok {
		return jose.JSONWebKey{}, fmt.Errorf("kid %q: %w", kid, ErrUnknownKey)
	}
	if k.revoked {
		return k.pub, fmt.Errorf("kid %q: %w", kid, ErrRevokedKey)
	}
	if k.org != org {
		return k.pub, fmt.Errorf("kid %q: %w", kid, ErrKeyNotOwned)
	}
	if at.Before(k.from) || (!k.until.IsZero() && !at.Before(k.until)) {
		return k.pub, fmt.Errorf("kid %q at %s: %w", kid, at, ErrKeyInactive)
	}
	return k.pub, nil
}

func (r *testResolver) EncryptionKey(_ context.Context, org string) (jose.JSONWebKey, error) {
	k, ok := r.enc[org]
	if !ok {
		return jose.JSONWebKey{}, fmt.Errorf("org %q: %w", org, ErrUnknownKey)
	}
	return k, nil
}

type fixture struct {
	aSig, aSigOld, aSigRevoked, bSig, bSigOld, cSig jose.JSONWebKey
	aEnc, bEnc, bEncOld, cEnc                       jose.JSONWebKey
	resolver                                        *testResolver
}

func seed(label string) []byte {
	s := sha256.Sum256([]byte("verbund envelope test key " + label))
	return s[:]
}

func encKey(t testing.TB, kid string) jose.JSONWebKey {
	t.Helper()
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), seed(kid))
	if err != nil {
		t.Fatal(err)
	}
	return jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: string(keys.KeyEncryptionAlg), Use: keys.UseEnc}
}

func pub(k jose.JSONWebKey) jose.JSONWebKey { return k.Public() }

// newFixture builds deterministic keys (so committed fuzz seeds decrypt)
// and a registry:
//   - org-a: org-a-sig-1 current, org-a-sig-0 retired (grace ended a month
//     ago), org-a-sig-r revoked;
//   - org-b: org-b-sig-1 current since two days, org-b-sig-0 retired with
//     its grace period ended yesterday; encryption keys org-b-enc-1 (current)
//     and org-b-enc-0 (retiring, still held for decryption);
//   - org-c: org-c-sig-1.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{
		aSig:        keys.SigningFromSeed("org-a-sig-1", seed("a1")),
		aSigOld:     keys.SigningFromSeed("org-a-sig-0", seed("a0")),
		aSigRevoked: keys.SigningFromSeed("org-a-sig-r", seed("ar")),
		bSig:        keys.SigningFromSeed("org-b-sig-1", seed("b1")),
		bSigOld:     keys.SigningFromSeed("org-b-sig-0", seed("b0")),
		cSig:        keys.SigningFromSeed("org-c-sig-1", seed("c1")),
		aEnc:        encKey(t, "org-a-enc-1"),
		bEnc:        encKey(t, "org-b-enc-1"),
		bEncOld:     encKey(t, "org-b-enc-0"),
		cEnc:        encKey(t, "org-c-enc-1"),
	}
	year := 365 * 24 * time.Hour
	day := 24 * time.Hour
	f.resolver = &testResolver{
		sig: map[string]resolverKey{
			"org-a-sig-1": {org: orgA, pub: pub(f.aSig), from: fixedNow.Add(-year)},
			"org-a-sig-0": {org: orgA, pub: pub(f.aSigOld), from: fixedNow.Add(-2 * year), until: fixedNow.Add(-30 * day)},
			"org-a-sig-r": {org: orgA, pub: pub(f.aSigRevoked), from: fixedNow.Add(-year), revoked: true},
			"org-b-sig-1": {org: orgB, pub: pub(f.bSig), from: fixedNow.Add(-2 * day)},
			"org-b-sig-0": {org: orgB, pub: pub(f.bSigOld), from: fixedNow.Add(-year), until: fixedNow.Add(-day)},
			"org-c-sig-1": {org: orgC, pub: pub(f.cSig), from: fixedNow.Add(-year)},
		},
		enc: map[string]jose.JSONWebKey{orgA: pub(f.aEnc), orgB: pub(f.bEnc), orgC: pub(f.cEnc)},
	}
	return f
}

// bDecKeys are org-b's decryption keys: current and retiring.
func (f *fixture) bDecKeys() []jose.JSONWebKey { return []jose.JSONWebKey{f.bEnc, f.bEncOld} }

func (f *fixture) claims() Claims {
	return Claims{
		ID:           "6f1c2d9e-0b7a-4c1e-9a55-3c2f0e1d4b7a",
		Issuer:       orgA,
		Audience:     orgB,
		IssuedAt:     fixedNow.Add(-time.Minute),
		Expiry:       fixedNow.Add(24 * time.Hour),
		CaseID:       "A-2026-000123",
		TrackingCode: "VB-7Q4K-2M9X",
		ServiceKey:   "99123456789012",
		Reason:       "change of residence",
		Data:         json.RawMessage(`{"applicant":{"name":"Erika Mustermann","born":"1964-08-12"},"fields":{"street":"Hauptstr. 1"}}`),
		Attachments:  []Attachment{NewAttachment("antrag.pdf", "application/pdf", []byte("%PDF-1.7 test"))},
		Previous: []Hop{{HandoverID: "0d9f6b1e-8c2a-4f3b-a1d2-5e6f7a8b9c0d", From: orgC, To: orgA,
			At: fixedNow.Add(-48 * time.Hour)}},
	}
}

func (f *fixture) seal(t testing.TB, c Claims) string {
	t.Helper()
	tok, err := Seal(context.Background(), c, f.aSig, pub(f.bEnc))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return tok
}

func (f *fixture) open(token string) (*Opened, error) {
	return Open(context.Background(), token, f.bDecKeys(), f.resolver, orgB, fixedNow)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// claimsJSON is the payload Seal would sign for c.
func claimsJSON(t testing.TB, c Claims) []byte { return mustJSON(t, c.wire()) }

// signRaw builds a compact JWS with an arbitrary protected header and
// signature function (nil: empty signature).
func signRaw(t testing.TB, header map[string]any, payload []byte, sign func(input []byte) []byte) string {
	t.Helper()
	input := b64(mustJSON(t, header)) + "." + b64(payload)
	var sig []byte
	if sign != nil {
		sig = sign([]byte(input))
	}
	return input + "." + b64(sig)
}

func edSign(k jose.JSONWebKey) func([]byte) []byte {
	priv := k.Key.(ed25519.PrivateKey)
	return func(in []byte) []byte { return ed25519.Sign(priv, in) }
}

// jwsHeader is the legitimate inner header for kid.
func jwsHeader(kid, typ string) map[string]any {
	return map[string]any{"alg": "EdDSA", "kid": kid, "typ": typ}
}

// jweOpts describes how wrapJWE encrypts; zero values give a legitimate
// handover JWE to org-b's current key.
type jweOpts struct {
	alg   jose.KeyAlgorithm
	enc   jose.ContentEncryption
	key   any
	kid   string
	typ   string
	cty   string
	zip   bool
	extra map[jose.HeaderKey]any
}

func (f *fixture) wrapJWE(t testing.TB, plaintext string, o jweOpts) string {
	t.Helper()
	if o.alg == "" {
		o.alg = keys.KeyEncryptionAlg
	}
	if o.enc == "" {
		o.enc = keys.ContentEncryption
	}
	if o.key == nil {
		o.key = &f.bEnc.Key.(*ecdsa.PrivateKey).PublicKey
		o.kid = f.bEnc.KeyID
	}
	if o.typ == "" {
		o.typ = TypeHandoverJWE
	}
	if o.cty == "" {
		o.cty = TypeHandoverJWS
	}
	opts := (&jose.EncrypterOptions{ExtraHeaders: o.extra}).WithType(jose.ContentType(o.typ)).WithContentType(jose.ContentType(o.cty))
	if o.zip {
		opts.Compression = jose.DEFLATE
	}
	enc, err := jose.NewEncrypter(o.enc, jose.Recipient{Algorithm: o.alg, Key: o.key, KeyID: o.kid}, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := enc.Encrypt([]byte(plaintext))
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// legitJWS is the inner JWS org-a would produce for c.
func (f *fixture) legitJWS(t testing.TB, c Claims) string {
	t.Helper()
	return signRaw(t, jwsHeader(f.aSig.KeyID, TypeHandoverJWS), claimsJSON(t, c), edSign(f.aSig))
}

// mutatePart decodes part i of a compact token, applies fn and re-encodes.
func mutatePart(t testing.TB, token string, i int, fn func([]byte) []byte) string {
	t.Helper()
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	parts[i] = b64(fn(raw))
	return strings.Join(parts, ".")
}

func flipFirst(b []byte) []byte { b[0] ^= 1; return b }
func flipLast(b []byte) []byte  { b[len(b)-1] ^= 1; return b }

// mutateHeader decodes the protected header of token into a map, applies
// fn and re-encodes it (which breaks the JWE's AAD, so only use it for
// checks that come before decryption).
func mutateHeader(t testing.TB, token string, fn func(map[string]any)) string {
	t.Helper()
	return mutatePart(t, token, 0, func(raw []byte) []byte {
		var h map[string]any
		if err := json.Unmarshal(raw, &h); err != nil {
			t.Fatal(err)
		}
		fn(h)
		return mustJSON(t, h)
	})
}
