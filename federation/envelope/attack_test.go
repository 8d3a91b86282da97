package envelope

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/keys"
)

// attack is a token that must be rejected with want. msg, if set, must
// appear in the error text: it pins the check that is expected to fire
// first, so that the test fails when that check is removed even where a
// later layer (go-jose, AES-GCM) would still reject the token.
type attack struct {
	name  string
	token string
	want  error
	msg   string
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

func testRSAKey(t testing.TB) *rsa.PrivateKey {
	rsaOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

// joseSign signs payload with go-jose using alg and key, kid and typ set.
func joseSign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid, typ string, payload []byte) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// insertClaim puts raw JSON members right after the opening brace.
func insertClaim(payload []byte, members string) []byte {
	return append([]byte("{"+members+","), payload[1:]...)
}

func nestedObject(depth int) json.RawMessage {
	return json.RawMessage(strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth))
}

func publicJWKMap(t testing.TB, k jose.JSONWebKey) map[string]any {
	t.Helper()
	b, err := k.Public().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func withHeader(h map[string]any, k string, v any) map[string]any {
	h[k] = v
	return h
}

// handoverAttacks builds every attack on Open.
func (f *fixture) handoverAttacks(t testing.TB) []attack {
	t.Helper()
	c := f.claims()
	payload := claimsJSON(t, c)
	legit := f.legitJWS(t, c)
	wrap := func(jws string) string { return f.wrapJWE(t, jws, jweOpts{}) }
	good := f.seal(t, c)
	hdrA := func() map[string]any { return jwsHeader(f.aSig.KeyID, TypeHandoverJWS) }
	attacker := keys.SigningFromSeed(f.aSig.KeyID, seed("attacker"))
	aPub := []byte(f.aSig.Key.(ed25519.PrivateKey).Public().(ed25519.PublicKey))
	signedBy := func(k jose.JSONWebKey, cl Claims) string {
		return wrap(signRaw(t, jwsHeader(k.KeyID, TypeHandoverJWS), claimsJSON(t, cl), edSign(k)))
	}
	legitWith := func(mod func(*Claims)) string {
		cl := f.claims()
		mod(&cl)
		return wrap(f.legitJWS(t, cl))
	}
	legitPayload := func(p []byte) string { return wrap(signRaw(t, hdrA(), p, edSign(f.aSig))) }
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	parts := strings.Split(good, ".")
	event := f.sealEvent(t, f.event(EventAccept), f.aSig, f.bEnc)

	return []attack{
		// Signatures.
		{name: "forged signature: attacker key under org-a's kid", token: signedBy(attacker, c), want: ErrSignature},
		{name: "forged signature: signature bytes altered", token: wrap(mutatePart(t, legit, 2, flipFirst)), want: ErrSignature},
		{name: "alg none", token: wrap(signRaw(t, withHeader(hdrA(), "alg", "none"), payload, nil)), want: ErrAlgorithm, msg: `JWS alg "none"`},
		{name: "alg HS256 key confusion: public key as HMAC secret", token: wrap(signRaw(t, withHeader(hdrA(), "alg", "HS256"), payload, func(in []byte) []byte {
			m := hmac.New(sha256.New, aPub)
			m.Write(in)
			return m.Sum(nil)
		})), want: ErrAlgorithm, msg: `JWS alg "HS256"`},
		{name: "alg RS256", token: wrap(joseSign(t, jose.RS256, testRSAKey(t), f.aSig.KeyID, TypeHandoverJWS, payload)), want: ErrAlgorithm, msg: `JWS alg "RS256"`},
		{name: "alg ES256", token: wrap(joseSign(t, jose.ES256, ecKey, f.aSig.KeyID, TypeHandoverJWS, payload)), want: ErrAlgorithm, msg: `JWS alg "ES256"`},

		// Encryption algorithms.
		{name: "JWE alg RSA-OAEP", token: f.wrapJWE(t, legit, jweOpts{alg: jose.RSA_OAEP, key: &testRSAKey(t).PublicKey, kid: f.bEnc.KeyID}), want: ErrAlgorithm, msg: `JWE alg "RSA-OAEP"`},
		{name: "JWE alg dir", token: f.wrapJWE(t, legit, jweOpts{alg: jose.DIRECT, key: make([]byte, 32), kid: f.bEnc.KeyID}), want: ErrAlgorithm, msg: `JWE alg "dir"`},
		{name: "JWE alg A128KW", token: f.wrapJWE(t, legit, jweOpts{alg: jose.A128KW, key: make([]byte, 16), kid: f.bEnc.KeyID}), want: ErrAlgorithm, msg: `JWE alg "A128KW"`},
		{name: "JWE alg ECDH-ES direct key agreement", token: f.wrapJWE(t, legit, jweOpts{alg: jose.ECDH_ES, key: &f.bEnc.Key.(*ecdsa.PrivateKey).PublicKey, kid: f.bEnc.KeyID}), want: ErrAlgorithm, msg: `JWE alg "ECDH-ES"`},
		{name: "JWE enc A128GCM", token: f.wrapJWE(t, legit, jweOpts{enc: jose.A128GCM}), want: ErrAlgorithm, msg: `JWE enc "A128GCM"`},
		{name: "JWE compressed zip DEF", token: f.wrapJWE(t, legit, jweOpts{zip: true}), want: ErrCompressed},

		// Key lookup.
		{name: "unknown signing kid", token: signedBy(keys.SigningFromSeed("org-a-sig-9", seed("a9")), c), want: ErrUnknownKey},
		{name: "revoked signing kid", token: signedBy(f.aSigRevoked, c), want: ErrRevokedKey},
		{name: "signing key past its grace period", token: signedBy(f.aSigOld, c), want: ErrKeyInactive},
		{name: "kid of another organisation: iss org-a signed with org-c's key", token: signedBy(f.cSig, c), want: ErrKeyNotOwned},
		{name: "iss does not own kid: org-a's key claims iss org-c", token: signedBy(f.aSig, func() Claims { x := f.claims(); x.Issuer = orgC; return x }()), want: ErrKeyNotOwned},
		{name: "sealed to a key the recipient does not hold", token: f.wrapJWE(t, legit, jweOpts{key: &f.cEnc.Key.(*ecdsa.PrivateKey).PublicKey, kid: f.cEnc.KeyID}), want: ErrUnknownKey},

		// Embedded keys and other header parameters.
		{name: "JWS embedded jwk with valid signature", token: wrap(signRaw(t, withHeader(hdrA(), "jwk", publicJWKMap(t, f.aSig)), payload, edSign(f.aSig))), want: ErrHeader, msg: `"jwk"`},
		{name: "JWS embedded jwk of attacker key", token: wrap(signRaw(t, withHeader(hdrA(), "jwk", publicJWKMap(t, attacker)), payload, edSign(attacker))), want: ErrHeader, msg: `"jwk"`},
		{name: "JWS jku header", token: wrap(signRaw(t, withHeader(hdrA(), "jku", "https://evil.example/jwks.json"), payload, edSign(f.aSig))), want: ErrHeader, msg: `"jku"`},
		{name: "JWS x5u header", token: wrap(signRaw(t, withHeader(hdrA(), "x5u", "https://evil.example/cert.pem"), payload, edSign(f.aSig))), want: ErrHeader, msg: `"x5u"`},
		{name: "JWS x5c header", token: wrap(signRaw(t, withHeader(hdrA(), "x5c", []string{"MIIB"}), payload, edSign(f.aSig))), want: ErrHeader, msg: `"x5c"`},
		{name: "JWS crit header", token: wrap(signRaw(t, withHeader(withHeader(hdrA(), "crit", []string{"exp"}), "exp", 1), payload, edSign(f.aSig))), want: ErrHeader},
		{name: "JWE embedded jwk", token: f.wrapJWE(t, legit, jweOpts{extra: map[jose.HeaderKey]any{"jwk": publicJWKMap(t, f.bEnc)}}), want: ErrHeader, msg: `"jwk"`},
		{name: "JWE x5u header", token: f.wrapJWE(t, legit, jweOpts{extra: map[jose.HeaderKey]any{"x5u": "https://evil.example/c"}}), want: ErrHeader, msg: `"x5u"`},
		{name: "JWE unknown header parameter", token: f.wrapJWE(t, legit, jweOpts{extra: map[jose.HeaderKey]any{"foo": "bar"}}), want: ErrHeader, msg: `"foo"`},

		// Types: one kind of token is never another.
		{name: "event token opened as handover", token: event, want: ErrHeader, msg: "JWE typ"},
		{name: "JWE typ JWT", token: f.wrapJWE(t, legit, jweOpts{typ: "JWT"}), want: ErrHeader, msg: "JWE typ"},
		{name: "JWE cty of an event", token: f.wrapJWE(t, legit, jweOpts{cty: TypeEventJWS}), want: ErrHeader, msg: "JWE cty"},
		{name: "receipt JWS wrapped as handover", token: wrap(signRaw(t, jwsHeader(f.aSig.KeyID, TypeReceiptJWS), payload, edSign(f.aSig))), want: ErrHeader, msg: "JWS typ"},

		// Claims.
		{name: "wrong audience", token: legitWith(func(x *Claims) { x.Audience = orgC }), want: ErrAudience},
		{name: "expired", token: legitWith(func(x *Claims) { x.IssuedAt = fixedNow.Add(-48 * time.Hour); x.Expiry = fixedNow.Add(-2 * time.Hour) }), want: ErrExpired},
		{name: "iat in the future", token: legitWith(func(x *Claims) { x.IssuedAt = fixedNow.Add(10 * time.Minute) }), want: ErrNotYetValid, msg: "iat"},
		{name: "nbf in the future", token: legitWith(func(x *Claims) { x.NotBefore = fixedNow.Add(10 * time.Minute) }), want: ErrNotYetValid, msg: "nbf"},
		{name: "invalid LeiKa key", token: legitWith(func(x *Claims) { x.ServiceKey = "98123456789012" }), want: ErrClaims, msg: "leika"},
		{name: "attachment digest mismatch", token: legitWith(func(x *Claims) { x.Attachments[0].Data = []byte("swapped") }), want: ErrClaims, msg: "sha256"},
		{name: "unknown claim", token: legitPayload(insertClaim(payload, `"admin":true`)), want: ErrMalformed, msg: "unknown field"},
		{name: "duplicate aud claim", token: legitPayload(insertClaim(payload, `"aud":"org-c"`)), want: ErrMalformed, msg: "duplicate JSON key"},
		{name: "duplicate aud claim differing in case", token: legitPayload(insertClaim(payload, `"AUD":"org-c"`)), want: ErrMalformed, msg: "duplicate JSON key"},

		// Ciphertext integrity.
		{name: "tampered ciphertext", token: mutatePart(t, good, 3, flipFirst), want: ErrDecrypt},
		{name: "tampered tag", token: mutatePart(t, good, 4, flipLast), want: ErrDecrypt},
		{name: "tampered IV", token: mutatePart(t, good, 2, flipFirst), want: ErrDecrypt},
		{name: "tampered encrypted key", token: mutatePart(t, good, 1, flipFirst), want: ErrDecrypt},
		{name: "tampered protected header (AAD)", token: mutatePart(t, good, 0, func(b []byte) []byte { return append([]byte(" "), b...) }), want: ErrDecrypt},
		{name: "right kid, wrong recipient key", token: f.wrapJWE(t, legit, jweOpts{key: &f.cEnc.Key.(*ecdsa.PrivateKey).PublicKey, kid: f.bEnc.KeyID}), want: ErrDecrypt},
		{name: "ciphertext shortened by one block", token: mutatePart(t, good, 3, func(b []byte) []byte { return b[:len(b)-16] }), want: ErrDecrypt},

		// Invalid-curve and malformed ephemeral keys.
		{name: "epk point not on P-256", token: mutateHeader(t, good, func(h map[string]any) {
			epk := h["epk"].(map[string]any)
			epk["y"] = mutatePart(t, epk["y"].(string), 0, flipLast)
		}), want: ErrInvalidKey, msg: "not a point on P-256"},
		{name: "epk zero point", token: mutateHeader(t, good, func(h map[string]any) {
			epk := h["epk"].(map[string]any)
			epk["x"], epk["y"] = b64(make([]byte, 32)), b64(make([]byte, 32))
		}), want: ErrInvalidKey, msg: "not a point on P-256"},
		{name: "epk on P-384", token: mutateHeader(t, good, func(h map[string]any) {
			h["epk"] = publicJWKMap(t, jose.JSONWebKey{Key: &p384.PublicKey})
		}), want: ErrInvalidKey, msg: "P-256"},
		{name: "epk with private part", token: mutateHeader(t, good, func(h map[string]any) {
			h["epk"].(map[string]any)["d"] = b64(make([]byte, 32))
		}), want: ErrInvalidKey, msg: `"d"`},

		// Structure and size.
		{name: "empty token", token: "", want: ErrMalformed, msg: "5 parts"},
		{name: "truncated: last part removed", token: good[:strings.LastIndex(good, ".")], want: ErrMalformed, msg: "5 parts"},
		{name: "truncated: half the token", token: good[:len(good)/2], want: ErrMalformed},
		{name: "truncated: last character removed", token: good[:len(good)-1], want: ErrMalformed, msg: "part lengths"},
		{name: "4 parts", token: strings.Join(parts[:4], "."), want: ErrMalformed, msg: "5 parts"},
		{name: "6 parts", token: good + "." + parts[4], want: ErrMalformed, msg: "5 parts"},
		{name: "thousands of dots", token: strings.Repeat(".", 100000), want: ErrMalformed, msg: "5 parts"},
		{name: "thousands of dots after a valid header", token: parts[0] + strings.Repeat(".", 100000), want: ErrMalformed, msg: "5 parts"},
		{name: "oversized token", token: strings.Join([]string{parts[0], parts[1], parts[2], strings.Repeat("A", MaxEnvelopeSize), parts[4]}, "."), want: ErrTooLarge},
		{name: "oversized protected header", token: b64([]byte(strings.Repeat(" ", MaxHeaderSize))) + good[len(parts[0]):], want: ErrMalformed, msg: "protected header of"},

		// Deep nesting.
		{name: "100k [ in JWE header", token: b64([]byte(strings.Repeat("[", 100000))) + good[len(parts[0]):], want: ErrMalformed, msg: "protected header of"},
		{name: "3000 [ in JWE header", token: b64([]byte(strings.Repeat("[", 3000))) + good[len(parts[0]):], want: ErrNesting},
		{name: "3000 [ in JWS header", token: wrap(b64([]byte(strings.Repeat("[", 3000))) + legit[strings.Index(legit, "."):]), want: ErrNesting},
		{name: "100k [ in claims", token: wrap(signRaw(t, hdrA(), []byte(`{"iss":"org-a","data":`+strings.Repeat("[", 100000)+strings.Repeat("]", 100000)+`}`), edSign(attacker))), want: ErrNesting},
		{name: "claims nested 40 deep, validly signed", token: legitWith(func(x *Claims) { x.Data = nestedObject(40) }), want: ErrNesting},
	}
}

func (f *fixture) event(typ EventType) Event {
	e := Event{
		ID: "3b8e1f0a-9c2d-4e5f-8a7b-6c5d4e3f2a1b", Issuer: orgB, Audience: orgA,
		IssuedAt: fixedNow.Add(-time.Minute), Expiry: fixedNow.Add(24 * time.Hour),
		Type: typ, HandoverID: f.claims().ID, CaseID: f.claims().CaseID,
	}
	switch typ {
	case EventReject:
		e.Problem = &Problem{Type: "https://verbund.example/problems/not-responsible", Title: "Not responsible", Detail: "The applicant lives outside our municipality."}
	case EventForward:
		e.ForwardedTo = orgC
	}
	return e
}

func (f *fixture) sealEvent(t testing.TB, e Event, sender, to jose.JSONWebKey) string {
	t.Helper()
	tok, err := SealEvent(context.Background(), e, sender, pub(to))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func checkRejected(t *testing.T, err error, a attack) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted, want %v", a.want)
	}
	if !errors.Is(err, a.want) {
		t.Fatalf("got %v, want %v", err, a.want)
	}
	if a.msg != "" && !strings.Contains(err.Error(), a.msg) {
		t.Fatalf("got %v, want a message containing %q", err, a.msg)
	}
}

