package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/keys"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
)

// TokenType is the JWS "typ" of a user token: a signed registry command
// (typ verbund-command+jws) or a handover envelope is never a token.
const TokenType = "verbund-user+jwt"

// Audience is the "aud" every token carries.
const Audience = "verbund"

// DefaultTokenTTL is how long a token is valid unless configured.
const DefaultTokenTTL = 15 * time.Minute

// MaxTokenTTL bounds exp - iat of any token accepted.
const MaxTokenTTL = 12 * time.Hour

// DefaultSkew is the clock difference tolerated on iat and exp.
const DefaultSkew = 30 * time.Second

const maxTokenBytes = 8 << 10

// ErrInvalidToken is wrapped by every refusal of VerifyToken.
var ErrInvalidToken = errors.New("auth: invalid token")

// Claims are a token's claims.
type Claims struct {
	Issuer   string   `json:"iss"` // the organisation whose key signed it
	Subject  string   `json:"sub"` // username on the node
	Node     string   `json:"node"`
	Roles    []string `json:"roles"`
	Audience string   `json:"aud"`
	IssuedAt int64    `json:"iat"` // Unix seconds
	Expiry   int64    `json:"exp"` // Unix seconds
}

// RoleNames returns the claim form of roles ("CLERK", ...).
func RoleNames(roles []nodev1.Role) []string {
	out := make([]string, 0, len(roles))
	for _, r := range roles {
		out = append(out, strings.TrimPrefix(r.String(), "ROLE_"))
	}
	return out
}

// IssueToken signs a token for user u of node nodeID of organisation org
// with the organisation's private signing key, valid from now for ttl.
func IssueToken(key jose.JSONWebKey, org, nodeID string, u *nodev1.User, now time.Time, ttl time.Duration) (string, time.Time, error) {
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	if ttl > MaxTokenTTL {
		ttl = MaxTokenTTL
	}
	if key.KeyID == "" {
		return "", time.Time{}, errors.New("auth: signing key has no kid")
	}
	exp := now.Add(ttl)
	c := Claims{Issuer: org, Subject: u.GetUsername(), Node: nodeID, Roles: RoleNames(u.GetRoles()),
		Audience: Audience, IssuedAt: now.Unix(), Expiry: exp.Unix()}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", time.Time{}, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: keys.SigningAlg, Key: key}, (&jose.SignerOptions{}).WithType(TokenType))
	if err != nil {
		return "", time.Time{}, err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", time.Time{}, err
	}
	s, err := jws.CompactSerialize()
	return s, time.Unix(c.Expiry, 0), err
}

// KeyResolver returns the public key kid of organisation org if a
// signature made with it is valid now (the registry's key rule), or an
// error saying why not.
type KeyResolver func(org, kid string) (jose.JSONWebKey, error)

// PeekIssuer returns the unverified "iss" of a token, so the caller can
// decide which rule (node-local or operator) to verify it under.
func PeekIssuer(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || len(raw) > maxTokenBytes {
		return "", fmt.Errorf("%w: not a JWS compact serialisation", ErrInvalidToken)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("%w: payload is not base64url", ErrInvalidToken)
	}
	var c Claims
	if err := json.Unmarshal(b, &c); err != nil {
		return "", fmt.Errorf("%w: payload is not a claims object", ErrInvalidToken)
	}
	return c.Issuer, nil
}

// VerifyToken checks a token as carefully as a handover envelope: size
// and shape first; only the protected header parameters alg, kid and typ
// (no embedded or remote keys); alg pinned to EdDSA; typ TokenType; the
// signature against the key resolve returns for (iss, kid), never a key
// from the token; aud; iat not in the future and exp not past (both with
// skew); exp - iat at most MaxTokenTTL. It does not check who the issuer,
// node or subject are: that is the caller's rule.
func VerifyToken(raw string, resolve KeyResolver, now time.Time, skew time.Duration) (*Claims, error) {
	if len(raw) > maxTokenBytes || strings.Count(raw, ".") != 2 {
		return nil, fmt.Errorf("%w: not a JWS compact serialisation", ErrInvalidToken)
	}
	if err := checkHeader(raw[:strings.IndexByte(raw, '.')]); err != nil {
		return nil, err
	}
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{keys.SigningAlg})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("%w: want exactly one signature", ErrInvalidToken)
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != TokenType {
		return nil, fmt.Errorf("%w: typ %q, want %q", ErrInvalidToken, typ, TokenType)
	}
	if h.KeyID == "" {
		return nil, fmt.Errorf("%w: header has no kid", ErrInvalidToken)
	}
	var c Claims
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &c); err != nil {
		return nil, fmt.Errorf("%w: payload is not a claims object", ErrInvalidToken)
	}
	if c.Issuer == "" || c.Subject == "" || c.Node == "" {
		return nil, fmt.Errorf("%w: iss, sub and node are required", ErrInvalidToken)
	}
	pub, err := resolve(c.Issuer, h.KeyID)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s of %s: %v", ErrInvalidToken, h.KeyID, c.Issuer, err)
	}
	if pub.KeyID != h.KeyID {
		return nil, fmt.Errorf("%w: resolved key %q for kid %q", ErrInvalidToken, pub.KeyID, h.KeyID)
	}
	if _, err := jws.Verify(pub); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrInvalidToken, err)
	}
	if c.Audience != Audience {
		return nil, fmt.Errorf("%w: aud %q, want %q", ErrInvalidToken, c.Audience, Audience)
	}
	iat, exp := time.Unix(c.IssuedAt, 0), time.Unix(c.Expiry, 0)
	switch {
	case c.IssuedAt == 0 || c.Expiry == 0:
		return nil, fmt.Errorf("%w: iat and exp are required", ErrInvalidToken)
	case iat.After(now.Add(skew)):
		return nil, fmt.Errorf("%w: issued in the future (%s)", ErrInvalidToken, iat.UTC().Format(time.RFC3339))
	case !now.Add(-skew).Before(exp):
		return nil, fmt.Errorf("%w: expired at %s", ErrInvalidToken, exp.UTC().Format(time.RFC3339))
	case exp.Sub(iat) > MaxTokenTTL || exp.Before(iat):
		return nil, fmt.Errorf("%w: lifetime %s exceeds %s", ErrInvalidToken, exp.Sub(iat), MaxTokenTTL)
	}
	return &c, nil
}

func checkHeader(b64 string) error {
	if len(b64) > 1024 {
		return fmt.Errorf("%w: protected header too large", ErrInvalidToken)
	}
	raw, err := base64.RawURLEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("%w: protected header is not base64url", ErrInvalidToken)
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(raw, &h); err != nil {
		return fmt.Errorf("%w: protected header is not a JSON object", ErrInvalidToken)
	}
	for k := range h {
		switch k {
		case "alg", "kid", "typ":
		default:
			return fmt.Errorf("%w: header parameter %q is not accepted", ErrInvalidToken, k)
		}
	}
	return nil
}
