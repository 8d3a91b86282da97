package handover

import (
	"context"
	"fmt"
	"time"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/keys"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

// Resolver is what the service needs of the registry: the published keys
// (envelope.KeyResolver, judged by the key rule of package keys) and the
// registry's position, recorded with every token the service takes in so
// that the token can be verified again at that moment later.
type Resolver interface {
	envelope.KeyResolver
	// Position returns the registry index of the state the resolver
	// currently answers from.
	Position(ctx context.Context) (uint64, error)
}

// position returns the moment to record with a token arriving at now: the
// registry index read before the token is verified. The token itself is
// verified at the current moment (keys.Now(now)), after every registry
// change so far, so whatever verifies then verifies again later at the
// recorded moment (see package keys).
func (s *Service) position(ctx context.Context, now time.Time) (keys.Moment, error) {
	idx, err := s.cfg.Resolver.Position(ctx)
	if err != nil {
		return keys.Moment{}, fmt.Errorf("handover: %w", err)
	}
	return keys.At(idx, now), nil
}

// MomentFromProto returns the registry moment a node recorded with a token
// (OutboxEntry.receipt_recorded, TimelineItem.recorded), to verify the
// token at. A token without a recorded moment (nil, or no index: stored
// before nodes recorded one) is judged at the current moment, keys.Now(now).
func MomentFromProto(m *federationv1.RegistryMoment, now time.Time) keys.Moment {
	if m.GetIndex() == 0 {
		return keys.Now(now)
	}
	return keys.Moment{Index: m.GetIndex(), UnixMs: m.GetUnixMs()}
}

// momentProto is the wire form of a recorded moment (nil if none).
func momentProto(index uint64, unixMs int64) *federationv1.RegistryMoment {
	if index == 0 {
		return nil
	}
	return &federationv1.RegistryMoment{Index: index, UnixMs: unixMs}
}