func TestOpenRejectsAttacks(t *testing.T) {
	f := newFixture(t)
	for _, a := range f.handoverAttacks(t) {
		t.Run(a.name, func(t *testing.T) {
			o, err := f.open(a.token)
			if err == nil {
				t.Fatalf("accepted (claims %+v), want %v", o.Claims, a.want)
			}
			checkRejected(t, err, a)
		})
	}
}

// timeRejection returns the fastest of a few runs of fn, so that a
// scheduler hiccup on a busy machine does not count as slowness.
func timeRejection(fn func() error) (time.Duration, error) {
	best := time.Duration(1<<63 - 1)
	var err error
	for range 3 {
		start := time.Now()
		err = fn()
		if d := time.Since(start); d < best {
			best = d
		}
	}
	return best, err
}

const maxRejectTime = 50 * time.Millisecond

func TestAttackRejectionsAreFast(t *testing.T) {
	f := newFixture(t)
	for _, a := range f.handoverAttacks(t) {
		t.Run("open/"+a.name, func(t *testing.T) {
			d, err := timeRejection(func() error { _, err := f.open(a.token); return err })
			if err == nil {
				t.Fatal("accepted")
			}
			if d > maxRejectTime {
				t.Fatalf("rejection took %v (max %v)", d, maxRejectTime)
			}
		})
	}
	for _, a := range f.receiptAttacks(t) {
		t.Run("receipt/"+a.name, func(t *testing.T) {
			d, err := timeRejection(func() error {
				_, err := VerifyReceipt(context.Background(), a.token, f.resolver, a.issuer, a.digest, keys.Now(fixedNow))
				return err
			})
			if err == nil {
				t.Fatal("accepted")
			}
			if d > maxRejectTime {
				t.Fatalf("rejection took %v (max %v)", d, maxRejectTime)
			}
		})
	}
}

