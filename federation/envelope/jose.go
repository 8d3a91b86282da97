package envelope

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/keys"
)

// Media types carried in the "typ" and "cty" header parameters. Every layer
// names what it is, so a token of one kind can never be accepted as another
// (an event as a handover, a handover's inner JWS as a receipt, ...).
const (
	TypeHandoverJWE = "verbund-handover+jwe"
	TypeHandoverJWS = "verbund-handover+jws"
	TypeEventJWE    = "verbund-event+jwe"
	TypeEventJWS    = "verbund-event+jws"
	TypeReceiptJWS  = "verbund-receipt+jws"
)

// Limits. Sizes are checked before anything is parsed.
const (
	MaxEnvelopeSize = 8 << 20  // compact JWE of a handover
	MaxEventSize    = 1 << 20  // compact JWE of an event
	MaxReceiptSize  = 64 << 10 // compact JWS of a receipt
	MaxHeaderSize   = 4 << 10  // base64url protected header of any layer
	MaxJSONDepth    = 32       // nesting of headers and claims
	ClockSkew       = time.Minute
)

// Exact base64url lengths of the fixed-size JWE parts for
// ECDH-ES+A256KW / A256GCM: a 32-byte CEK wrapped to 40 bytes, a 96-bit IV
// and a 128-bit tag.
const (
	encKeyB64Len = 54
	ivB64Len     = 16
	tagB64Len    = 22
)

var (
	sigAlgs     = []jose.SignatureAlgorithm{keys.SigningAlg}
	keyAlgs     = []jose.KeyAlgorithm{keys.KeyEncryptionAlg}
	contentEncs = []jose.ContentEncryption{keys.ContentEncryption}
)

// kind describes one nested token type.
type kind struct {
	name    string
	jweTyp  string
	jwsTyp  string
	maxSize int
}

var (
	handoverKind = kind{"handover", TypeHandoverJWE, TypeHandoverJWS, MaxEnvelopeSize}
	eventKind    = kind{"event", TypeEventJWE, TypeEventJWS, MaxEventSize}
)

// Header parameters that must never appear: keys or key references embedded
// in a token are never used for verification or decryption, and critical
// extensions are not supported.
var forbiddenHeaders = map[string]bool{
	"jwk": true, "jku": true, "x5u": true, "x5c": true, "x5t": true,
	"x5t#S256": true, "crit": true, "b64": true,
}

var (
	jweHeaderAllowed = map[string]bool{"alg": true, "enc": true, "kid": true, "typ": true, "cty": true, "epk": true, "apu": true, "apv": true}
	jwsHeaderAllowed = map[string]bool{"alg": true, "kid": true, "typ": true}
)

// rawHeader is a decoded protected header, parameter by parameter.
type rawHeader map[string]json.RawMessage

// decodeHeader decodes and pre-checks a base64url protected header: size,
// base64, JSON depth and duplicate keys, then the allow-list of parameters.
func decodeHeader(b64 string, allowed map[string]bool) (rawHeader, error) {
	if len(b64) > MaxHeaderSize {
		return nil, fmt.Errorf("%w: protected header of %d bytes (max %d)", ErrMalformed, len(b64), MaxHeaderSize)
	}
	raw, err := base64.RawURLEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("%w: protected header: %v", ErrMalformed, err)
	}
	if err := checkJSON(raw); err != nil {
		return nil, fmt.Errorf("protected header: %w", err)
	}
	var h rawHeader
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("%w: protected header: %v", ErrMalformed, err)
	}
	if _, ok := h["zip"]; ok {
		return nil, fmt.Errorf("%w: header has \"zip\"", ErrCompressed)
	}
	for k := range h {
		if forbiddenHeaders[k] {
			return nil, fmt.Errorf("%w: %q", ErrHeader, k)
		}
		if !allowed[k] {
			return nil, fmt.Errorf("%w: unknown parameter %q", ErrHeader, k)
		}
	}
	return h, nil
}

// str returns header parameter k as a string ("" if absent).
func (h rawHeader) str(k string) (string, error) {
	v, ok := h[k]
	if !ok {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("%w: header %q is not a string", ErrMalformed, k)
	}
	return s, nil
}

