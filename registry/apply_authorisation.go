package registry

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Authorisations (rules 5 and 6): the responsible body of an area entitles
// another organisation to offer services there, and may withdraw it.

func clearAuthMeta(m proto.Message) {
	o := m.(*registryv1.Authorisation)
	o.Revision, o.UpdatedAtUnixMs, o.UpdatedBy, o.CommandId = 0, 0, "", ""
}

// onBehalfOK checks a grant of grantor on behalf of municipality m: m has
// not joined, the grantor is its district or state agency, and every area
// lies within m's.
func (a *applyCtx) checkOnBehalf(grantor *registryv1.Organisation, au *registryv1.Authorisation) error {
	m, err := loadOrg(a.st, au.GetOnBehalfOf())
	if err != nil {
		return err
	}
	switch {
	case m == nil || m.GetKind() != kindMunicipality || m.GetArs() != au.GetOnBehalfOf():
		return ruleErr(ErrPermissionDenied, ruleAuthArea, "%s is not a listed municipality to grant on behalf of", au.GetOnBehalfOf())
	case joined(m) || final(m.GetStatus()):
		return ruleErr(ErrPermissionDenied, ruleAuthArea, "municipality %s is %s: it grants for itself", m.GetId(), m.GetStatus())
	case grantor.GetKind() != kindDistrict && grantor.GetKind() != kindStateAgency:
		return ruleErr(ErrPermissionDenied, ruleAuthArea, "%s may not grant on behalf of %s: only its district or state agency may", grantor.GetId(), m.GetId())
	case !within(m.GetArs(), ownArea(grantor)):
		return ruleErr(ErrPermissionDenied, ruleAuthArea, "%s may not grant on behalf of %s: not within its own area", grantor.GetId(), m.GetId())
	}
	for _, g := range au.GetAreas() {
		if !within(g, []string{m.GetArs()}) {
			return ruleErr(ErrPermissionDenied, ruleAuthArea, "%s may not authorise %s on behalf of %s: not within the municipality's area", grantor.GetId(), g, m.GetId())
		}
	}
	return nil
}

func (a *applyCtx) putAuthorisation(au *registryv1.Authorisation, pre *registryv1.Precondition) error {
	issuer := a.cmd.GetIssuer()
	if au.GetGrantorId() != issuer || a.issuer == nil {
		return ruleErr(ErrPermissionDenied, ruleAuthGrantor, "%s may not grant an authorisation in the name of %s", issuer, au.GetGrantorId())
	}
	if ok, err := a.st.has(orgKey(au.GetGranteeId())); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("%w: grantee %s", ErrNotFound, au.GetGranteeId())
	}
	old := &registryv1.Authorisation{}
	exists, err := a.st.getProto(authKey(au.GetId()), old)
	if err != nil {
		return err
	}
	if err := checkPrecondition(pre, exists, old.GetRevision(), "authorisation "+au.GetId()); err != nil {
		return err
	}
	// The municipality a grant was made for takes it over once it joined.
	if exists && old.GetGrantorId() != issuer && (old.GetOnBehalfOf() == "" || old.GetOnBehalfOf() != issuer) {
		return ruleErr(ErrPermissionDenied, ruleAuthGrantor, "%s may not change authorisation %s of %s", issuer, au.GetId(), old.GetGrantorId())
	}
	if au.GetOnBehalfOf() != "" {
		if err := a.checkOnBehalf(a.issuer, au); err != nil {
			return err
		}
	} else {
		own := ownArea(a.issuer)
		for _, g := range au.GetAreas() {
			if !within(g, own) {
				return ruleErr(ErrPermissionDenied, ruleAuthArea, "%s may not authorise %s for %s: not within its own area %q", issuer, au.GetGranteeId(), g, own)
			}
		}
	}
	if err := a.checkStale(exists, old.GetUpdatedAtUnixMs(), "authorisation "+au.GetId()); err != nil {
		return err
	}
	if exists && sameContent(old, au, clearAuthMeta) {
		a.rev = old.GetRevision()
		return nil
	}
	n := proto.Clone(au).(*registryv1.Authorisation)
	n.Revision, n.UpdatedAtUnixMs, n.UpdatedBy = a.nextRevision(), a.cmd.GetIssuedAtUnixMs(), issuer
	n.CommandId = a.cmd.GetId()
	if exists {
		a.st.del(authGranteeKey(old.GetGranteeId(), old.GetId()))
		a.st.del(authGrantorKey(old.GetGrantorId(), old.GetId()))
	}
	a.st.set(authGranteeKey(n.GetGranteeId(), n.GetId()), nil)
	a.st.set(authGrantorKey(n.GetGrantorId(), n.GetId()), nil)
	if err := a.st.setProto(authKey(n.GetId()), n); err != nil {
		return err
	}
	if !exists {
		return nil
	}
	return a.reentitle(n.GetId(), false)
}

func (a *applyCtx) withdrawAuthorisation(id string, pre *registryv1.Precondition) error {
	old := &registryv1.Authorisation{}
	exists, err := a.st.getProto(authKey(id), old)
	if err != nil {
		return err
	}
	if err := checkPrecondition(pre, exists, old.GetRevision(), "authorisation "+id); err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("%w: authorisation %s", ErrNotFound, id)
	}
	issuer := a.cmd.GetIssuer()
	allowed := issuer == old.GetGrantorId() || (old.GetOnBehalfOf() != "" && issuer == old.GetOnBehalfOf())
	if !allowed {
		grantor, err := loadOrg(a.st, old.GetGrantorId())
		if err != nil {
			return err
		}
		allowed = grantor != nil && isApprover(a.issuer, a.operator, grantor)
	}
	if !allowed {
		return ruleErr(ErrPermissionDenied, ruleAuthGrantor, "%s may not withdraw authorisation %s of %s: only its grantor, the municipality it was granted for, or the grantor's approver may",
			issuer, id, old.GetGrantorId())
	}
	if err := a.checkStale(true, old.GetUpdatedAtUnixMs(), "authorisation "+id); err != nil {
		return err
	}
	a.st.del(authKey(id))
	a.st.del(authGranteeKey(old.GetGranteeId(), id))
	a.st.del(authGrantorKey(old.GetGrantorId(), id))
	return a.reentitle(id, true)
}
