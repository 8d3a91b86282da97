package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// OIDC verifies ID tokens of an organisation's OpenID Connect provider
// (the municipality's identity provider, where it has one) and maps them
// to the node's users by the preferred_username claim: the user must exist
// on the node and be enabled, and its roles are the node's, never the
// provider's. The provider is discovered at first use (not at node start),
// and again after a failed discovery.
type OIDC struct {
	issuer, clientID string
	hc               *http.Client
	now              func() time.Time

	mu sync.Mutex
	v  *oidc.IDTokenVerifier
}

// NewOIDC returns a verifier for ID tokens issued by issuer for clientID
// (the "aud" they must carry). hc (nil: http.DefaultClient) fetches the
// discovery document and the provider's keys.
func NewOIDC(issuer, clientID string, hc *http.Client, now func() time.Time) *OIDC {
	if hc == nil {
		hc = http.DefaultClient
	}
	if now == nil {
		now = time.Now
	}
	return &OIDC{issuer: issuer, clientID: clientID, hc: hc, now: now}
}

func (o *OIDC) verifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.v != nil {
		return o.v, nil
	}
	// The key set keeps using this client after discovery.
	ctx = oidc.ClientContext(context.WithoutCancel(ctx), o.hc)
	p, err := oidc.NewProvider(ctx, o.issuer)
	if err != nil {
		return nil, fmt.Errorf("OpenID Connect provider %s: %w", o.issuer, err)
	}
	o.v = p.Verifier(&oidc.Config{ClientID: o.clientID, Now: o.now})
	return o.v, nil
}

// Verify checks an ID token (signature against the provider's published
// keys with the algorithms it announces, issuer, audience, expiry) and
// returns its preferred_username.
func (o *OIDC) Verify(ctx context.Context, raw string) (string, error) {
	v, err := o.verifier(ctx)
	if err != nil {
		return "", err
	}
	tok, err := v.Verify(oidc.ClientContext(ctx, o.hc), raw)
	if err != nil {
		return "", fmt.Errorf("%w: OpenID Connect: %v", ErrInvalidToken, err)
	}
	var c struct {
		PreferredUsername string `json:"preferred_username"`
	}
	if err := tok.Claims(&c); err != nil || c.PreferredUsername == "" {
		return "", fmt.Errorf("%w: OpenID Connect token of %s has no preferred_username", ErrInvalidToken, tok.Subject)
	}
	return c.PreferredUsername, nil
}

// IsNodeToken reports whether raw claims to be a token a node signed (its
// protected header says typ TokenType); anything else may be an OpenID
// Connect ID token.
func IsNodeToken(raw string) bool {
	i := strings.IndexByte(raw, '.')
	if i <= 0 || i > 1024 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(raw[:i])
	if err != nil {
		return false
	}
	var h struct {
		Typ string `json:"typ"`
	}
	return json.Unmarshal(b, &h) == nil && h.Typ == TokenType
}
