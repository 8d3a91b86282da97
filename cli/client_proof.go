package cli

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// verifyProof checks a provider's proof of responsibility offline, from the
// proof alone (the signed commands and the signers' registry records it
// carries): the offering was put by the provider itself, signed with a key
// valid at the index that applied it; its matched area is the provider's
// own, or an authorisation signed by the area's responsible body entitles
// it to serve that area and service.
// TODO(merge s8-proofs): registry.VerifyProof.
func verifyProof(p *registryv1.Provider) error {
	pr := p.GetProof()
	if pr == nil {
		return errors.New("no proof in the answer (does the node support include_proof?)")
	}
	signers := map[string]*registryv1.Organisation{}
	for _, o := range pr.GetSigners() {
		signers[o.GetId()] = o
	}
	off := p.GetOffering()
	provider := off.GetOrganisationId()
	sc, err := verifyAt(pr.GetOfferingCommand(), signers, registry.IndexOfRevision(off.GetRevision()))
	if err != nil {
		return fmt.Errorf("offering command: %w", err)
	}
	if sc.Command.GetIssuer() != provider {
		return fmt.Errorf("offering %s was signed by %s, not by its organisation %s", off.GetId(), sc.Command.GetIssuer(), provider)
	}
	found := false
	for _, m := range sc.Command.GetMutations() {
		if put := m.GetPutOffering(); put != nil && sameOffering(put, off) {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("the signed command %s does not put offering %s as answered", sc.Command.GetId(), off.GetId())
	}
	area := p.GetMatchedArea()
	if area == "" {
		return errors.New("the answer names no matched area")
	}
	if within(area, ownArea(signers[provider])) {
		return nil
	}
	a := pr.GetAuthorisation()
	if a == nil {
		return fmt.Errorf("area %s is not %s's own and the proof carries no authorisation", area, provider)
	}
	asc, err := verifyAt(pr.GetAuthorisationCommand(), signers, registry.IndexOfRevision(a.GetRevision()))
	if err != nil {
		return fmt.Errorf("authorisation command: %w", err)
	}
	if asc.Command.GetIssuer() != a.GetGrantorId() {
		return fmt.Errorf("authorisation %s was signed by %s, not by its grantor %s", a.GetId(), asc.Command.GetIssuer(), a.GetGrantorId())
	}
	found = false
	for _, m := range asc.Command.GetMutations() {
		if put := m.GetPutAuthorisation(); put != nil && sameAuthorisation(put, a) {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("the signed command %s does not grant authorisation %s as answered", asc.Command.GetId(), a.GetId())
	}
	if a.GetGranteeId() != provider {
		return fmt.Errorf("authorisation %s entitles %s, not %s", a.GetId(), a.GetGranteeId(), provider)
	}
	if !within(area, a.GetAreas()) {
		return fmt.Errorf("authorisation %s does not cover area %s", a.GetId(), area)
	}
	if len(a.GetLeikaKeys()) > 0 && !slices.Contains(a.GetLeikaKeys(), off.GetLeikaKey()) {
		return fmt.Errorf("authorisation %s does not cover service %s", a.GetId(), off.GetLeikaKey())
	}
	grantor := signers[a.GetGrantorId()]
	if m := a.GetOnBehalfOf(); m != "" {
		switch grantor.GetKind() {
		case registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT, registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY:
		default:
			return fmt.Errorf("authorisation %s: %s (%s) may not grant on behalf of a municipality", a.GetId(), grantor.GetId(), kindName(grantor.GetKind()))
		}
		if !within(m, ownArea(grantor)) || !strings.HasPrefix(area, m) {
			return fmt.Errorf("authorisation %s: %s is not responsible for %s on behalf of %s", a.GetId(), grantor.GetId(), area, m)
		}
		return nil
	}
	if !within(area, ownArea(grantor)) {
		return fmt.Errorf("authorisation %s: area %s is not within its grantor %s's own area", a.GetId(), area, grantor.GetId())
	}
	return nil
}

// verifyAt parses and verifies a signed command against its issuer's
// record among signers, with the key valid at index.
func verifyAt(raw string, signers map[string]*registryv1.Organisation, index uint64) (*registry.SignedCommand, error) {
	sc, err := registry.ParseCommand(raw)
	if err != nil {
		return nil, err
	}
	org := signers[sc.Command.GetIssuer()]
	if org == nil {
		return nil, fmt.Errorf("the proof carries no record of the signer %s", sc.Command.GetIssuer())
	}
	pk, err := keys.SigningKeyAt(org, sc.KID, keys.Moment{Index: index, UnixMs: sc.Command.GetIssuedAtUnixMs()})
	if err != nil {
		return nil, err
	}
	jwk, err := keys.ParsePublic(pk)
	if err != nil {
		return nil, err
	}
	return sc, sc.Verify(jwk)
}

func sameOffering(a, b *registryv1.Offering) bool {
	x, y := proto.Clone(a).(*registryv1.Offering), proto.Clone(b).(*registryv1.Offering)
	for _, o := range []*registryv1.Offering{x, y} {
		o.Revision, o.UpdatedAtUnixMs, o.UpdatedBy, o.CommandId = 0, 0, "", ""
	}
	return proto.Equal(x, y)
}

func sameAuthorisation(a, b *registryv1.Authorisation) bool {
	x, y := proto.Clone(a).(*registryv1.Authorisation), proto.Clone(b).(*registryv1.Authorisation)
	for _, o := range []*registryv1.Authorisation{x, y} {
		o.Revision, o.UpdatedAtUnixMs, o.UpdatedBy, o.CommandId = 0, 0, "", ""
	}
	return proto.Equal(x, y)
}

// ownArea is the area an organisation is responsible for by its kind
// (ARS prefixes; "" is every area), as the registry's rules define it.
func ownArea(o *registryv1.Organisation) []string {
	ars := o.GetArs()
	switch o.GetKind() {
	case registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY:
		if len(ars) == 12 {
			return []string{ars}
		}
	case registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPAL_ASSOCIATION:
		if len(ars) >= 9 {
			return []string{ars[:9]}
		}
	case registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT:
		if len(ars) >= 5 {
			return []string{ars[:5]}
		}
	case registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY:
		if o.GetStateCode() != "" {
			return []string{o.GetStateCode()}
		}
	case registryv1.OrganisationKind_ORGANISATION_KIND_FEDERAL_AGENCY:
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