// checkJWEHeader enforces the outer header: algorithms, types, kid, epk.
func checkJWEHeader(h rawHeader, k kind) (kid string, err error) {
	alg, err := h.str("alg")
	if err != nil {
		return "", err
	}
	if alg != string(keys.KeyEncryptionAlg) {
		return "", fmt.Errorf("%w: JWE alg %q (want %s)", ErrAlgorithm, alg, keys.KeyEncryptionAlg)
	}
	enc, err := h.str("enc")
	if err != nil {
		return "", err
	}
	if enc != string(keys.ContentEncryption) {
		return "", fmt.Errorf("%w: JWE enc %q (want %s)", ErrAlgorithm, enc, keys.ContentEncryption)
	}
	if typ, err := h.str("typ"); err != nil {
		return "", err
	} else if typ != k.jweTyp {
		return "", fmt.Errorf("%w: JWE typ %q (want %s)", ErrHeader, typ, k.jweTyp)
	}
	if cty, err := h.str("cty"); err != nil {
		return "", err
	} else if cty != k.jwsTyp {
		return "", fmt.Errorf("%w: JWE cty %q (want %s)", ErrHeader, cty, k.jwsTyp)
	}
	if kid, err = h.str("kid"); err != nil {
		return "", err
	}
	if kid == "" {
		return "", fmt.Errorf("%w: JWE header has no kid", ErrMalformed)
	}
	if err := checkEPK(h["epk"]); err != nil {
		return "", err
	}
	return kid, nil
}

// checkEPK makes sure the ephemeral key is a public P-256 point that lies on
// the curve (invalid-curve attacks), before any key agreement happens.
func checkEPK(raw json.RawMessage) error {
	if raw == nil {
		return fmt.Errorf("%w: JWE header has no epk", ErrMalformed)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("%w: epk is not a JSON object", ErrInvalidKey)
	}
	var p struct{ Kty, Crv, X, Y string }
	for name, v := range m {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("%w: epk member %q is not a string", ErrInvalidKey, name)
		}
		switch name {
		case "kty":
			p.Kty = s
		case "crv":
			p.Crv = s
		case "x":
			p.X = s
		case "y":
			p.Y = s
		default:
			return fmt.Errorf("%w: epk member %q not allowed", ErrInvalidKey, name)
		}
	}
	if p.Kty != "EC" || p.Crv != "P-256" {
		return fmt.Errorf("%w: epk must be an EC P-256 key, got kty %q crv %q", ErrInvalidKey, p.Kty, p.Crv)
	}
	x, errX := base64.RawURLEncoding.DecodeString(p.X)
	y, errY := base64.RawURLEncoding.DecodeString(p.Y)
	if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
		return fmt.Errorf("%w: epk coordinates must be 32-byte base64url", ErrInvalidKey)
	}
	point := make([]byte, 0, 65)
	point = append(point, 4)
	point = append(point, x...)
	point = append(point, y...)
	if _, err := ecdh.P256().NewPublicKey(point); err != nil {
		return fmt.Errorf("%w: epk is not a point on P-256", ErrInvalidKey)
	}
	return nil
}

// checkJWSHeader enforces the inner (or receipt) JWS header.
func checkJWSHeader(h rawHeader, wantTyp string) (kid string, err error) {
	alg, err := h.str("alg")
	if err != nil {
		return "", err
	}
	if alg != string(keys.SigningAlg) {
		return "", fmt.Errorf("%w: JWS alg %q (want %s)", ErrAlgorithm, alg, keys.SigningAlg)
	}
	if typ, err := h.str("typ"); err != nil {
		return "", err
	} else if typ != wantTyp {
		return "", fmt.Errorf("%w: JWS typ %q (want %s)", ErrHeader, typ, wantTyp)
	}
	if kid, err = h.str("kid"); err != nil {
		return "", err
	}
	if kid == "" {
		return "", fmt.Errorf("%w: JWS header has no kid", ErrMalformed)
	}
	return kid, nil
}

// signingKey checks that k is an Ed25519 private key with a kid.
func signingKey(k jose.JSONWebKey) (ed25519.PrivateKey, error) {
	priv, ok := k.Key.(ed25519.PrivateKey)
	if !ok || len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: signing key %q must be an Ed25519 private key, got %T", ErrInvalidKey, k.KeyID, k.Key)
	}
	if k.KeyID == "" {
		return nil, fmt.Errorf("%w: signing key has no kid", ErrInvalidKey)
	}
	if k.Algorithm != "" && k.Algorithm != string(keys.SigningAlg) {
		return nil, fmt.Errorf("%w: signing key %q has alg %q", ErrAlgorithm, k.KeyID, k.Algorithm)
	}
	return priv, nil
}

// signCompact signs payload with an Ed25519 key. The protected header is
// {"alg":"EdDSA","kid":...,"typ":...} with sorted keys, and Ed25519 is
// deterministic, so equal inputs give byte-identical tokens.
func signCompact(payload []byte, k jose.JSONWebKey, typ string) (string, error) {
	priv, err := signingKey(k)
	if err != nil {
		return "", err
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: keys.SigningAlg, Key: jose.JSONWebKey{Key: priv, KeyID: k.KeyID}},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)),
	)
	if err != nil {
		return "", fmt.Errorf("envelope: signer: %w", err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("envelope: sign: %w", err)
	}
	return obj.CompactSerialize()
}