type receiptAttack struct {
	attack
	issuer string
	digest [32]byte
}

// receiptAttacks builds every attack on VerifyReceipt. The expected digest
// is that of a real envelope, and the expected issuer org-b.
func (f *fixture) receiptAttacks(t testing.TB) []receiptAttack {
	t.Helper()
	good := f.seal(t, f.claims())
	o, err := f.open(good)
	if err != nil {
		t.Fatal(err)
	}
	r := NewReceipt(o, fixedNow)
	payload := mustJSON(t, wireReceipt{r.Issuer, r.Audience, r.HandoverID, r.Digest, r.ReceivedAt.Unix(), r.Status})
	hdrB := func() map[string]any { return jwsHeader(f.bSig.KeyID, TypeReceiptJWS) }
	attacker := keys.SigningFromSeed(f.bSig.KeyID, seed("attacker"))
	bPub := []byte(f.bSig.Key.(ed25519.PrivateKey).Public().(ed25519.PublicKey))
	sign := func(k jose.JSONWebKey, rr Receipt) string {
		tok, err := SignReceipt(rr, k)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	with := func(mod func(*Receipt)) Receipt { x := r; mod(&x); return x }
	legit := sign(f.bSig, r)
	ra := func(name, token string, want error, msg string) receiptAttack {
		return receiptAttack{attack{name, token, want, msg}, orgB, o.Digest}
	}
	otherDigest := sha256.Sum256([]byte("another envelope"))

	return []receiptAttack{
		ra("forged signature: attacker key under org-b's kid", sign(attacker, r), ErrSignature, ""),
		ra("forged signature: signature bytes altered", mutatePart(t, legit, 2, flipFirst), ErrSignature, ""),
		ra("alg none", signRaw(t, withHeader(hdrB(), "alg", "none"), payload, nil), ErrAlgorithm, `JWS alg "none"`),
		ra("alg HS256 key confusion: public key as HMAC secret", signRaw(t, withHeader(hdrB(), "alg", "HS256"), payload, func(in []byte) []byte {
			m := hmac.New(sha256.New, bPub)
			m.Write(in)
			return m.Sum(nil)
		}), ErrAlgorithm, `JWS alg "HS256"`),
		ra("alg RS256", joseSign(t, jose.RS256, testRSAKey(t), f.bSig.KeyID, TypeReceiptJWS, payload), ErrAlgorithm, `JWS alg "RS256"`),
		ra("unknown kid", sign(keys.SigningFromSeed("org-b-sig-9", seed("b9")), r), ErrUnknownKey, ""),
		{attack{"revoked kid", sign(f.aSigRevoked, with(func(x *Receipt) { x.Issuer = orgA })), ErrRevokedKey, ""}, orgA, o.Digest},
		ra("kid of another organisation: iss org-b signed with org-c's key", sign(f.cSig, r), ErrKeyNotOwned, ""),
		ra("old key used after its grace period", sign(f.bSigOld, r), ErrKeyInactive, ""),
		ra("receipt for another envelope", sign(f.bSig, with(func(x *Receipt) { x.Digest = hexDigest(otherDigest) })), ErrClaims, "receipt is for envelope"),
		ra("receipt from another organisation", sign(f.cSig, with(func(x *Receipt) { x.Issuer = orgC })), ErrClaims, "expected"),
		ra("status not delivered", signRaw(t, hdrB(), []byte(strings.Replace(string(payload), `"delivered"`, `"lost"`, 1)), edSign(f.bSig)), ErrClaims, "status"),
		ra("duplicate envelope_sha256", signRaw(t, hdrB(), insertClaim(payload, `"envelope_sha256":"`+hexDigest(otherDigest)+`"`), edSign(f.bSig)), ErrMalformed, "duplicate JSON key"),
		ra("embedded jwk", signRaw(t, withHeader(hdrB(), "jwk", publicJWKMap(t, f.bSig)), payload, edSign(f.bSig)), ErrHeader, `"jwk"`),
		ra("x5c header", signRaw(t, withHeader(hdrB(), "x5c", []string{"MIIB"}), payload, edSign(f.bSig)), ErrHeader, `"x5c"`),
		ra("handover JWS presented as receipt", signRaw(t, jwsHeader(f.bSig.KeyID, TypeHandoverJWS), payload, edSign(f.bSig)), ErrHeader, "JWS typ"),
		ra("oversized receipt", legit+strings.Repeat("A", MaxReceiptSize), ErrTooLarge, ""),
		ra("thousands of dots", strings.Repeat(".", 60000), ErrMalformed, "3 parts"),
		ra("truncated", legit[:len(legit)-1], ErrMalformed, ""),
		ra("4 parts", legit+".x", ErrMalformed, "3 parts"),
		ra("10k [ in payload", signRaw(t, hdrB(), []byte(`{"iss":"org-b","x":`+strings.Repeat("[", 10000)+strings.Repeat("]", 10000)+`}`), edSign(attacker)), ErrNesting, ""),
	}
}

func hexDigest(d [32]byte) string {
	const hexdig = "0123456789abcdef"
	b := make([]byte, 64)
	for i, v := range d {
		b[2*i], b[2*i+1] = hexdig[v>>4], hexdig[v&15]
	}
	return string(b)
}

func TestVerifyReceiptRejectsAttacks(t *testing.T) {
	f := newFixture(t)
	for _, a := range f.receiptAttacks(t) {
		t.Run(a.name, func(t *testing.T) {
			r, err := VerifyReceipt(context.Background(), a.token, f.resolver, a.issuer, a.digest, keys.Now(fixedNow))
			if err == nil {
				t.Fatalf("accepted (%+v), want %v", r, a.want)
			}
			checkRejected(t, err, a.attack)
		})
	}
}

func TestOpenEventRejectsAttacks(t *testing.T) {
	f := newFixture(t)
	handover := f.seal(t, f.claims())
	ev := f.event(EventReject)
	evJSON := mustJSON(t, wireEvent{ev.ID, ev.Issuer, ev.Audience, ev.IssuedAt.Unix(), ev.Expiry.Unix(), ev.Type, ev.HandoverID, ev.CaseID, ev.Digest, ev.Problem, ev.ForwardedTo})
	wrapToA := func(jws string) string {
		return f.wrapJWE(t, jws, jweOpts{key: &f.aEnc.Key.(*ecdsa.PrivateKey).PublicKey, kid: f.aEnc.KeyID, typ: TypeEventJWE, cty: TypeEventJWS})
	}
	signB := func(p []byte) string {
		return wrapToA(signRaw(t, jwsHeader(f.bSig.KeyID, TypeEventJWS), p, edSign(f.bSig)))
	}
	for _, a := range []attack{
		{name: "handover opened as event", token: handover, want: ErrHeader, msg: "JWE typ"},
		{name: "reject without problem", token: signB([]byte(strings.Replace(string(evJSON), `"problem"`, `"problem_"`, 1))), want: ErrMalformed, msg: "unknown field"},
		{name: "reject without problem (null)", token: signB(func() []byte {
			var m map[string]any
			_ = json.Unmarshal(evJSON, &m)
			delete(m, "problem")
			return mustJSON(t, m)
		}()), want: ErrClaims, msg: "problem"},
		{name: "unknown event type", token: signB([]byte(strings.Replace(string(evJSON), `"reject"`, `"delete"`, 1))), want: ErrClaims, msg: "event type"},
		{name: "event signed by org-c's key as org-b", token: wrapToA(signRaw(t, jwsHeader(f.cSig.KeyID, TypeEventJWS), evJSON, edSign(f.cSig))), want: ErrKeyNotOwned},
		{name: "event alg none", token: wrapToA(signRaw(t, map[string]any{"alg": "none", "kid": f.bSig.KeyID, "typ": TypeEventJWS}, evJSON, nil)), want: ErrAlgorithm},
		{name: "event for another audience", token: f.sealEvent(t, func() Event { e := f.event(EventAccept); e.Audience = orgC; return e }(), f.bSig, f.aEnc), want: ErrAudience},
		{name: "expired event", token: f.sealEvent(t, func() Event {
			e := f.event(EventComplete)
			e.IssuedAt, e.Expiry = fixedNow.Add(-3*time.Hour), fixedNow.Add(-2*time.Hour)
			return e
		}(), f.bSig, f.aEnc), want: ErrExpired},
	} {
		t.Run(a.name, func(t *testing.T) {
			_, err := OpenEvent(context.Background(), a.token, []jose.JSONWebKey{f.aEnc}, f.resolver, orgA, fixedNow)
			checkRejected(t, err, a)
		})
	}
}
