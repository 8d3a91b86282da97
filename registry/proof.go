package registry

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Proofs of responsibility.
//
// FindProvidersWithProof attaches to every provider a ProviderProof: the
// command that put the offering, as its issuer signed it; for an area
// outside the provider's own, the authorisation that entitles it (x/ao)
// with the command that granted it; and the registry records of the
// signers at the answer's index. VerifyProof checks such a proof without
// the registry: every signature against the signer records in the proof,
// and every rule of area responsibility (ownArea, authorisations, grants on
// behalf of a municipality) against the signed content.
//
// What VerifyProof cannot know offline is whether the signer records
// themselves are genuine: it trusts the records in the proof. A caller that
// does not trust the answering node compares the signers' keys with keys it
// knows (pinned, or read from another node); everything else then follows
// from signatures.

// Reasons a proof is refused. Every error of VerifyProof wraps
// ErrInvalidProof and exactly one of the others.
var (
	// ErrInvalidProof: the proof does not establish the provider's
	// responsibility for the area.
	ErrInvalidProof = errors.New("invalid proof of responsibility")
	// ErrProofMissing: the provider carries no proof (or no command in it).
	ErrProofMissing = errors.New("proof missing")
	// ErrProofSignature: a command in the proof is not a valid signature of
	// the expected signer by a key valid when the registry recorded it, or
	// the signer's record is not in the proof.
	ErrProofSignature = errors.New("signature not valid")
	// ErrProofOffering: the offering command does not contain the offering.
	ErrProofOffering = errors.New("offering not in its signed command")
	// ErrProofArea: the matched area is not one the offering serves, or does
	// not contain the citizen's area.
	ErrProofArea = errors.New("area not served by the offering")
	// ErrProofNotEntitled: the area is not the provider's own and the proof
	// holds no authorisation.
	ErrProofNotEntitled = errors.New("area not the provider's own and no authorisation")
	// ErrProofAuthorisation: the authorisation command does not contain the
	// authorisation.
	ErrProofAuthorisation = errors.New("authorisation not in its signed command")
	// ErrProofScope: the authorisation is for another grantee, or does not
	// cover the area or the service.
	ErrProofScope = errors.New("authorisation does not cover the offering")
	// ErrProofGrantor: the grantor is not responsible for the area (not its
	// own area, nor a valid grant on behalf of the area's municipality).
	ErrProofGrantor = errors.New("grantor not responsible for the area")
)

func proofErr(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", ErrInvalidProof, kind, fmt.Sprintf(format, args...))
}

