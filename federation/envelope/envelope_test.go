package envelope

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/keys"
)

func TestSealOpenRoundTrip(t *testing.T) {
	f := newFixture(t)
	c := f.claims()
	tok := f.seal(t, c)
	o, err := f.open(tok)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !reflect.DeepEqual(o.Claims, c) {
		t.Fatalf("claims differ:\n got %+v\nwant %+v", o.Claims, c)
	}
	if o.Digest != sha256.Sum256([]byte(tok)) || o.Digest != Digest(tok) {
		t.Fatal("digest is not SHA-256 of the token")
	}
	if o.SignerKID != f.aSig.KeyID || o.RecipientKID != f.bEnc.KeyID {
		t.Fatalf("kids: signer %q recipient %q", o.SignerKID, o.RecipientKID)
	}
	// The inner JWS verifies on its own with org-a's public key.
	jws, err := jose.ParseSignedCompact(o.SignedJWS, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify(f.aSig.Public()); err != nil {
		t.Fatalf("inner JWS: %v", err)
	}
}

func TestEnvelopeHeaders(t *testing.T) {
	f := newFixture(t)
	tok := f.seal(t, f.claims())
	hdr := func(part string) map[string]any {
		raw, err := base64.RawURLEncoding.DecodeString(part)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	outer := hdr(strings.Split(tok, ".")[0])
	for k, want := range map[string]string{"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": "org-b-enc-1", "typ": TypeHandoverJWE, "cty": TypeHandoverJWS} {
		if outer[k] != want {
			t.Errorf("JWE header %s = %v, want %s", k, outer[k], want)
		}
	}
	if len(outer) != 6 {
		t.Errorf("JWE header has extra parameters: %v", outer)
	}
	o, err := f.open(tok)
	if err != nil {
		t.Fatal(err)
	}
	inner := hdr(strings.Split(o.SignedJWS, ".")[0])
	if !reflect.DeepEqual(inner, map[string]any{"alg": "EdDSA", "kid": "org-a-sig-1", "typ": TypeHandoverJWS}) {
		t.Errorf("JWS header %v", inner)
	}
}

func TestOpenWithRetiringDecryptionKey(t *testing.T) {
	f := newFixture(t)
	tok, err := Seal(context.Background(), f.claims(), f.aSig, pub(f.bEncOld))
	if err != nil {
		t.Fatal(err)
	}
	o, err := f.open(tok)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if o.RecipientKID != f.bEncOld.KeyID {
		t.Fatalf("recipient kid %q", o.RecipientKID)
	}
	// Once the retiring key is dropped, the envelope no longer opens.
	_, err = Open(context.Background(), tok, []jose.JSONWebKey{f.bEnc}, f.resolver, orgB, fixedNow)
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("got %v, want ErrUnknownKey", err)
	}
}

func TestOpenWithinClockSkew(t *testing.T) {
	f := newFixture(t)
	c := f.claims()
	c.IssuedAt = fixedNow.Add(ClockSkew - time.Second)
	c.NotBefore = c.IssuedAt
	if _, err := f.open(f.seal(t, c)); err != nil {
		t.Fatalf("iat within skew: %v", err)
	}
	c = f.claims()
	c.Expiry = fixedNow.Add(-ClockSkew + time.Second)
	c.IssuedAt = c.Expiry.Add(-time.Hour)
	if _, err := f.open(f.seal(t, c)); err != nil {
		t.Fatalf("exp within skew: %v", err)
	}
}

func TestSealFor(t *testing.T) {
	f := newFixture(t)
	tok, err := SealFor(context.Background(), f.claims(), f.aSig, f.resolver)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.open(tok); err != nil {
		t.Fatal(err)
	}
	c := f.claims()
	c.Audience = "org-unknown"
	if _, err := SealFor(context.Background(), c, f.aSig, f.resolver); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("got %v, want ErrUnknownKey", err)
	}
}

