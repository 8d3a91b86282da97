package registry

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// The governance terms of the registry (see the README's governance model).
// Every decision is a function of the stored state and the command alone, so
// every replica refuses the same commands with the same message.

const (
	kindMunicipality = registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY
	kindAssociation  = registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPAL_ASSOCIATION
	kindDistrict     = registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT
	kindStateAgency  = registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY
	kindFederal      = registryv1.OrganisationKind_ORGANISATION_KIND_FEDERAL_AGENCY
	kindOperator     = registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR

	statusUnspecified = registryv1.OrganisationStatus_ORGANISATION_STATUS_UNSPECIFIED
	statusRegistered  = registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED
	statusActive      = registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE
	statusSuspended   = registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED
	statusRetired     = registryv1.OrganisationStatus_ORGANISATION_STATUS_RETIRED
	statusPending     = registryv1.OrganisationStatus_ORGANISATION_STATUS_PENDING
	statusDeclined    = registryv1.OrganisationStatus_ORGANISATION_STATUS_DECLINED
	statusRevoked     = registryv1.OrganisationStatus_ORGANISATION_STATUS_REVOKED
)

// stateOf is the state (Land) an organisation belongs to: its state_code,
// else the first two digits of its ARS, else "" (none: federal level).
func stateOf(o *registryv1.Organisation) string {
	switch {
	case o.GetStateCode() != "":
		return o.GetStateCode()
	case len(o.GetArs()) >= 2:
		return o.GetArs()[:2]
	}
	return ""
}

// federalLevel reports whether the network operator (not a state agency)
// approves o: state and federal agencies, the operator, and organisations
// without a state.
func federalLevel(o *registryv1.Organisation) bool {
	switch o.GetKind() {
	case kindStateAgency, kindFederal, kindOperator:
		return true
	}
	return stateOf(o) == ""
}

// isApprover reports whether issuer (an organisation record, nil during
// genesis) is an approver of target: the network operator for federal-level
// organisations, otherwise an ACTIVE state agency of the target's state. The
// operator does not approve organisations of a state ("one responsible
// editing office per state").
func isApprover(issuer *registryv1.Organisation, operator string, target *registryv1.Organisation) bool {
	if issuer == nil || issuer.GetStatus() != statusActive {
		return false
	}
	if federalLevel(target) {
		return operator != "" && issuer.GetId() == operator
	}
	return issuer.GetKind() == kindStateAgency && stateOf(issuer) == stateOf(target)
}

// approverName describes who approves target, for refusals.
func approverName(operator string, target *registryv1.Organisation) string {
	if federalLevel(target) {
		return "the network operator " + operator
	}
	return "a state agency of state " + stateOf(target)
}

// ownArea returns the ARS prefixes an organisation is the responsible body
// of: a municipality its ARS, an association its first 9 digits, a district
// its first 5, a state agency its state code, a federal agency every area
// (""), anyone else (and anyone without an ARS) none.
func ownArea(o *registryv1.Organisation) []string {
	ars := o.GetArs()
	switch o.GetKind() {
	case kindMunicipality:
		if len(ars) == 12 {
			return []string{ars}
		}
	case kindAssociation:
		if len(ars) >= 9 {
			return []string{ars[:9]}
		}
	case kindDistrict:
		if len(ars) >= 5 {
			return []string{ars[:5]}
		}
	case kindStateAgency:
		if s := stateOf(o); s != "" {
			return []string{s}
		}
	case kindFederal:
		return []string{""}
	}
	return nil
}

// within reports whether area lies within one of the prefixes.
func within(area string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(area, p) {
			return true
		}
	}
	return false
}

// joined reports whether an organisation has been approved and not revoked.
func joined(o *registryv1.Organisation) bool {
	return o.GetStatus() == statusActive || o.GetStatus() == statusSuspended
}

// final reports whether a status can never change again.
func final(s registryv1.OrganisationStatus) bool { return s == statusRevoked || s == statusRetired }

// hasActiveSigKey reports whether keys hold an ACTIVE signing key.
func hasActiveSigKey(ks []*registryv1.PublicKey) bool {
	for _, pk := range ks {
		if pk.GetUse() == keys.UseSig && pk.GetStatus() == registryv1.KeyStatus_KEY_STATUS_ACTIVE {
			return true
		}
	}
	return false
}

// KeysDigest returns the hex SHA-256 of a canonical encoding of ks: one line
// "kid|use|alg|jwk_json\n" per key, sorted by kid. An approver signs it in
// ChangeOrganisationStatus.keys_sha256 to approve exactly the keys it checked.
func KeysDigest(ks []*registryv1.PublicKey) string {
	sorted := slices.Clone(ks)
	slices.SortFunc(sorted, func(a, b *registryv1.PublicKey) int { return strings.Compare(a.GetKid(), b.GetKid()) })
	h := sha256.New()
	for _, pk := range sorted {
		fmt.Fprintf(h, "%s|%s|%s|%s\n", pk.GetKid(), pk.GetUse(), pk.GetAlg(), pk.GetJwkJson())
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ruleErr is a refusal naming the governance rule it enforces.
func ruleErr(sentinel error, rule, format string, args ...any) error {
	return fmt.Errorf("%w: rule %s: %s", sentinel, rule, fmt.Sprintf(format, args...))
}

// Names of the rules, as they appear in refusals.
const (
	ruleOrgApprover     = "organisation-approver"
	ruleOwnRecord       = "own-record"
	ruleJoin            = "join"
	ruleStatus          = "status-transition"
	ruleRecovery        = "key-recovery"
	ruleKeysKept        = "keys-kept"
	ruleAuthGrantor     = "authorisation-grantor"
	ruleAuthArea        = "authorisation-area"
	ruleAreaResponsible = "area-responsibility"
	ruleOwnOfferings    = "own-offerings"
	ruleNotApproved     = "not-approved"
	ruleSuspended       = "suspended"
	ruleRevoked         = "revoked"
	ruleCatalogue       = "catalogue"
)