// encryptionKey returns the P-256 public key and kid of a recipient key.
func encryptionKey(k jose.JSONWebKey) (*ecdsa.PublicKey, error) {
	var pub *ecdsa.PublicKey
	switch key := k.Key.(type) {
	case *ecdsa.PublicKey:
		pub = key
	case *ecdsa.PrivateKey:
		pub = &key.PublicKey
	}
	if pub == nil || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: encryption key %q must be P-256, got %T", ErrInvalidKey, k.KeyID, k.Key)
	}
	if k.KeyID == "" {
		return nil, fmt.Errorf("%w: encryption key has no kid", ErrInvalidKey)
	}
	if k.Algorithm != "" && k.Algorithm != string(keys.KeyEncryptionAlg) {
		return nil, fmt.Errorf("%w: encryption key %q has alg %q", ErrAlgorithm, k.KeyID, k.Algorithm)
	}
	if k.Use != "" && k.Use != keys.UseEnc {
		return nil, fmt.Errorf("%w: key %q has use %q, not %q", ErrInvalidKey, k.KeyID, k.Use, keys.UseEnc)
	}
	return pub, nil
}

// sealNested signs payload with senderKey and encrypts the compact JWS to
// recipientEnc: JWS inside JWE, typ/cty naming both layers.
func sealNested(k kind, payload []byte, senderKey, recipientEnc jose.JSONWebKey) (string, error) {
	pub, err := encryptionKey(recipientEnc)
	if err != nil {
		return "", err
	}
	jws, err := signCompact(payload, senderKey, k.jwsTyp)
	if err != nil {
		return "", err
	}
	opts := (&jose.EncrypterOptions{}).
		WithType(jose.ContentType(k.jweTyp)).
		WithContentType(jose.ContentType(k.jwsTyp))
	enc, err := jose.NewEncrypter(keys.ContentEncryption,
		jose.Recipient{Algorithm: keys.KeyEncryptionAlg, Key: pub, KeyID: recipientEnc.KeyID}, opts)
	if err != nil {
		return "", fmt.Errorf("envelope: encrypter: %w", err)
	}
	obj, err := enc.Encrypt([]byte(jws))
	if err != nil {
		return "", fmt.Errorf("envelope: encrypt: %w", err)
	}
	token, err := obj.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("envelope: serialize: %w", err)
	}
	if len(token) > k.maxSize {
		return "", fmt.Errorf("%w: %s of %d bytes (max %d)", ErrTooLarge, k.name, len(token), k.maxSize)
	}
	return token, nil
}

// opened is the result of opening a nested token, before kind-specific
// claim checks.
type opened struct {
	payload      []byte // verified JWS payload
	signerKID    string
	issuer       string // issuer the signing key was resolved for
	jws          string // inner compact JWS
	recipientKID string
}

// openNested checks and opens a nested token, cheapest checks first:
// size, structure, outer header allow-list, decryption key by kid, decrypt,
// then the inner JWS via verifyJWS.
func openNested(ctx context.Context, k kind, token string, decKeys []jose.JSONWebKey, resolver KeyResolver, at time.Time) (*opened, error) {
	if len(token) > k.maxSize {
		return nil, fmt.Errorf("%w: %s of %d bytes (max %d)", ErrTooLarge, k.name, len(token), k.maxSize)
	}
	if n := strings.Count(token, "."); n != 4 {
		return nil, fmt.Errorf("%w: compact JWE needs 5 parts, got %d", ErrMalformed, n+1)
	}
	parts := strings.SplitN(token, ".", 5)
	h, err := decodeHeader(parts[0], jweHeaderAllowed)
	if err != nil {
		return nil, fmt.Errorf("%s JWE: %w", k.name, err)
	}
	rkid, err := checkJWEHeader(h, k)
	if err != nil {
		return nil, fmt.Errorf("%s JWE: %w", k.name, err)
	}
	if len(parts[1]) != encKeyB64Len || len(parts[2]) != ivB64Len || len(parts[4]) != tagB64Len || len(parts[3]) == 0 {
		return nil, fmt.Errorf("%w: JWE part lengths %d/%d/%d/%d/%d", ErrMalformed,
			len(parts[0]), len(parts[1]), len(parts[2]), len(parts[3]), len(parts[4]))
	}
	var priv *ecdsa.PrivateKey
	for _, dk := range decKeys {
		if dk.KeyID != rkid {
			continue
		}
		p, ok := dk.Key.(*ecdsa.PrivateKey)
		if !ok || p.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: decryption key %q must be a P-256 private key, got %T", ErrInvalidKey, rkid, dk.Key)
		}
		priv = p
		break
	}
	if priv == nil {
		return nil, fmt.Errorf("%w: no decryption key with kid %q", ErrUnknownKey, rkid)
	}
	obj, err := jose.ParseEncryptedCompact(token, keyAlgs, contentEncs)
	if err != nil {
		return nil, fmt.Errorf("%w: %s JWE: %v", ErrMalformed, k.name, err)
	}
	plain, err := obj.Decrypt(priv)
	if err != nil {
		return nil, fmt.Errorf("%w: %s JWE: %v", ErrDecrypt, k.name, err)
	}
	jws := string(plain)
	payload, skid, iss, err := verifyJWS(ctx, jws, k.jwsTyp, resolver, keys.Now(at))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.name, err)
	}
	return &opened{payload: payload, signerKID: skid, issuer: iss, jws: jws, recipientKID: rkid}, nil
}

