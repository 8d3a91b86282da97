package keys

import (
	"errors"
	"fmt"
	"math"
	"time"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Moment is a position in the registry's order at which a signature is
// judged (see the key rule above). Index 0 means "now": after every change
// the registry has recorded so far.
type Moment struct {
	// Index is the Raft index of the registry state; 0: the current one.
	Index uint64
	// UnixMs is the registry-side time in Unix milliseconds (judges the
	// grace period of RETIRING keys).
	UnixMs int64
}

// At returns the moment at registry index index and time t.
func At(index uint64, t time.Time) Moment { return Moment{Index: index, UnixMs: t.UnixMilli()} }

// Now returns the current moment at time t: after every recorded change.
func Now(t time.Time) Moment { return At(0, t) }

// Time returns the moment's time.
func (m Moment) Time() time.Time { return time.UnixMilli(m.UnixMs).UTC() }

// position is the index compared against the registry's stamps; "now"
// comes after all of them.
func (m Moment) position() uint64 {
	if m.Index == 0 {
		return math.MaxUint64
	}
	return m.Index
}

// Reasons SigningKeyAt refuses a key. Callers wrap them into their own
// sentinels (registry.ErrUnknownKey and ErrPermissionDenied;
// envelope.ErrUnknownKey, ErrRevokedKey and ErrKeyInactive).
var (
	// ErrUnknownKey: the organisation has no key with this kid.
	ErrUnknownKey = errors.New("keys: unknown key")
	// ErrNotSigningKey: the key exists but its use is not "sig" (for
	// RecoveryKeyAt: not "rec").
	ErrNotSigningKey = errors.New("keys: not a signing key")
	// ErrKeyRevoked: the key was revoked at or before the moment.
	ErrKeyRevoked = errors.New("keys: key revoked")
	// ErrKeyRetired: the key is RETIRING and its grace period had ended at
	// the moment (or its status is not one the rule knows).
	ErrKeyRetired = errors.New("keys: key retired")
	// ErrOrgInactive: the organisation was SUSPENDED, REVOKED or RETIRED at
	// the moment, or was never approved (REGISTERED, PENDING, DECLINED).
	ErrOrgInactive = errors.New("keys: organisation inactive")
)

// SigningKeyAt returns the published key kid of org if a signature made
// with it is valid at moment at, following the key rule of this package.
// The error wraps exactly one of ErrUnknownKey, ErrNotSigningKey,
// ErrKeyRevoked, ErrKeyRetired or ErrOrgInactive. The key's JWK is not
// parsed here (see ParsePublic).
func SigningKeyAt(org *registryv1.Organisation, kid string, at Moment) (*registryv1.PublicKey, error) {
	return keyAt(org, kid, at, UseSig)
}

// RecoveryKeyAt is SigningKeyAt for a recovery key (use "rec"): the key a
// network operator signs its own KeyRecovery with when its signing key is
// lost. A "rec" key signs nothing else; the same rule decides its validity.
func RecoveryKeyAt(org *registryv1.Organisation, kid string, at Moment) (*registryv1.PublicKey, error) {
	return keyAt(org, kid, at, UseRec)
}

func keyAt(org *registryv1.Organisation, kid string, at Moment, use string) (*registryv1.PublicKey, error) {
	if InactiveAt(org, at) {
		since := "always"
		if s := org.GetInactiveSinceIndex(); s != 0 {
			since = fmt.Sprintf("registry index %d", s)
		}
		return nil, fmt.Errorf("%w: organisation %s is %s (since %s)", ErrOrgInactive, org.GetId(), org.GetStatus(), since)
	}
	for _, pk := range org.GetKeys() {
		if pk.GetKid() != kid {
			continue
		}
		if pk.GetUse() != use {
			return nil, fmt.Errorf("%w: key %q of %s has use %q, not %q", ErrNotSigningKey, kid, org.GetId(), pk.GetUse(), use)
		}
		switch pk.GetStatus() {
		case registryv1.KeyStatus_KEY_STATUS_ACTIVE:
			return pk, nil
		case registryv1.KeyStatus_KEY_STATUS_RETIRING:
			if at.UnixMs <= pk.GetNotAfterUnixMs() {
				return pk, nil
			}
			return nil, fmt.Errorf("%w: key %q of %s retired at %s, before %s", ErrKeyRetired, kid, org.GetId(),
				time.UnixMilli(pk.GetNotAfterUnixMs()).UTC().Format(time.RFC3339), at.Time().Format(time.RFC3339))
		case registryv1.KeyStatus_KEY_STATUS_REVOKED:
			if r := pk.GetRevokedAtIndex(); r != 0 && at.position() < r {
				return pk, nil
			}
			return nil, fmt.Errorf("%w: key %q of %s (at registry index %d)", ErrKeyRevoked, kid, org.GetId(), pk.GetRevokedAtIndex())
		default:
			return nil, fmt.Errorf("%w: key %q of %s has status %s", ErrKeyRetired, kid, org.GetId(), pk.GetStatus())
		}
	}
	return nil, fmt.Errorf("%w: %q is not a key of %s", ErrUnknownKey, kid, org.GetId())
}

// InactiveAt reports whether org could not sign at moment at: SUSPENDED,
// REVOKED or RETIRED from its inactive_since_index on (at every position if
// that is 0), and REGISTERED, PENDING or DECLINED at every position (never
// approved: such an organisation signs nothing but its own join request,
// which the registry verifies against the key the request carries).
func InactiveAt(org *registryv1.Organisation, at Moment) bool {
	switch org.GetStatus() {
	case registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED,
		registryv1.OrganisationStatus_ORGANISATION_STATUS_RETIRED,
		registryv1.OrganisationStatus_ORGANISATION_STATUS_REVOKED:
		s := org.GetInactiveSinceIndex()
		return s == 0 || at.position() >= s
	case registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED,
		registryv1.OrganisationStatus_ORGANISATION_STATUS_PENDING,
		registryv1.OrganisationStatus_ORGANISATION_STATUS_DECLINED:
		return true
	}
	return false
}

// Inactive reports whether status makes an approved organisation inactive
// from some registry index on (SUSPENDED, REVOKED, RETIRED): the statuses
// Stamp records inactive_since_index for. Organisations never approved
// (REGISTERED, PENDING, DECLINED) are inactive at every position instead
// (see InactiveAt).
func Inactive(status registryv1.OrganisationStatus) bool {
	return status == registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED ||
		status == registryv1.OrganisationStatus_ORGANISATION_STATUS_RETIRED ||
		status == registryv1.OrganisationStatus_ORGANISATION_STATUS_REVOKED
}

// Stamp sets the registry-kept fields of the key rule on n, the new record
// of an organisation written by the log entry at index; old is its stored
// record (nil if new). Client-provided values are overwritten: a key
// revoked now gets revoked_at_index = index, a key already revoked keeps
// its stamp, other keys get 0; the organisation gets inactive_since_index =
// index when it becomes inactive, keeps its stamp while it stays inactive,
// and 0 while active. Deterministic: depends on old, n and index only.
func Stamp(old, n *registryv1.Organisation, index uint64) {
	wasRevoked := map[string]uint64{}
	for _, pk := range old.GetKeys() {
		if pk.GetStatus() == registryv1.KeyStatus_KEY_STATUS_REVOKED {
			wasRevoked[pk.GetKid()] = pk.GetRevokedAtIndex()
		}
	}
	for _, pk := range n.GetKeys() {
		switch r, ok := wasRevoked[pk.GetKid()]; {
		case pk.GetStatus() != registryv1.KeyStatus_KEY_STATUS_REVOKED:
			pk.RevokedAtIndex = 0
		case ok:
			pk.RevokedAtIndex = r
		default:
			pk.RevokedAtIndex = index
		}
	}
	switch {
	case !Inactive(n.GetStatus()):
		n.InactiveSinceIndex = 0
	case old != nil && Inactive(old.GetStatus()):
		n.InactiveSinceIndex = old.GetInactiveSinceIndex()
	default:
		n.InactiveSinceIndex = index
	}
}