func TestSealRefuses(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		mod    func(*Claims)
		sender jose.JSONWebKey
		enc    jose.JSONWebKey
		want   error
	}{
		{name: "missing jti", mod: func(c *Claims) { c.ID = "" }, want: ErrClaims},
		{name: "missing case_id", mod: func(c *Claims) { c.CaseID = "" }, want: ErrClaims},
		{name: "bad leika", mod: func(c *Claims) { c.ServiceKey = "9912345678901x" }, want: ErrClaims},
		{name: "exp before iat", mod: func(c *Claims) { c.Expiry = c.IssuedAt }, want: ErrClaims},
		{name: "data not an object", mod: func(c *Claims) { c.Data = json.RawMessage(`[1]`) }, want: ErrClaims},
		{name: "attachment path name", mod: func(c *Claims) { c.Attachments = []Attachment{NewAttachment("../x", "text/plain", nil)} }, want: ErrClaims},
		{name: "data nested too deep", mod: func(c *Claims) { c.Data = nestedObject(40) }, want: ErrNesting},
		{name: "ECDSA sender key", sender: f.bEnc, want: ErrInvalidKey},
		{name: "Ed25519 recipient key", enc: f.aSig.Public(), want: ErrInvalidKey},
		{name: "oversized", mod: func(c *Claims) {
			c.Attachments = []Attachment{NewAttachment("big.bin", "application/octet-stream", make([]byte, MaxEnvelopeSize))}
		}, want: ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.claims()
			if tc.mod != nil {
				tc.mod(&c)
			}
			sender, enc := f.aSig, pub(f.bEnc)
			if tc.sender.Key != nil {
				sender = tc.sender
			}
			if tc.enc.Key != nil {
				enc = tc.enc
			}
			_, err := Seal(ctx, c, sender, enc)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReceiptRoundTripAndDeterminism(t *testing.T) {
	f := newFixture(t)
	tok := f.seal(t, f.claims())
	o, err := f.open(tok)
	if err != nil {
		t.Fatal(err)
	}
	r := NewReceipt(o, fixedNow.Add(1500*time.Millisecond))
	r1, err := SignReceipt(r, f.bSig)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := SignReceipt(NewReceipt(o, fixedNow.Add(1200*time.Millisecond)), f.bSig)
	if err != nil {
		t.Fatal(err)
	}
	if r1 != r2 {
		t.Fatalf("receipts differ:\n%s\n%s", r1, r2)
	}
	got, err := VerifyReceipt(context.Background(), r1, f.resolver, orgB, Digest(tok), keys.Now(fixedNow))
	if err != nil {
		t.Fatalf("VerifyReceipt: %v", err)
	}
	if !reflect.DeepEqual(*got, r) {
		t.Fatalf("receipt differs:\n got %+v\nwant %+v", *got, r)
	}
	if got.Digest != hex.EncodeToString(o.Digest[:]) || got.HandoverID != o.Claims.ID || got.Audience != orgA || got.Status != StatusDelivered {
		t.Fatalf("receipt content %+v", got)
	}
	// The payload is plain JSON in a fixed order.
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(r1, ".")[1])
	want := `{"iss":"org-b","aud":"org-a","handover_jti":"` + o.Claims.ID + `","envelope_sha256":"` + r.Digest + `","received_at":` + "1793613601" + `,"status":"delivered"}`
	if string(payload) != want {
		t.Fatalf("payload\n got %s\nwant %s", payload, want)
	}
}

// A receipt signed with a key that has since been retired (and whose grace
// period is over) still verifies at the moment it was recorded; at a later
// moment it does not, whatever received_at it claims: the moment is the
// verifier's, never the signer's (a backdated receipt is refused).
func TestReceiptVerifiesAfterKeyRotation(t *testing.T) {
	f := newFixture(t)
	tok := f.seal(t, f.claims())
	o, err := f.open(tok)
	if err != nil {
		t.Fatal(err)
	}
	// org-b-sig-0 was valid until yesterday; the receipt is from three days
	// ago and was recorded then.
	recorded := keys.At(7, fixedNow.Add(-72*time.Hour))
	old, err := SignReceipt(NewReceipt(o, recorded.Time()), f.bSigOld)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyReceipt(context.Background(), old, f.resolver, orgB, Digest(tok), recorded); err != nil {
		t.Fatalf("old receipt after rotation, at the recorded moment: %v", err)
	}
	// The same bytes arriving now (backdated by the signer) are refused.
	if _, err := VerifyReceipt(context.Background(), old, f.resolver, orgB, Digest(tok), keys.Now(fixedNow)); !errors.Is(err, ErrKeyInactive) {
		t.Fatalf("backdated receipt verified now: got %v, want ErrKeyInactive", err)
	}
	// The same key cannot sign receipts dated after its grace period.
	late, err := SignReceipt(NewReceipt(o, fixedNow), f.bSigOld)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyReceipt(context.Background(), late, f.resolver, orgB, Digest(tok), keys.Now(fixedNow)); !errors.Is(err, ErrKeyInactive) {
		t.Fatalf("got %v, want ErrKeyInactive", err)
	}
}

func TestEventRoundTrip(t *testing.T) {
	f := newFixture(t)
	for _, typ := range []EventType{EventAccept, EventReject, EventComplete, EventForward} {
		t.Run(string(typ), func(t *testing.T) {
			e := f.event(typ)
			e.Digest = hex.EncodeToString(make([]byte, 32))
			tok, err := SealEventFor(context.Background(), e, f.bSig, f.resolver)
			if err != nil {
				t.Fatal(err)
			}
			o, err := OpenEvent(context.Background(), tok, []jose.JSONWebKey{f.aEnc}, f.resolver, orgA, fixedNow)
			if err != nil {
				t.Fatalf("OpenEvent: %v", err)
			}
			if !reflect.DeepEqual(o.Event, e) {
				t.Fatalf("event differs:\n got %+v\nwant %+v", o.Event, e)
			}
			if o.Digest != Digest(tok) || o.SignerKID != f.bSig.KeyID {
				t.Fatalf("opened event %+v", o)
			}
		})
	}
}

func TestSealEventRefuses(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		mod  func(*Event)
	}{
		{"reject without problem", func(e *Event) { e.Type = EventReject; e.Problem = nil }},
		{"accept with problem", func(e *Event) { e.Problem = &Problem{Type: "about:blank", Title: "x"} }},
		{"problem without title", func(e *Event) { e.Type = EventReject; e.Problem = &Problem{Type: "about:blank"} }},
		{"forward without target", func(e *Event) { e.Type = EventForward }},
		{"unknown type", func(e *Event) { e.Type = "archive" }},
		{"no handover", func(e *Event) { e.HandoverID = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := f.event(EventAccept)
			tc.mod(&e)
			if _, err := SealEvent(context.Background(), e, f.bSig, pub(f.aEnc)); !errors.Is(err, ErrClaims) {
				t.Fatalf("got %v, want ErrClaims", err)
			}
		})
	}
}

func TestCheckJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want error
	}{
		{"flat", `{"a":1,"b":[1,2,{"c":"}]\"{"}]}`, nil},
		{"depth 32", strings.Repeat("[", 32) + strings.Repeat("]", 32), nil},
		{"depth 33", strings.Repeat("[", 33) + strings.Repeat("]", 33), ErrNesting},
		{"100k open brackets", strings.Repeat("[", 100000), ErrNesting},
		{"same key in sibling objects", `{"a":{"k":1},"b":{"k":2}}`, nil},
		{"duplicate key", `{"a":1,"a":2}`, ErrMalformed},
		{"duplicate nested key", `{"x":{"a":1,"a":2}}`, ErrMalformed},
		{"duplicate key by escape", `{"a":1,"\u0061":2}`, ErrMalformed},
		{"duplicate key by case", `{"kid":1,"KID":2}`, ErrMalformed},
		{"duplicate key by Kelvin sign", `{"k":1,"\u212a":2}`, ErrMalformed},
		{"duplicate key by long s", `{"iss":1,"i\u017fs":2}`, ErrMalformed},
		{"string value equal to key", `{"a":"a","b":"a"}`, nil},
		{"unbalanced", `{"a":1}}`, ErrMalformed},
		{"unterminated string", `{"a`, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkJSON([]byte(tc.in))
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNewID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	a, b := NewID(), NewID()
	if !re.MatchString(a) || a == b {
		t.Fatalf("NewID: %q %q", a, b)
	}
}

func TestValidServiceKey(t *testing.T) {
	for s, want := range map[string]bool{"99123456789012": true, "9912345678901": false, "991234567890123": false, "98123456789012": false, "99l23456789012": false, "": false} {
		if ValidServiceKey(s) != want {
			t.Errorf("ValidServiceKey(%q) != %v", s, want)
		}
	}
}

func TestContextCancelled(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Open(ctx, f.seal(t, f.claims()), f.bDecKeys(), f.resolver, orgB, fixedNow); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if _, err := Seal(ctx, f.claims(), f.aSig, pub(f.bEnc)); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}