// verifyJWS checks a compact JWS: structure, header allow-list, alg, then
// looks up the signing key by (iss, kid, at) and verifies. at is chosen by
// the caller (the registry moment the token is judged at), never read from
// the token.
func verifyJWS(ctx context.Context, jws, wantTyp string, resolver KeyResolver, at keys.Moment) (payload []byte, kid, iss string, err error) {
	if n := strings.Count(jws, "."); n != 2 {
		return nil, "", "", fmt.Errorf("%w: compact JWS needs 3 parts, got %d", ErrMalformed, n+1)
	}
	hdr, _, _ := strings.Cut(jws, ".")
	h, err := decodeHeader(hdr, jwsHeaderAllowed)
	if err != nil {
		return nil, "", "", fmt.Errorf("JWS: %w", err)
	}
	if kid, err = checkJWSHeader(h, wantTyp); err != nil {
		return nil, "", "", err
	}
	obj, err := jose.ParseSignedCompact(jws, sigAlgs)
	if err != nil {
		var algErr *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &algErr) {
			return nil, "", "", fmt.Errorf("%w: %v", ErrAlgorithm, err)
		}
		return nil, "", "", fmt.Errorf("%w: JWS: %v", ErrMalformed, err)
	}
	unverified := obj.UnsafePayloadWithoutVerification()
	if err := checkJSON(unverified); err != nil {
		return nil, "", "", fmt.Errorf("JWS payload: %w", err)
	}
	var probe struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(unverified, &probe); err != nil {
		return nil, "", "", fmt.Errorf("%w: JWS payload: %v", ErrMalformed, err)
	}
	if probe.Iss == "" {
		return nil, "", "", fmt.Errorf("%w: no iss", ErrClaims)
	}
	if resolver == nil {
		return nil, "", "", fmt.Errorf("%w: no key resolver", ErrUnknownKey)
	}
	jwk, err := resolver.VerificationKey(ctx, probe.Iss, kid, at)
	if err != nil {
		return nil, "", "", fmt.Errorf("signing key %q of %q: %w", kid, probe.Iss, err)
	}
	pub, err := verificationKey(jwk, kid)
	if err != nil {
		return nil, "", "", err
	}
	payload, err = obj.Verify(pub)
	if err != nil {
		return nil, "", "", fmt.Errorf("%w: key %q of %q: %v", ErrSignature, kid, probe.Iss, err)
	}
	return payload, kid, probe.Iss, nil
}

// verificationKey checks what a resolver returned: a public Ed25519 key
// for the kid that was asked for.
func verificationKey(k jose.JSONWebKey, kid string) (ed25519.PublicKey, error) {
	pub, ok := k.Key.(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: resolver returned %T for %q, want an Ed25519 public key", ErrInvalidKey, k.Key, kid)
	}
	if k.KeyID != "" && k.KeyID != kid {
		return nil, fmt.Errorf("%w: resolver returned key %q for %q", ErrUnknownKey, k.KeyID, kid)
	}
	if k.Algorithm != "" && k.Algorithm != string(keys.SigningAlg) {
		return nil, fmt.Errorf("%w: key %q has alg %q", ErrAlgorithm, kid, k.Algorithm)
	}
	if k.Use != "" && k.Use != keys.UseSig {
		return nil, fmt.Errorf("%w: key %q has use %q, not %q", ErrInvalidKey, kid, k.Use, keys.UseSig)
	}
	return pub, nil
}
