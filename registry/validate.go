package registry

import (
	"fmt"
	"net/url"
	"regexp"
	"unicode/utf8"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Limits on what the registry stores. They bound memory and log size, and
// every value beyond them is refused with ErrInvalidArgument or ErrTooLarge.
const (
	MaxSignedCommandBytes = 1 << 20 // one JWS
	MaxMutations          = 1000    // per command
	MaxCommandsPerRequest = 1000
	MaxNameLen            = 300
	MaxTextLen            = 64 << 10
	MaxListLen            = 200
	MaxKeys               = 16
	MaxReasonLen          = 1000 // status and recovery reasons
)

var (
	reARS       = regexp.MustCompile(`^\d{12}$`)
	reAGS       = regexp.MustCompile(`^\d{8}$`)
	reLeiKa     = regexp.MustCompile(`^99\d{12}$`)
	reSlug      = regexp.MustCompile(`^[a-z][a-z0-9-]{2,62}$`)
	reState     = regexp.MustCompile(`^\d{2}$`)
	reCommandID = regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)
	reOffering  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9:._-]{2,127}$`)
	reLang      = regexp.MustCompile(`^[a-z]{2}$`)
	reHex64     = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidARS reports whether s is a 12-digit Regionalschlüssel.
func ValidARS(s string) bool { return reARS.MatchString(s) }

// ValidAGS reports whether s is an 8-digit Amtlicher Gemeindeschlüssel.
func ValidAGS(s string) bool { return reAGS.MatchString(s) }

// ValidLeiKa reports whether s is a 14-digit LeiKa service key.
func ValidLeiKa(s string) bool { return reLeiKa.MatchString(s) }

// ValidOrgID reports whether s is an organisation id: an ARS or a slug.
func ValidOrgID(s string) bool { return reARS.MatchString(s) || reSlug.MatchString(s) }

// ValidAreaPrefix reports whether s is an ARS prefix at a level boundary:
// state (2), government region (3), district (5), association (9) or
// municipality (12).
func ValidAreaPrefix(s string) bool {
	switch len(s) {
	case 2, 3, 5, 9, 12:
	default:
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func checkText(field, s string, max int, required bool) error {
	if required && s == "" {
		return invalid("%s is required", field)
	}
	if len(s) > max {
		return fmt.Errorf("%w: %s is %d bytes, at most %d", ErrTooLarge, field, len(s), max)
	}
	if !utf8.ValidString(s) {
		return invalid("%s is not valid UTF-8", field)
	}
	return nil
}

func checkList(field string, xs []string, max int, each func(string) error) error {
	if len(xs) > MaxListLen {
		return fmt.Errorf("%w: %s has %d entries, at most %d", ErrTooLarge, field, len(xs), MaxListLen)
	}
	for i, x := range xs {
		if err := checkText(fmt.Sprintf("%s[%d]", field, i), x, max, true); err != nil {
			return err
		}
		if each != nil {
			if err := each(x); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkURL(field, s string) error {
	if s == "" {
		return nil
	}
	if err := checkText(field, s, 2048, false); err != nil {
		return err
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return invalid("%s %q is not an http(s) URL", field, s)
	}
	return nil
}

// ValidateCommand checks the structure of a command: identifiers, sizes and
// required fields. It needs no state; authorisation happens in the FSM.
func ValidateCommand(c *registryv1.Command) error {
	if !ValidOrgID(c.GetIssuer()) {
		return invalid("issuer %q is not an organisation id (12-digit ARS or slug)", c.GetIssuer())
	}
	if !reCommandID.MatchString(c.GetId()) {
		return invalid("command id %q must be 16-64 characters of [A-Za-z0-9_-]", c.GetId())
	}
	if c.GetIssuedAtUnixMs() <= 0 {
		return invalid("issued_at_unix_ms is required")
	}
	n := len(c.GetMutations())
	if n == 0 {
		return invalid("command has no mutations")
	}
	if n > MaxMutations {
		return fmt.Errorf("%w: %d mutations, at most %d", ErrTooLarge, n, MaxMutations)
	}
	for i, m := range c.GetMutations() {
		if err := ValidateMutation(m); err != nil {
			return fmt.Errorf("mutation %d: %w", i, err)
		}
		if j := m.GetRequestJoin(); j != nil && (n != 1 || j.GetId() != c.GetIssuer()) {
			return invalid("mutation %d: a join request is its command's only mutation and names its issuer", i)
		}
	}
	return nil
}

// ValidateMutation checks one mutation.
func ValidateMutation(m *registryv1.Mutation) error {
	switch op := m.GetOp().(type) {
	case *registryv1.Mutation_PutOrganisation:
		return ValidateOrganisation(op.PutOrganisation)
	case *registryv1.Mutation_PutService:
		return ValidateService(op.PutService)
	case *registryv1.Mutation_PutOffering:
		return ValidateOffering(op.PutOffering)
	case *registryv1.Mutation_DeleteOffering:
		if !reOffering.MatchString(op.DeleteOffering) {
			return invalid("offering id %q is invalid", op.DeleteOffering)
		}
		return nil
	case *registryv1.Mutation_PutAuditHead:
		h := op.PutAuditHead
		if !ValidOrgID(h.GetOrganisationId()) {
			return invalid("audit head organisation %q is invalid", h.GetOrganisationId())
		}
		if !reHex64.MatchString(h.GetHash()) {
			return invalid("audit head hash must be 64 lower-case hex digits")
		}
		return nil
	case *registryv1.Mutation_RequestJoin:
		return ValidateJoinRequest(op.RequestJoin)
	case *registryv1.Mutation_ChangeStatus:
		return ValidateStatusChange(op.ChangeStatus)
	case *registryv1.Mutation_RecoverKeys:
		return ValidateKeyRecovery(op.RecoverKeys)
	case *registryv1.Mutation_PutAuthorisation:
		return ValidateAuthorisation(op.PutAuthorisation)
	case *registryv1.Mutation_WithdrawAuthorisation:
		if !reOffering.MatchString(op.WithdrawAuthorisation) {
			return invalid("authorisation id %q is invalid", op.WithdrawAuthorisation)
		}
		return nil
	case *registryv1.Mutation_PutNextSteps:
		return ValidateNextSteps(op.PutNextSteps)
	case *registryv1.Mutation_DeleteNextSteps:
		if !reNextStepsID.MatchString(op.DeleteNextSteps) {
			return invalid("next steps id %q must be 1-64 characters of [a-z0-9-]", op.DeleteNextSteps)
		}
		return nil
	case nil:
		return invalid("mutation has no operation")
	default:
		return invalid("unknown mutation %T", op)
	}
}

// ValidateOrganisation checks an organisation record.
func ValidateOrganisation(o *registryv1.Organisation) error {
	if o == nil {
		return invalid("organisation is empty")
	}
	if !ValidOrgID(o.GetId()) {
		return invalid("organisation id %q must be a 12-digit ARS or a slug [a-z][a-z0-9-]{2,62}", o.GetId())
	}
	if _, ok := registryv1.OrganisationKind_name[int32(o.GetKind())]; !ok || o.GetKind() == registryv1.OrganisationKind_ORGANISATION_KIND_UNSPECIFIED {
		return invalid("organisation %s: kind is required", o.GetId())
	}
	if _, ok := registryv1.OrganisationStatus_name[int32(o.GetStatus())]; !ok {
		return invalid("organisation %s: unknown status %d", o.GetId(), o.GetStatus())
	}
	if err := checkText("name", o.GetName(), MaxNameLen, true); err != nil {
		return err
	}
	if o.GetStateCode() != "" && !reState.MatchString(o.GetStateCode()) {
		return invalid("organisation %s: state_code %q must be 2 digits", o.GetId(), o.GetStateCode())
	}
	if o.GetArs() != "" && !ValidARS(o.GetArs()) {
		return invalid("organisation %s: ars %q must be 12 digits", o.GetId(), o.GetArs())
	}
	if o.GetAgs() != "" && !ValidAGS(o.GetAgs()) {
		return invalid("organisation %s: ags %q must be 8 digits", o.GetId(), o.GetAgs())
	}
	if o.GetParentId() != "" && !ValidOrgID(o.GetParentId()) {
		return invalid("organisation %s: parent_id %q is invalid", o.GetId(), o.GetParentId())
	}
	if l := o.GetLocation(); l != nil && (l.GetLat() < -90 || l.GetLat() > 90 || l.GetLon() < -180 || l.GetLon() > 180) {
		return invalid("organisation %s: location out of range", o.GetId())
	}
	if err := checkURL("api_endpoint", o.GetApiEndpoint()); err != nil {
		return err
	}
	if err := checkText("postal_code", o.GetPostalCode(), 16, false); err != nil {
		return err
	}
	return validateKeys(o.GetId(), o.GetKeys())
}

// validateKeys checks a key set of organisation id: bounded, unique kids,
// each a valid public JWK with a status.
func validateKeys(id string, ks []*registryv1.PublicKey) error {
	if len(ks) > MaxKeys {
		return fmt.Errorf("%w: %d keys, at most %d", ErrTooLarge, len(ks), MaxKeys)
	}
	seen := map[string]bool{}
	for _, k := range ks {
		if seen[k.GetKid()] {
			return invalid("organisation %s: duplicate kid %q", id, k.GetKid())
		}
		seen[k.GetKid()] = true
		if _, ok := registryv1.KeyStatus_name[int32(k.GetStatus())]; !ok || k.GetStatus() == registryv1.KeyStatus_KEY_STATUS_UNSPECIFIED {
			return invalid("organisation %s: key %q has no status", id, k.GetKid())
		}
		if err := checkText("kid", k.GetKid(), 128, true); err != nil {
			return err
		}
		if err := checkText("jwk_json", k.GetJwkJson(), 4096, true); err != nil {
			return err
		}
		if _, err := keys.ParsePublic(k); err != nil {
			return fmt.Errorf("%w: organisation %s: %v", ErrInvalidArgument, id, err)
		}
	}
	return nil
}

// requireActiveSigKey refuses a key set without an ACTIVE signing key.
func requireActiveSigKey(id string, ks []*registryv1.PublicKey) error {
	if !hasActiveSigKey(ks) {
		return invalid("organisation %s: the keys hold no active signing key", id)
	}
	return nil
}

func checkReason(s string) error { return checkText("reason", s, MaxReasonLen, true) }

// ValidateJoinRequest checks a join request: an organisation record with an
// active signing key (the request is signed with one of its keys).
func ValidateJoinRequest(o *registryv1.Organisation) error {
	if err := ValidateOrganisation(o); err != nil {
		return err
	}
	return requireActiveSigKey(o.GetId(), o.GetKeys())
}

// ValidateStatusChange checks a status change: a target, a status an
// approver may set (ACTIVE, DECLINED, SUSPENDED, REVOKED) and a reason.
func ValidateStatusChange(c *registryv1.ChangeOrganisationStatus) error {
	if c == nil {
		return invalid("status change is empty")
	}
	if !ValidOrgID(c.GetOrganisationId()) {
		return invalid("status change: organisation id %q is invalid", c.GetOrganisationId())
	}
	switch c.GetStatus() {
	case statusActive, statusDeclined, statusSuspended, statusRevoked:
	default:
		return invalid("status change of %s: status %s is not one an approver sets (ACTIVE, DECLINED, SUSPENDED, REVOKED)", c.GetOrganisationId(), c.GetStatus())
	}
	if c.GetKeysSha256() != "" && !reHex64.MatchString(c.GetKeysSha256()) {
		return invalid("status change of %s: keys_sha256 must be 64 lower-case hex digits", c.GetOrganisationId())
	}
	return checkReason(c.GetReason())
}

// ValidateKeyRecovery checks a key recovery: a target, a valid key set with
// an active signing key, and a reason.
func ValidateKeyRecovery(r *registryv1.KeyRecovery) error {
	if r == nil {
		return invalid("key recovery is empty")
	}
	if !ValidOrgID(r.GetOrganisationId()) {
		return invalid("key recovery: organisation id %q is invalid", r.GetOrganisationId())
	}
	if err := validateKeys(r.GetOrganisationId(), r.GetKeys()); err != nil {
		return err
	}
	if err := requireActiveSigKey(r.GetOrganisationId(), r.GetKeys()); err != nil {
		return err
	}
	return checkReason(r.GetReason())
}

// ValidateAuthorisation checks an authorisation: ids, areas (ARS prefixes at
// level boundaries), LeiKa keys and the municipality it may be granted for.
func ValidateAuthorisation(au *registryv1.Authorisation) error {
	if au == nil {
		return invalid("authorisation is empty")
	}
	if !reOffering.MatchString(au.GetId()) {
		return invalid("authorisation id %q is invalid (3-128 chars of [A-Za-z0-9:._-])", au.GetId())
	}
	if !ValidOrgID(au.GetGrantorId()) || !ValidOrgID(au.GetGranteeId()) {
		return invalid("authorisation %s: grantor %q or grantee %q is not an organisation id", au.GetId(), au.GetGrantorId(), au.GetGranteeId())
	}
	if au.GetGrantorId() == au.GetGranteeId() {
		return invalid("authorisation %s: grantor and grantee are the same", au.GetId())
	}
	if len(au.GetAreas()) == 0 {
		return invalid("authorisation %s: at least one area is required", au.GetId())
	}
	if err := checkList("areas", au.GetAreas(), 12, func(a string) error {
		if !ValidAreaPrefix(a) {
			return invalid("authorisation %s: area %q must be an ARS prefix of 2, 3, 5, 9 or 12 digits", au.GetId(), a)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := checkList("leika_keys", au.GetLeikaKeys(), 14, func(l string) error {
		if !ValidLeiKa(l) {
			return invalid("authorisation %s: LeiKa key %q must match ^99\\d{12}$", au.GetId(), l)
		}
		return nil
	}); err != nil {
		return err
	}
	if au.GetOnBehalfOf() != "" && !ValidARS(au.GetOnBehalfOf()) {
		return invalid("authorisation %s: on_behalf_of %q must be a 12-digit ARS", au.GetId(), au.GetOnBehalfOf())
	}
	return checkText("note", au.GetNote(), MaxTextLen, false)
}

// ValidateService checks a catalogue entry.
func ValidateService(s *registryv1.Service) error {
	if s == nil {
		return invalid("service is empty")
	}
	if !ValidLeiKa(s.GetLeikaKey()) {
		return invalid("LeiKa key %q must match ^99\\d{12}$", s.GetLeikaKey())
	}
	if err := checkText("name", s.GetName(), MaxNameLen, true); err != nil {
		return err
	}
	if err := checkText("description", s.GetDescription(), MaxTextLen, false); err != nil {
		return err
	}
	if err := checkList("keywords", s.GetKeywords(), MaxNameLen, nil); err != nil {
		return err
	}
	return checkList("life_situations", s.GetLifeSituations(), 100, nil)
}

// ValidateOffering checks an offering.
func ValidateOffering(o *registryv1.Offering) error {
	if o == nil {
		return invalid("offering is empty")
	}
	if !reOffering.MatchString(o.GetId()) {
		return invalid("offering id %q is invalid (3-128 chars of [A-Za-z0-9:._-])", o.GetId())
	}
	if !ValidOrgID(o.GetOrganisationId()) {
		return invalid("offering %s: organisation_id %q is invalid", o.GetId(), o.GetOrganisationId())
	}
	if !ValidLeiKa(o.GetLeikaKey()) {
		return invalid("offering %s: LeiKa key %q must match ^99\\d{12}$", o.GetId(), o.GetLeikaKey())
	}
	if len(o.GetAreas()) == 0 {
		return invalid("offering %s: at least one area is required", o.GetId())
	}
	if err := checkList("areas", o.GetAreas(), 12, func(a string) error {
		if !ValidAreaPrefix(a) {
			return invalid("offering %s: area %q must be an ARS prefix of 2, 3, 5, 9 or 12 digits", o.GetId(), a)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := checkText("name", o.GetName(), MaxNameLen, false); err != nil {
		return err
	}
	if len(o.GetChannels()) > MaxListLen || len(o.GetFees()) > MaxListLen || len(o.GetDocuments()) > MaxListLen {
		return fmt.Errorf("%w: offering %s has too many channels, fees or documents", ErrTooLarge, o.GetId())
	}
	for i, c := range o.GetChannels() {
		if _, ok := registryv1.ChannelKind_name[int32(c.GetKind())]; !ok || c.GetKind() == registryv1.ChannelKind_CHANNEL_KIND_UNSPECIFIED {
			return invalid("offering %s: channel %d has no kind", o.GetId(), i)
		}
		if err := checkURL(fmt.Sprintf("channels[%d].url", i), c.GetUrl()); err != nil {
			return err
		}
		if err := checkText(fmt.Sprintf("channels[%d].address.house_number", i), c.GetAddress().GetHouseNumber(), MaxHouseNumberLen, false); err != nil {
			return err
		}
		for _, f := range []string{c.GetOpeningHours(), c.GetNote(), c.GetPhone(), c.GetEmail()} {
			if err := checkText(fmt.Sprintf("channels[%d]", i), f, 4096, false); err != nil {
				return err
			}
		}
	}
	if err := validateXZuFi(o); err != nil {
		return err
	}
	for i, f := range o.GetFees() {
		if f.GetAmountCents() < 0 || f.GetMaxAmountCents() < 0 {
			return invalid("offering %s: fee %d is negative", o.GetId(), i)
		}
		if err := checkText("fee text", f.GetText(), 4096, false); err != nil {
			return err
		}
	}
	for i, d := range o.GetDocuments() {
		if err := checkText(fmt.Sprintf("documents[%d].name", i), d.GetName(), MaxNameLen, true); err != nil {
			return err
		}
	}
	if err := checkList("languages", o.GetLanguages(), 2, func(l string) error {
		if !reLang.MatchString(l) {
			return invalid("offering %s: language %q must be an ISO 639-1 code", o.GetId(), l)
		}
		return nil
	}); err != nil {
		return err
	}
	if p := o.GetProcessingTime(); p != nil && p.GetMaxDays() != 0 && p.GetMaxDays() < p.GetMinDays() {
		return invalid("offering %s: processing max_days < min_days", o.GetId())
	}
	return checkURL("info_url", o.GetInfoUrl())
}

// MaxHouseNumberLen bounds Address.house_number.
const MaxHouseNumberLen = 32

// validateXZuFi checks the XZuFi fields of an offering: prerequisites,
// legal basis, deadlines and forms, at most MaxListLen entries each; texts
// up to 4096 characters, names up to MaxNameLen, URLs absolute http(s).
func validateXZuFi(o *registryv1.Offering) error {
	if err := checkList("prerequisites", o.GetPrerequisites(), 4096, nil); err != nil {
		return err
	}
	if err := checkList("deadlines", o.GetDeadlines(), 4096, nil); err != nil {
		return err
	}
	if len(o.GetLegalBasis()) > MaxListLen || len(o.GetForms()) > MaxListLen {
		return fmt.Errorf("%w: offering %s has more than %d legal references or forms", ErrTooLarge, o.GetId(), MaxListLen)
	}
	for i, l := range o.GetLegalBasis() {
		if err := checkText(fmt.Sprintf("legal_basis[%d].name", i), l.GetName(), MaxNameLen, true); err != nil {
			return err
		}
		if err := checkURL(fmt.Sprintf("legal_basis[%d].url", i), l.GetUrl()); err != nil {
			return err
		}
	}
	for i, f := range o.GetForms() {
		if err := checkText(fmt.Sprintf("forms[%d].name", i), f.GetName(), MaxNameLen, true); err != nil {
			return err
		}
		if err := checkURL(fmt.Sprintf("forms[%d].url", i), f.GetUrl()); err != nil {
			return err
		}
	}
	return nil
}
