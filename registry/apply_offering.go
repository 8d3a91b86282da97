package registry

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Offerings (rule 7): an organisation publishes only its own, and only for
// areas it is entitled to: its own area, or an area an authorisation by the
// area's responsible body grants it. The provider index (x/pa) holds only
// entitled areas; x/ao records for each indexed area what entitles it and
// x/ad the reverse, so that changing or withdrawing an authorisation takes
// the areas it entitled out of the index in the same log entry.

func clearOfferingMeta(m proto.Message) {
	o := m.(*registryv1.Offering)
	o.Revision, o.UpdatedAtUnixMs, o.UpdatedBy = 0, 0, ""
}

// covers reports whether authorisation au entitles its grantee to offer
// leika for area.
func covers(au *registryv1.Authorisation, leika, area string) bool {
	if len(au.GetLeikaKeys()) > 0 && !slices.Contains(au.GetLeikaKeys(), leika) {
		return false
	}
	return within(area, au.GetAreas())
}

// entitlement returns what entitles org to offer leika for area: "" for its
// own area, else the id of the first authorisation (by id) granted to org
// that covers it, skipping the authorisation skip. ok is false if nothing does.
func (a *applyCtx) entitlement(org *registryv1.Organisation, leika, area, skip string) (auth string, ok bool, err error) {
	if within(area, ownArea(org)) {
		return "", true, nil
	}
	prefix := authGranteePrefix(org.GetId())
	ids, err := a.st.scan(prefix)
	if err != nil {
		return "", false, err
	}
	for _, key := range ids {
		id := key[len(prefix):]
		if id == skip {
			continue
		}
		au := &registryv1.Authorisation{}
		found, err := a.st.getProto(authKey(id), au)
		if err != nil {
			return "", false, err
		}
		if found && au.GetGranteeId() == org.GetId() && covers(au, leika, area) {
			return id, true, nil
		}
	}
	return "", false, nil
}

func (a *applyCtx) putOffering(o *registryv1.Offering, pre *registryv1.Precondition) error {
	if o.GetOrganisationId() != a.cmd.GetIssuer() {
		return ruleErr(ErrPermissionDenied, ruleOwnOfferings, "%s may not publish offerings of organisation %s", a.cmd.GetIssuer(), o.GetOrganisationId())
	}
	org, err := loadOrg(a.st, o.GetOrganisationId())
	if err != nil {
		return err
	}
	if org == nil {
		return fmt.Errorf("%w: organisation %s", ErrNotFound, o.GetOrganisationId())
	}
	if ok, err := a.st.has(serviceKey(o.GetLeikaKey())); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("%w: service %s is not in the catalogue", ErrNotFound, o.GetLeikaKey())
	}
	old := &registryv1.Offering{}
	exists, err := a.st.getProto(offeringKey(o.GetId()), old)
	if err != nil {
		return err
	}
	if err := checkPrecondition(pre, exists, old.GetRevision(), "offering "+o.GetId()); err != nil {
		return err
	}
	if exists && old.GetOrganisationId() != o.GetOrganisationId() {
		return ruleErr(ErrPermissionDenied, ruleOwnOfferings, "%s may not take over offering %s of %s", a.cmd.GetIssuer(), o.GetId(), old.GetOrganisationId())
	}
	// Every area must be entitled, or the whole mutation is refused.
	grants := make([]string, len(o.GetAreas()))
	for i, area := range o.GetAreas() {
		auth, ok, err := a.entitlement(org, o.GetLeikaKey(), area, "")
		if err != nil {
			return err
		}
		if !ok {
			return ruleErr(ErrPermissionDenied, ruleAreaResponsible, "%s may not offer %s for %s: not its own area and no authorisation by the area's responsible body covers it",
				org.GetId(), o.GetLeikaKey(), area)
		}
		grants[i] = auth
	}
	if err := a.checkStale(exists, old.GetUpdatedAtUnixMs(), "offering "+o.GetId()); err != nil {
		return err
	}
	if exists && sameContent(old, o, clearOfferingMeta) {
		// Unchanged, unless an area left the index (its authorisation was
		// withdrawn) and is entitled again: then it is published anew.
		indexed := true
		for _, area := range old.GetAreas() {
			ok, err := a.st.exists(offerAuthKey(old.GetId(), area))
			if err != nil {
				return err
			}
			indexed = indexed && ok
		}
		if indexed {
			a.rev = old.GetRevision()
			return nil
		}
	}
	n := proto.Clone(o).(*registryv1.Offering)
	n.Revision, n.UpdatedAtUnixMs, n.UpdatedBy = a.nextRevision(), a.cmd.GetIssuedAtUnixMs(), a.cmd.GetIssuer()
	if exists {
		if err := a.unindexOffering(old); err != nil {
			return err
		}
	}
	for i, area := range n.GetAreas() {
		a.indexArea(n, area, grants[i])
	}
	a.st.set(orgOfferKey(n.GetOrganisationId(), n.GetId()), nil)
	return a.st.setProto(offeringKey(n.GetId()), n)
}

