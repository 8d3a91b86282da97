package envelope

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/keys"
)

// KeyResolver finds published keys. Implementations must return
// ErrUnknownKey for an unknown kid, ErrRevokedKey for a key revoked at the
// requested moment, ErrKeyNotOwned if kid belongs to another organisation,
// and ErrKeyInactive (or ErrUnknownKey) if the key or its organisation was
// not valid at the requested moment.
type KeyResolver interface {
	// VerificationKey returns the public signing key kid of organisation
	// org if a signature made with it is valid at moment at, by the key
	// rule of package keys (keys.SigningKeyAt). at.Index 0 is the current
	// moment.
	VerificationKey(ctx context.Context, org, kid string, at keys.Moment) (jose.JSONWebKey, error)
	// EncryptionKey returns the current public encryption key of org.
	EncryptionKey(ctx context.Context, org string) (jose.JSONWebKey, error)
}

// Opened is a handover that passed every check of Open.
type Opened struct {
	Claims       Claims
	Digest       [32]byte // SHA-256 of the compact JWE, as bound by receipts
	SignerKID    string   // kid of the sender's signing key
	RecipientKID string   // kid of the encryption key it was sealed to
	SignedJWS    string   // the inner compact JWS, for non-repudiation archives
}

// Digest returns the SHA-256 digest of a compact token, over its exact bytes.
func Digest(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// Seal signs claims with the sender's Ed25519 key and encrypts the signed
// token to the recipient's P-256 encryption key. It returns the compact JWE.
func Seal(ctx context.Context, claims Claims, senderKey, recipientEnc jose.JSONWebKey) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := claims.Validate(); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	payload, err := json.Marshal(claims.wire())
	if err != nil {
		return "", fmt.Errorf("envelope: seal: %w", err)
	}
	if err := checkJSON(payload); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	return sealNested(handoverKind, payload, senderKey, recipientEnc)
}

// SealFor is Seal with the recipient's current encryption key looked up
// through resolver for claims.Audience.
func SealFor(ctx context.Context, claims Claims, senderKey jose.JSONWebKey, resolver KeyResolver) (string, error) {
	enc, err := resolver.EncryptionKey(ctx, claims.Audience)
	if err != nil {
		return "", fmt.Errorf("envelope: encryption key of %q: %w", claims.Audience, err)
	}
	return Seal(ctx, claims, senderKey, enc)
}

// Open checks and opens a handover envelope addressed to expectAudience.
// decKeys are the recipient's encryption private keys (current and
// retiring), matched by the kid in the JWE header. The sender's signing key
// is looked up through resolver for the claimed issuer and must be valid at
// the current moment (keys.Now(now)): Open is for tokens as they arrive.
// See the package documentation for the order of checks.
//
// Replay protection is not done here: callers dedupe Claims.ID (and may
// keep Digest).
func Open(ctx context.Context, token string, decKeys []jose.JSONWebKey, resolver KeyResolver, expectAudience string, now time.Time) (*Opened, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if expectAudience == "" {
		return nil, fmt.Errorf("%w: no expected audience given", ErrAudience)
	}
	o, err := openNested(ctx, handoverKind, token, decKeys, resolver, now)
	if err != nil {
		return nil, err
	}
	var w wireClaims
	if err := decodeStrict(o.payload, &w); err != nil {
		return nil, fmt.Errorf("handover claims: %w", err)
	}
	c := w.claims()
	if c.Issuer != o.issuer {
		return nil, fmt.Errorf("%w: iss %q is not the key owner %q", ErrClaims, c.Issuer, o.issuer)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("handover: %w", err)
	}
	if c.Audience != expectAudience {
		return nil, fmt.Errorf("%w: handover for %q, not %q", ErrAudience, c.Audience, expectAudience)
	}
	if err := checkTime(c.IssuedAt, c.NotBefore, c.Expiry, now); err != nil {
		return nil, fmt.Errorf("handover %s: %w", c.ID, err)
	}
	return &Opened{Claims: c, Digest: Digest(token), SignerKID: o.signerKID, RecipientKID: o.recipientKID, SignedJWS: o.jws}, nil
}