// VerifyProof checks offline that p.Proof establishes p's responsibility
// for serving a citizen of area (a 12-digit ARS or any ARS prefix within
// p.MatchedArea; "" checks p.MatchedArea alone):
//
//   - the offering command verifies with the provider's signing key in the
//     proof's signers (key rule at the index that recorded it) and contains
//     a put_offering equal to p.Offering (registry-set fields aside);
//   - p.MatchedArea is one of the offering's areas and contains area;
//   - the matched area lies within the provider's own area (ownArea), or
//     the proof's authorisation entitles the provider: it names the
//     provider as grantee, covers the matched area and the service, its
//     command verifies with the grantor's key and contains it, and the
//     grantor is responsible for the area: its own area, or a district or
//     state agency granting on behalf of a municipality of its area for
//     that municipality's area.
//
// The error wraps ErrInvalidProof and one of the ErrProof* reasons.
func VerifyProof(p *registryv1.Provider, area string) error {
	pr := p.GetProof() // nil: no offering command, refused as ErrProofMissing below
	off := p.GetOffering()
	provider := off.GetOrganisationId()
	if o := p.GetOrganisation(); o != nil && o.GetId() != provider {
		return proofErr(ErrProofOffering, "offering %s belongs to %s, not to the provider %s", off.GetId(), provider, o.GetId())
	}
	signers := map[string]*registryv1.Organisation{}
	for _, s := range pr.GetSigners() {
		signers[s.GetId()] = s
	}
	cmd, err := verifyProofCommand(pr.GetOfferingCommand(), signers, provider, off.GetRevision(), pr.GetIndex())
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(cmd.GetMutations(), func(m *registryv1.Mutation) bool {
		put := m.GetPutOffering()
		return put != nil && sameContent(put, off, clearOfferingProofMeta)
	}) {
		return proofErr(ErrProofOffering, "command %s by %s does not put offering %s as answered", cmd.GetId(), provider, off.GetId())
	}

	matched := p.GetMatchedArea()
	if !slices.Contains(off.GetAreas(), matched) {
		return proofErr(ErrProofArea, "offering %s does not serve the matched area %q", off.GetId(), matched)
	}
	if area != "" && !within(area, []string{matched}) {
		return proofErr(ErrProofArea, "area %s does not lie within the matched area %s", area, matched)
	}
	if within(matched, ownArea(signers[provider])) {
		return nil
	}

	a := pr.GetAuthorisation()
	if a == nil {
		return proofErr(ErrProofNotEntitled, "%s is not %s's own area and the proof holds no authorisation", matched, provider)
	}
	if a.GetGranteeId() != provider {
		return proofErr(ErrProofScope, "authorisation %s entitles %s, not %s", a.GetId(), a.GetGranteeId(), provider)
	}
	if !within(matched, a.GetAreas()) {
		return proofErr(ErrProofScope, "authorisation %s (areas %s) does not cover %s", a.GetId(), strings.Join(a.GetAreas(), ", "), matched)
	}
	if ks := a.GetLeikaKeys(); len(ks) > 0 && !slices.Contains(ks, off.GetLeikaKey()) {
		return proofErr(ErrProofScope, "authorisation %s does not cover service %s", a.GetId(), off.GetLeikaKey())
	}
	acmd, err := verifyProofCommand(pr.GetAuthorisationCommand(), signers, a.GetGrantorId(), a.GetRevision(), pr.GetIndex())
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(acmd.GetMutations(), func(m *registryv1.Mutation) bool {
		put := m.GetPutAuthorisation()
		return put != nil && sameContent(put, a, clearAuthorisationProofMeta)
	}) {
		return proofErr(ErrProofAuthorisation, "command %s by %s does not grant authorisation %s as shown", acmd.GetId(), a.GetGrantorId(), a.GetId())
	}
	return grantorResponsible(a, signers, matched)
}

// grantorResponsible checks that a's grantor may grant area: its own area,
// or a grant on behalf of a municipality (gov.md rule 5).
func grantorResponsible(a *registryv1.Authorisation, signers map[string]*registryv1.Organisation, area string) error {
	grantor := signers[a.GetGrantorId()]
	m := a.GetOnBehalfOf()
	if m == "" {
		if within(area, ownArea(grantor)) {
			return nil
		}
		return proofErr(ErrProofGrantor, "%s is not within the own area of grantor %s", area, a.GetGrantorId())
	}
	muni := signers[m]
	switch k := grantor.GetKind(); {
	case k != registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT && k != registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY:
		return proofErr(ErrProofGrantor, "grantor %s is a %s: only a district or state agency grants on behalf of a municipality", a.GetGrantorId(), kindName(k))
	case muni == nil:
		return proofErr(ErrProofGrantor, "the record of municipality %s, on whose behalf %s granted, is not in the proof", m, a.GetGrantorId())
	case muni.GetKind() != registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY || !ValidARS(muni.GetArs()):
		return proofErr(ErrProofGrantor, "%s, on whose behalf %s granted, is not a municipality", m, a.GetGrantorId())
	case !within(area, []string{muni.GetArs()}):
		return proofErr(ErrProofGrantor, "%s is not within the area %s of municipality %s", area, muni.GetArs(), m)
	}
	if within(muni.GetArs(), ownArea(grantor)) {
		return nil
	}
	return proofErr(ErrProofGrantor, "municipality %s is not within the own area of grantor %s", m, a.GetGrantorId())
}

