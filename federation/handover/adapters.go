package handover

import (
	"context"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/federation/membership"
	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// RegistryKeys is a KeyResolver and Directory over the registry's
// organisations, for the node to plug in:
//
//	handover.RegistryKeys{Lookup: func(_ context.Context, id string) (*registryv1.Organisation, error) {
//		o, _, err := reader.Organisation(id)
//		return o, err
//	}}
//
// Signing keys follow the registry's own rule for commands: a key of the
// organisation with use "sig" that is ACTIVE, or RETIRING with at not after
// not_after_unix_ms; REVOKED never. The encryption key is the organisation's
// ACTIVE "enc" key. The endpoint is Organisation.api_endpoint.
type RegistryKeys struct {
	Lookup func(ctx context.Context, org string) (*registryv1.Organisation, error)
}

var (
	_ envelope.KeyResolver = RegistryKeys{}
	_ Directory            = RegistryKeys{}
)

func (r RegistryKeys) org(ctx context.Context, id string) (*registryv1.Organisation, error) {
	o, err := r.Lookup(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("%w: organisation %q: %v", envelope.ErrUnknownKey, id, err)
	}
	return o, nil
}

// VerificationKey implements envelope.KeyResolver.
func (r RegistryKeys) VerificationKey(ctx context.Context, org, kid string, at time.Time) (jose.JSONWebKey, error) {
	o, err := r.org(ctx, org)
	if err != nil {
		return jose.JSONWebKey{}, err
	}
	for _, pk := range o.GetKeys() {
		if pk.GetKid() != kid {
			continue
		}
		if pk.GetUse() != keys.UseSig {
			return jose.JSONWebKey{}, fmt.Errorf("%w: key %q of %s is not a signing key", envelope.ErrUnknownKey, kid, org)
		}
		switch pk.GetStatus() {
		case registryv1.KeyStatus_KEY_STATUS_ACTIVE:
		case registryv1.KeyStatus_KEY_STATUS_RETIRING:
			if at.UnixMilli() > pk.GetNotAfterUnixMs() {
				return jose.JSONWebKey{}, fmt.Errorf("%w: key %q of %s retired before %s", envelope.ErrKeyInactive, kid, org, at.UTC().Format(time.RFC3339))
			}
		default:
			return jose.JSONWebKey{}, fmt.Errorf("%w: key %q of %s", envelope.ErrRevokedKey, kid, org)
		}
		k, err := keys.ParsePublic(pk)
		if err != nil {
			return jose.JSONWebKey{}, fmt.Errorf("%w: %v", envelope.ErrInvalidKey, err)
		}
		return k, nil
	}
	return jose.JSONWebKey{}, fmt.Errorf("%w: %q is not a key of %s", envelope.ErrUnknownKey, kid, org)
}

// EncryptionKey implements envelope.KeyResolver.
func (r RegistryKeys) EncryptionKey(ctx context.Context, org string) (jose.JSONWebKey, error) {
	o, err := r.org(ctx, org)
	if err != nil {
		return jose.JSONWebKey{}, err
	}
	for _, pk := range o.GetKeys() {
		if pk.GetUse() == keys.UseEnc && pk.GetStatus() == registryv1.KeyStatus_KEY_STATUS_ACTIVE {
			k, err := keys.ParsePublic(pk)
			if err != nil {
				return jose.JSONWebKey{}, fmt.Errorf("%w: %v", envelope.ErrInvalidKey, err)
			}
			return k, nil
		}
	}
	return jose.JSONWebKey{}, fmt.Errorf("%w: %s has no active encryption key", envelope.ErrUnknownKey, org)
}

// Endpoint implements Directory.
func (r RegistryKeys) Endpoint(ctx context.Context, org string) (string, error) {
	o, err := r.Lookup(ctx, org)
	if err != nil {
		return "", err
	}
	if o.GetApiEndpoint() == "" {
		return "", fmt.Errorf("organisation %s publishes no api_endpoint", org)
	}
	return o.GetApiEndpoint(), nil
}

// GossipLiveness is a Liveness over gossip membership: an organisation is
// down if gossip knows nodes of it and none is alive or suspect. An
// organisation gossip does not know is taken as alive (deliveries then
// just retry). Use with membership.Membership.Members.
type GossipLiveness struct {
	Members func() []membership.Member
}

// Alive implements Liveness.
func (g GossipLiveness) Alive(org string) bool {
	known := false
	for _, m := range g.Members() {
		if m.OrgID != org {
			continue
		}
		known = true
		if m.State == membership.StateAlive || m.State == membership.StateSuspect {
			return true
		}
	}
	return !known
}
