package keys

import (
	"errors"
	"testing"
	"time"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

const (
	statusActive    = registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE
	statusSuspended = registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED
	statusRetired   = registryv1.OrganisationStatus_ORGANISATION_STATUS_RETIRED
	keyActive       = registryv1.KeyStatus_KEY_STATUS_ACTIVE
	keyRetiring     = registryv1.KeyStatus_KEY_STATUS_RETIRING
	keyRevoked      = registryv1.KeyStatus_KEY_STATUS_REVOKED
)

func TestSigningKeyAt(t *testing.T) {
	t0 := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	ms := t0.UnixMilli()
	org := func(status registryv1.OrganisationStatus, since uint64) *registryv1.Organisation {
		return &registryv1.Organisation{Id: "org-a", Status: status, InactiveSinceIndex: since, Keys: []*registryv1.PublicKey{
			{Kid: "active", Use: UseSig, Status: keyActive},
			{Kid: "retiring", Use: UseSig, Status: keyRetiring, NotAfterUnixMs: ms},
			{Kid: "revoked-at-100", Use: UseSig, Status: keyRevoked, RevokedAtIndex: 100},
			{Kid: "revoked-legacy", Use: UseSig, Status: keyRevoked},
			{Kid: "unspecified", Use: UseSig},
			{Kid: "enc", Use: UseEnc, Status: keyActive},
		}}
	}
	active := org(statusActive, 0)
	for _, tc := range []struct {
		name string
		org  *registryv1.Organisation
		kid  string
		at   Moment
		want error
	}{
		{"active key", active, "active", At(5, t0), nil},
		{"active key now", active, "active", Now(t0), nil},
		{"retiring key in grace", active, "retiring", At(5, t0), nil},
		{"retiring key after grace", active, "retiring", At(5, t0.Add(time.Millisecond)), ErrKeyRetired},
		{"retiring key after grace, early index", active, "retiring", At(1, t0.Add(time.Hour)), ErrKeyRetired},
		{"revoked key before revocation", active, "revoked-at-100", At(99, t0), nil},
		{"revoked key at revocation", active, "revoked-at-100", At(100, t0), ErrKeyRevoked},
		{"revoked key after revocation", active, "revoked-at-100", At(101, t0), ErrKeyRevoked},
		{"revoked key now", active, "revoked-at-100", Now(t0), ErrKeyRevoked},
		{"revoked key, early time does not help", active, "revoked-at-100", At(200, t0.Add(-time.Hour*24*365)), ErrKeyRevoked},
		{"revoked before the index was kept", active, "revoked-legacy", At(1, t0), ErrKeyRevoked},
		{"unknown key status", active, "unspecified", At(1, t0), ErrKeyRetired},
		{"encryption key", active, "enc", At(1, t0), ErrNotSigningKey},
		{"unknown kid", active, "nope", At(1, t0), ErrUnknownKey},
		{"suspended: before", org(statusSuspended, 50), "active", At(49, t0), nil},
		{"suspended: at", org(statusSuspended, 50), "active", At(50, t0), ErrOrgInactive},
		{"suspended: after", org(statusSuspended, 50), "active", At(51, t0), ErrOrgInactive},
		{"suspended: now", org(statusSuspended, 50), "active", Now(t0), ErrOrgInactive},
		{"retired org: before", org(statusRetired, 50), "active", At(10, t0), nil},
		{"retired org: after", org(statusRetired, 50), "active", At(60, t0), ErrOrgInactive},
		{"suspended before the index was kept", org(statusSuspended, 0), "active", At(1, t0), ErrOrgInactive},
		{"suspended, unknown kid", org(statusSuspended, 50), "nope", At(60, t0), ErrOrgInactive},
		{"reinstated: stamp cleared", org(statusActive, 0), "active", At(60, t0), nil},
		{"stale stamp on an active org is ignored", org(statusActive, 50), "active", At(60, t0), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pk, err := SigningKeyAt(tc.org, tc.kid, tc.at)
			if tc.want == nil {
				if err != nil || pk.GetKid() != tc.kid {
					t.Fatalf("got %v, %v; want key %s", pk, err, tc.kid)
				}
				return
			}
			if !errors.Is(err, tc.want) || pk != nil {
				t.Fatalf("got %v, %v; want %v", pk, err, tc.want)
			}
			for _, other := range []error{ErrUnknownKey, ErrNotSigningKey, ErrKeyRevoked, ErrKeyRetired, ErrOrgInactive} {
				if other != tc.want && errors.Is(err, other) {
					t.Fatalf("%v wraps %v too", err, other)
				}
			}
		})
	}
}