// verifyProofCommand parses raw and verifies it as a command of issuer,
// recorded by the registry at the index of revision rev (at most the
// proof's index), against issuer's record in signers by the key rule.
func verifyProofCommand(raw string, signers map[string]*registryv1.Organisation, issuer string, rev, proofIndex uint64) (*registryv1.Command, error) {
	if raw == "" {
		return nil, proofErr(ErrProofMissing, "no signed command of %s in the proof", issuer)
	}
	sc, err := ParseCommand(raw)
	if err != nil {
		return nil, proofErr(ErrProofSignature, "command of %s: %v", issuer, err)
	}
	if sc.Command.GetIssuer() != issuer {
		return nil, proofErr(ErrProofSignature, "command %s is signed by %s, not %s", sc.Command.GetId(), sc.Command.GetIssuer(), issuer)
	}
	signer := signers[issuer]
	if signer == nil {
		return nil, proofErr(ErrProofSignature, "the record of signer %s is not in the proof", issuer)
	}
	// The key rule judges a signature at the registry position that
	// recorded it: the index of the revision the command made.
	at := keys.Moment{Index: IndexOfRevision(rev), UnixMs: sc.Command.GetIssuedAtUnixMs()}
	if at.Index == 0 || (proofIndex != 0 && at.Index > proofIndex) {
		return nil, proofErr(ErrProofSignature, "command %s: revision %d is not a registry position up to %d", sc.Command.GetId(), rev, proofIndex)
	}
	pk, err := keys.SigningKeyAt(signer, sc.KID, at)
	if err != nil {
		return nil, proofErr(ErrProofSignature, "command %s: %v", sc.Command.GetId(), err)
	}
	k, err := keys.ParsePublic(pk)
	if err != nil {
		return nil, proofErr(ErrProofSignature, "command %s: %v", sc.Command.GetId(), err)
	}
	if err := sc.Verify(k); err != nil {
		return nil, proofErr(ErrProofSignature, "%v", err)
	}
	return sc.Command, nil
}

func clearOfferingProofMeta(m proto.Message) {
	o := m.(*registryv1.Offering)
	o.Revision, o.UpdatedAtUnixMs, o.UpdatedBy, o.CommandId = 0, 0, "", ""
}

func clearAuthorisationProofMeta(m proto.Message) {
	a := m.(*registryv1.Authorisation)
	a.Revision, a.UpdatedAtUnixMs, a.UpdatedBy, a.CommandId = 0, 0, "", ""
}

// attachProofs sets the proof of every provider from the state st. orgs
// caches organisation records already read (nil: not found).
func attachProofs(st *stage, ps []*registryv1.Provider, orgs map[string]*registryv1.Organisation) error {
	org := func(id string) (*registryv1.Organisation, error) {
		if o, ok := orgs[id]; ok {
			return o, nil
		}
		o, err := loadOrg(st, id)
		if err != nil {
			return nil, err
		}
		orgs[id] = o
		return o, nil
	}
	for _, p := range ps {
		off := p.GetOffering()
		pr := &registryv1.ProviderProof{Signers: []*registryv1.Organisation{p.GetOrganisation()}}
		var err error
		if pr.OfferingCommand, err = commandOf(st, off.GetOrganisationId(), off.GetUpdatedBy(), off.GetCommandId(), off.GetRevision()); err != nil {
			return err
		}
		authID, err := st.get(offerAuthKey(off.GetId(), p.GetMatchedArea()))
		if err != nil {
			return err
		}
		if len(authID) > 0 {
			a := &registryv1.Authorisation{}
			if ok, err := st.getProto(authKey(string(authID)), a); err != nil {
				return err
			} else if ok {
				pr.Authorisation = a
				if pr.AuthorisationCommand, err = commandOf(st, a.GetGrantorId(), a.GetUpdatedBy(), a.GetCommandId(), a.GetRevision()); err != nil {
					return err
				}
				for _, id := range []string{a.GetGrantorId(), a.GetOnBehalfOf()} {
					if id == "" || slices.ContainsFunc(pr.Signers, func(o *registryv1.Organisation) bool { return o.GetId() == id }) {
						continue
					}
					o, err := org(id)
					if err != nil {
						return err
					}
					if o != nil {
						pr.Signers = append(pr.Signers, o)
					}
				}
			}
		}
		p.Proof = pr
	}
	return nil
}

// commandOf returns the signed command that gave an entity of owner its
// revision rev: the one named by the record (updatedBy, commandID) if set,
// else the one the owner's history records at that revision. "" if none
// was recorded (state written before commands were kept).
func commandOf(st *stage, owner, updatedBy, commandID string, rev uint64) (string, error) {
	issuer := updatedBy
	if commandID == "" {
		e := &registryv1.HistoryEntry{}
		if ok, err := st.getProto(historyKey(owner, rev), e); err != nil || !ok {
			return "", err
		}
		issuer, commandID = e.GetIssuer(), e.GetCommandId()
	}
	if issuer == "" {
		issuer = owner
	}
	raw, _, err := storedCommand(st, issuer, commandID)
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	return raw, err
}
