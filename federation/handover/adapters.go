package handover

import (
	"context"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/federation/membership"
	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// RegistryKeys is a Resolver (keys, registry position) and Directory over
// the registry's organisations, for the node to plug in:
//
//	handover.RegistryKeys{
//		Lookup: func(_ context.Context, id string) (*registryv1.Organisation, uint64, error) {
//			return reader.Organisation(id)
//		},
//	}
//
// Signing keys follow the key rule of package keys (keys.SigningKeyAt),
// the same rule the registry applies to commands. The encryption key is the
// organisation's ACTIVE "enc" key. The endpoint is
// Organisation.api_endpoint.
type RegistryKeys struct {
	// Lookup returns the organisation's record and the registry index of
	// the state it was read from (the applied index of the snapshot).
	Lookup func(ctx context.Context, org string) (*registryv1.Organisation, uint64, error)
	// Self is the organisation of this node; Position reads the registry
	// index through its record.
	Self string
}

var (
	_ Resolver  = RegistryKeys{}
	_ Directory = RegistryKeys{}
)

func (r RegistryKeys) org(ctx context.Context, id string) (*registryv1.Organisation, error) {
	o, _, err := r.Lookup(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("%w: organisation %q: %v", envelope.ErrUnknownKey, id, err)
	}
	return o, nil
}

// Position implements Resolver: the applied index of the registry state
// Lookup reads from.
func (r RegistryKeys) Position(ctx context.Context) (uint64, error) {
	_, idx, err := r.Lookup(ctx, r.Self)
	if err != nil {
		return 0, fmt.Errorf("registry position (looking up %q): %w", r.Self, err)
	}
	return idx, nil
}

// VerificationKey implements envelope.KeyResolver by the key rule
// (keys.SigningKeyAt), mapping its refusals onto envelope's sentinels: a
// suspended or retired organisation and a retired key are ErrKeyInactive,
// a revoked key ErrRevokedKey, anything else ErrUnknownKey.
func (r RegistryKeys) VerificationKey(ctx context.Context, org, kid string, at keys.Moment) (jose.JSONWebKey, error) {
	o, err := r.org(ctx, org)
	if err != nil {
		return jose.JSONWebKey{}, err
	}
	pk, err := keys.SigningKeyAt(o, kid, at)
	switch {
	case err == nil:
	case errors.Is(err, keys.ErrKeyRevoked):
		return jose.JSONWebKey{}, fmt.Errorf("%w: %v", envelope.ErrRevokedKey, err)
	case errors.Is(err, keys.ErrOrgInactive), errors.Is(err, keys.ErrKeyRetired):
		return jose.JSONWebKey{}, fmt.Errorf("%w: %v", envelope.ErrKeyInactive, err)
	default:
		return jose.JSONWebKey{}, fmt.Errorf("%w: %v", envelope.ErrUnknownKey, err)
	}
	k, err := keys.ParsePublic(pk)
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("%w: %v", envelope.ErrInvalidKey, err)
	}
	return k, nil
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
	o, _, err := r.Lookup(ctx, org)
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
