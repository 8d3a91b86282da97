package registry

import (
	"strings"
	"testing"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// The FSM applies the key rule (keys.SigningKeyAt) at the index of the log
// entry that records a command, and stamps the rule's fields itself: a
// suspended organisation's commands are refused from the suspension on,
// also commands it signed (and dated) before, and what clients send in the
// stamp fields is ignored.
func TestKeyRuleSuspension(t *testing.T) {
	w := newWorld(t)
	// Signed and dated before the suspension, recorded after it.
	early := w.signed(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))

	// A client's stamp is ignored.
	rec := w.muni.clone()
	rec.InactiveSinceIndex = 1
	w.mustApply(w.signed(w.muni, mPutOrg(rec)))
	if s := getOrg(t, w.r, arsMuni).GetInactiveSinceIndex(); s != 0 {
		t.Fatalf("inactive_since_index %d on an active organisation", s)
	}
	w.mustApply(w.signed(w.state, mChangeStatus(arsMuni, registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED, "Prüfung", "")))
	suspendedAt := w.index
	got := getOrg(t, w.r, arsMuni)
	if got.GetInactiveSinceIndex() != suspendedAt {
		t.Fatalf("inactive_since_index %d, want the suspending entry's index %d", got.GetInactiveSinceIndex(), suspendedAt)
	}

	res := w.apply1(early)
	requireCode(t, res, CodePermissionDenied)
	if !strings.Contains(res.GetErrorMessage(), "SUSPENDED") {
		t.Fatalf("refusal does not name the suspension: %s", res.GetErrorMessage())
	}
	requireCode(t, w.apply1(w.signed(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))), CodePermissionDenied)

	// The stored record answers for earlier moments: the key was good then.
	if _, err := keys.SigningKeyAt(got, w.muni.key.KeyID, keys.Moment{Index: suspendedAt - 1, UnixMs: w.now}); err != nil {
		t.Fatalf("before the suspension: %v", err)
	}

	// Reinstated: the stamp is cleared and commands are accepted again.
	w.mustApply(w.signed(w.state, mChangeStatus(arsMuni, registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, "geprüft", "")))
	if s := getOrg(t, w.r, arsMuni).GetInactiveSinceIndex(); s != 0 {
		t.Fatalf("reinstated organisation has inactive_since_index %d", s)
	}
	w.mustApply(w.signed(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))))
}

func TestKeyRuleRevocationStamp(t *testing.T) {
	w := newWorld(t)
	next, nextPub := newSigningKey(t, "musterdorf-2")
	old := w.muni.key

	// Self-service: a new key, and a forged stamp on the active one.
	rec := w.muni.clone()
	rec.Keys[0].RevokedAtIndex = 999
	rec.Keys = append(rec.Keys, nextPub)
	w.mustApply(w.signed(w.muni, mPutOrg(rec)))
	stored := getOrg(t, w.r, arsMuni)
	for _, pk := range stored.GetKeys() {
		if pk.GetRevokedAtIndex() != 0 {
			t.Fatalf("active key %s stored with revoked_at_index %d", pk.GetKid(), pk.GetRevokedAtIndex())
		}
	}
	rev := stored.GetRevision()

	// Sending the record again with a forged stamp is no change at all.
	w.mustApply(w.signed(w.muni, mPutOrg(rec)))
	if r := getOrg(t, w.r, arsMuni).GetRevision(); r != rev {
		t.Fatalf("a client stamp made a new revision %d (was %d)", r, rev)
	}

	// The organisation revokes its old key, signing with the new one.
	w.muni.key = next
	rec.Keys[0].Status = registryv1.KeyStatus_KEY_STATUS_REVOKED
	rec.Keys[0].RevokedAtIndex = 1 // forged: would make the key invalid for ever
	w.mustApply(w.signed(w.muni, mPutOrg(rec)))
	revokedAt := w.index
	stored = getOrg(t, w.r, arsMuni)
	if r := stored.GetKeys()[0].GetRevokedAtIndex(); r != revokedAt {
		t.Fatalf("revoked_at_index %d, want the revoking entry's index %d", r, revokedAt)
	}
	// Sent again with another forged stamp: the first stamp stays.
	rec.Keys[0].RevokedAtIndex = revokedAt + 50
	w.mustApply(w.signed(w.muni, mPutOrg(rec)))
	if r := getOrg(t, w.r, arsMuni).GetKeys()[0].GetRevokedAtIndex(); r != revokedAt {
		t.Fatalf("revoked_at_index changed to %d by a client", r)
	}

	// The old key signs nothing from the revocation on.
	w.muni.key = old
	requireCode(t, w.apply1(w.signed(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))), CodeUnknownKey)
	// ... but the stored record still says it was valid before.
	if _, err := keys.SigningKeyAt(stored, old.KeyID, keys.Moment{Index: revokedAt - 1, UnixMs: w.now}); err != nil {
		t.Fatalf("before the revocation: %v", err)
	}
}