func TestStamp(t *testing.T) {
	keys := func(ks ...*registryv1.PublicKey) []*registryv1.PublicKey { return ks }
	k := func(kid string, st registryv1.KeyStatus, revokedAt uint64) *registryv1.PublicKey {
		return &registryv1.PublicKey{Kid: kid, Use: UseSig, Status: st, RevokedAtIndex: revokedAt}
	}
	for _, tc := range []struct {
		name          string
		old, n        *registryv1.Organisation
		index         uint64
		wantRevokedAt map[string]uint64
		wantSince     uint64
	}{
		{
			name:  "new organisation: client values ignored",
			n:     &registryv1.Organisation{Status: statusActive, InactiveSinceIndex: 3, Keys: keys(k("a", keyActive, 9), k("r", keyRevoked, 1))},
			index: 10, wantRevokedAt: map[string]uint64{"a": 0, "r": 10}, wantSince: 0,
		},
		{
			name:  "key revoked now",
			old:   &registryv1.Organisation{Status: statusActive, Keys: keys(k("a", keyActive, 0))},
			n:     &registryv1.Organisation{Status: statusActive, Keys: keys(k("a", keyRevoked, 5))},
			index: 20, wantRevokedAt: map[string]uint64{"a": 20},
		},
		{
			name:  "revoked key keeps its stamp",
			old:   &registryv1.Organisation{Status: statusActive, Keys: keys(k("a", keyRevoked, 20))},
			n:     &registryv1.Organisation{Status: statusActive, Keys: keys(k("a", keyRevoked, 1))},
			index: 30, wantRevokedAt: map[string]uint64{"a": 20},
		},
		{
			name:  "legacy revoked key keeps 0",
			old:   &registryv1.Organisation{Status: statusActive, Keys: keys(k("a", keyRevoked, 0))},
			n:     &registryv1.Organisation{Status: statusActive, Keys: keys(k("a", keyRevoked, 7))},
			index: 30, wantRevokedAt: map[string]uint64{"a": 0},
		},
		{
			name:  "organisation suspended now",
			old:   &registryv1.Organisation{Status: statusActive},
			n:     &registryv1.Organisation{Status: statusSuspended, InactiveSinceIndex: 2},
			index: 40, wantSince: 40,
		},
		{
			name:  "suspended then retired keeps the stamp",
			old:   &registryv1.Organisation{Status: statusSuspended, InactiveSinceIndex: 40},
			n:     &registryv1.Organisation{Status: statusRetired},
			index: 50, wantSince: 40,
		},
		{
			name:  "reinstated",
			old:   &registryv1.Organisation{Status: statusSuspended, InactiveSinceIndex: 40},
			n:     &registryv1.Organisation{Status: statusActive, InactiveSinceIndex: 40},
			index: 60, wantSince: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			Stamp(tc.old, tc.n, tc.index)
			for _, pk := range tc.n.GetKeys() {
				if got := pk.GetRevokedAtIndex(); got != tc.wantRevokedAt[pk.GetKid()] {
					t.Errorf("key %s: revoked_at_index %d, want %d", pk.GetKid(), got, tc.wantRevokedAt[pk.GetKid()])
				}
			}
			if got := tc.n.GetInactiveSinceIndex(); got != tc.wantSince {
				t.Errorf("inactive_since_index %d, want %d", got, tc.wantSince)
			}
		})
	}
}

// Governance statuses: never-approved organisations sign at no position;
// a revoked one from its stamp on, like a retired one.
func TestInactiveAtGovernanceStatuses(t *testing.T) {
	org := func(s registryv1.OrganisationStatus, since uint64) *registryv1.Organisation {
		return &registryv1.Organisation{Id: "x", Status: s, InactiveSinceIndex: since}
	}
	tests := []struct {
		org  *registryv1.Organisation
		at   uint64
		want bool
	}{
		{org(registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, 0), 5, false},
		{org(registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED, 0), 5, true},
		{org(registryv1.OrganisationStatus_ORGANISATION_STATUS_PENDING, 0), 1, true},
		{org(registryv1.OrganisationStatus_ORGANISATION_STATUS_DECLINED, 0), 0, true},
		{org(registryv1.OrganisationStatus_ORGANISATION_STATUS_REVOKED, 10), 9, false},
		{org(registryv1.OrganisationStatus_ORGANISATION_STATUS_REVOKED, 10), 10, true},
		{org(registryv1.OrganisationStatus_ORGANISATION_STATUS_REVOKED, 0), 1, true},
		{org(registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED, 10), 0, true},
	}
	for _, tc := range tests {
		if got := InactiveAt(tc.org, Moment{Index: tc.at}); got != tc.want {
			t.Errorf("%v since %d at %d: inactive %v, want %v", tc.org.GetStatus(), tc.org.GetInactiveSinceIndex(), tc.at, got, tc.want)
		}
	}
	// Stamp records the revocation index like a suspension's.
	n := org(registryv1.OrganisationStatus_ORGANISATION_STATUS_REVOKED, 0)
	Stamp(org(registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, 0), n, 42)
	if n.GetInactiveSinceIndex() != 42 {
		t.Fatalf("revoked at %d, want 42", n.GetInactiveSinceIndex())
	}
}

// A recovery key verifies only as a recovery key, and a signing key only as
// a signing key.
func TestRecoveryKeyAt(t *testing.T) {
	rec, err := GenerateRecovery("rec-1")
	if err != nil {
		t.Fatal(err)
	}
	recPub, err := Published(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParsePublic(recPub); err != nil {
		t.Fatalf("ParsePublic(rec): %v", err)
	}
	sig, err := GenerateSigning("sig-1")
	if err != nil {
		t.Fatal(err)
	}
	sigPub, err := Published(sig)
	if err != nil {
		t.Fatal(err)
	}
	o := &registryv1.Organisation{Id: "op", Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, Keys: []*registryv1.PublicKey{sigPub, recPub}}
	if _, err := RecoveryKeyAt(o, "rec-1", Moment{}); err != nil {
		t.Fatalf("RecoveryKeyAt: %v", err)
	}
	if _, err := SigningKeyAt(o, "rec-1", Moment{}); !errors.Is(err, ErrNotSigningKey) {
		t.Fatalf("SigningKeyAt(rec): %v", err)
	}
	if _, err := RecoveryKeyAt(o, "sig-1", Moment{}); !errors.Is(err, ErrNotSigningKey) {
		t.Fatalf("RecoveryKeyAt(sig): %v", err)
	}
}