// indexArea puts one entitled area of an offering into the provider index.
func (a *applyCtx) indexArea(o *registryv1.Offering, area, auth string) {
	a.st.set(providerKey(o.GetLeikaKey(), area, o.GetId()), nil)
	a.st.set(offerAuthKey(o.GetId(), area), []byte(auth))
	if auth != "" {
		a.st.set(authDepKey(auth, o.GetId(), area), nil)
	}
}

// unindexArea takes one area of an offering out of the provider index.
func (a *applyCtx) unindexArea(o *registryv1.Offering, area string) error {
	a.st.del(providerKey(o.GetLeikaKey(), area, o.GetId()))
	key := offerAuthKey(o.GetId(), area)
	ok, err := a.st.exists(key)
	if err != nil || !ok {
		return err
	}
	auth, err := a.st.get(key)
	if err != nil {
		return err
	}
	a.st.del(key)
	if len(auth) > 0 {
		a.st.del(authDepKey(string(auth), o.GetId(), area))
	}
	return nil
}

func (a *applyCtx) unindexOffering(old *registryv1.Offering) error {
	for _, area := range old.GetAreas() {
		if err := a.unindexArea(old, area); err != nil {
			return err
		}
	}
	a.st.del(orgOfferKey(old.GetOrganisationId(), old.GetId()))
	return nil
}

func (a *applyCtx) deleteOffering(id string, pre *registryv1.Precondition) error {
	old := &registryv1.Offering{}
	exists, err := a.st.getProto(offeringKey(id), old)
	if err != nil {
		return err
	}
	if err := checkPrecondition(pre, exists, old.GetRevision(), "offering "+id); err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("%w: offering %s", ErrNotFound, id)
	}
	if old.GetOrganisationId() != a.cmd.GetIssuer() {
		return ruleErr(ErrPermissionDenied, ruleOwnOfferings, "%s may not delete offering %s of %s", a.cmd.GetIssuer(), id, old.GetOrganisationId())
	}
	if err := a.checkStale(true, old.GetUpdatedAtUnixMs(), "offering "+id); err != nil {
		return err
	}
	if err := a.unindexOffering(old); err != nil {
		return err
	}
	a.st.del(offeringKey(id))
	return nil
}

// reentitle re-evaluates the provider entries that exist because of
// authorisation auth, after it changed or (withdrawn) was deleted: an area
// still entitled stays, re-pointed to what entitles it now; the others
// leave the provider index.
func (a *applyCtx) reentitle(auth string, withdrawn bool) error {
	prefix := authDepPrefix(auth)
	deps, err := a.st.scan(prefix)
	if err != nil {
		return err
	}
	skip := ""
	if withdrawn {
		skip = auth
	}
	for _, key := range deps {
		rest := key[len(prefix):]
		cut := strings.LastIndexByte(rest, '/')
		if cut < 0 {
			return fmt.Errorf("malformed dependency key %q", key)
		}
		offID, area := rest[:cut], rest[cut+1:]
		off := &registryv1.Offering{}
		found, err := a.st.getProto(offeringKey(offID), off)
		if err != nil {
			return err
		}
		if !found {
			a.st.del([]byte(key))
			continue
		}
		org, err := loadOrg(a.st, off.GetOrganisationId())
		if err != nil {
			return err
		}
		now, ok := "", false
		if org != nil {
			if now, ok, err = a.entitlement(org, off.GetLeikaKey(), area, skip); err != nil {
				return err
			}
		}
		switch {
		case ok && now == auth:
			// Still entitled by the changed authorisation.
		case ok:
			a.st.del([]byte(key))
			a.st.set(offerAuthKey(offID, area), []byte(now))
			if now != "" {
				a.st.set(authDepKey(now, offID, area), nil)
			}
		default:
			if err := a.unindexArea(off, area); err != nil {
				return err
			}
		}
	}
	return nil
}
