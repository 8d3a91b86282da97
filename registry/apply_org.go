package registry

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry/textsearch"
)

// Organisation records: put (rule 1), join requests (rule 2), status changes
// (rule 3) and key recovery (rule 4) of the governance model.

func clearOrgMeta(m proto.Message) {
	o := m.(*registryv1.Organisation)
	o.Revision, o.UpdatedAtUnixMs, o.UpdatedBy = 0, 0, ""
}

// sameIdentity reports whether two records agree on what only the
// organisation's approver may change.
func sameIdentity(a, b *registryv1.Organisation) bool {
	return a.GetKind() == b.GetKind() && a.GetArs() == b.GetArs() && a.GetAgs() == b.GetAgs() &&
		a.GetStateCode() == b.GetStateCode() && a.GetParentId() == b.GetParentId()
}

func (a *applyCtx) putOrganisation(o *registryv1.Organisation, pre *registryv1.Precondition) error {
	old, err := loadOrg(a.st, o.GetId())
	if err != nil {
		return err
	}
	exists := old != nil
	if err := checkPrecondition(pre, exists, old.GetRevision(), "organisation "+o.GetId()); err != nil {
		return err
	}
	n := proto.Clone(o).(*registryv1.Organisation)
	issuer := a.cmd.GetIssuer()
	isOpKind := n.GetKind() == kindOperator
	switch {
	case a.operator == "":
		// Genesis: only the operator's self-signed record (checked by the caller).
		if !isOpKind || n.GetId() != issuer {
			return fmt.Errorf("%w: the registry has no operator yet; the first command must register the network operator", ErrPermissionDenied)
		}
		if s := n.GetStatus(); s != statusUnspecified && s != statusActive {
			return ruleErr(ErrPreconditionFailed, ruleStatus, "the network operator starts ACTIVE, not %s", s)
		}
		n.Status = statusActive
	case exists && n.GetId() == issuer:
		// Self-service: an organisation maintains its own name, endpoint,
		// location and keys; identity and status are its approver's.
		if n.GetId() == a.operator && !isOpKind {
			return ruleErr(ErrPermissionDenied, ruleOwnRecord, "the network operator may not change its own kind")
		}
		if n.GetStatus() == statusUnspecified {
			n.Status = old.GetStatus()
		}
		if !sameIdentity(n, old) || n.GetStatus() != old.GetStatus() {
			return ruleErr(ErrPermissionDenied, ruleOwnRecord, "%s may not change its own kind, area keys, parent or status; its approver is %s", issuer, approverName(a.operator, old))
		}
		if hasRecoveryKey(old) && !sameRecoveryKeys(old, n) {
			// The first recovery key may be added by a put (a network
			// started without one); after that, a stolen signing key must
			// not be able to replace it.
			return ruleErr(ErrPermissionDenied, ruleRecovery, "%s may not change its recovery keys by a put: only a recover_keys signed with its recovery key replaces them", issuer)
		}
	case isApprover(a.issuer, a.operator, n) && (!exists || isApprover(a.issuer, a.operator, old)):
		if isOpKind {
			return ruleErr(ErrPermissionDenied, ruleOrgApprover, "%s may not register a second network operator %s", issuer, n.GetId())
		}
		if err := a.approverStatus(old, n); err != nil {
			return err
		}
		if kid, ok := keepsKeys(old, n); !ok {
			return ruleErr(ErrPermissionDenied, ruleKeysKept, "%s may not drop or replace key %q of %s: an approver adds keys or marks them revoked (recover a lost key with recover_keys)", issuer, kid, n.GetId())
		}
	default:
		whose := n
		if exists {
			whose = old
		}
		return ruleErr(ErrPermissionDenied, ruleOrgApprover, "%s may not change %s; its approver is %s", issuer, n.GetId(), approverName(a.operator, whose))
	}
	if err := a.checkStale(exists, old.GetUpdatedAtUnixMs(), "organisation "+n.GetId()); err != nil {
		return err
	}
	if err := a.checkKidsFree(n.GetId(), n.GetKeys()); err != nil {
		return err
	}
	// Registry-kept fields: what the client sent is replaced.
	n.StatusReason, n.StatusChangedBy = old.GetStatusReason(), old.GetStatusChangedBy()
	if n.GetStatus() != old.GetStatus() {
		n.StatusReason, n.StatusChangedBy = "registered by its approver", issuer
		if !exists && a.operator == "" {
			n.StatusReason = "genesis"
		}
	}
	return a.writeOrg(old, n)
}

// approverStatus decides the status of a record an approver puts: a new
// record without a status is ACTIVE if it has a signing key, REGISTERED
// otherwise; an existing one keeps its status unless it moves from
// REGISTERED or PENDING to ACTIVE. Every other move is change_status's.
func (a *applyCtx) approverStatus(old, n *registryv1.Organisation) error {
	if old == nil {
		switch n.GetStatus() {
		case statusUnspecified:
			n.Status = statusRegistered
			if hasActiveSigKey(n.GetKeys()) {
				n.Status = statusActive
			}
		case statusRegistered, statusActive:
		default:
			return ruleErr(ErrPreconditionFailed, ruleStatus, "a new organisation is listed REGISTERED or registered ACTIVE, not %s", n.GetStatus())
		}
		return nil
	}
	switch from, to := old.GetStatus(), n.GetStatus(); {
	case to == statusUnspecified || to == from:
		n.Status = from
	case to == statusActive && (from == statusRegistered || from == statusPending):
	default:
		return ruleErr(ErrPreconditionFailed, ruleStatus, "%s is %s; put_organisation may not make it %s (use change_status)", n.GetId(), from, to)
	}
	return nil
}

// checkKidsFree refuses keys whose kid belongs to another organisation.
func (a *applyCtx) checkKidsFree(id string, ks []*registryv1.PublicKey) error {
	for _, pk := range ks {
		owner, err := a.st.get(kidKey(pk.GetKid()))
		if err != nil {
			return err
		}
		if owner != nil && string(owner) != id {
			return fmt.Errorf("%w: key %q belongs to another organisation", ErrPermissionDenied, pk.GetKid())
		}
	}
	return nil
}

// writeOrg stores n, the new record of an organisation whose stored record
// is old (nil if new), with its indexes and the key rule's stamps. A record
// equal to the stored one changes nothing.
func (a *applyCtx) writeOrg(old, n *registryv1.Organisation) error {
	// The key rule's stamps are the registry's: what the client sent there
	// is replaced before comparing, so it neither shows nor makes a change.
	keys.Stamp(old, n, a.index) // old is nil if the organisation is new
	exists := old != nil
	if exists && sameContent(old, n, clearOrgMeta) {
		a.rev = old.GetRevision()
		return nil
	}
	n.Revision, n.UpdatedAtUnixMs, n.UpdatedBy = a.nextRevision(), a.cmd.GetIssuedAtUnixMs(), a.cmd.GetIssuer()
	level, err := featureLevel(a.st)
	if err != nil {
		return err
	}
	places := level >= PlaceIndexLevel
	if exists {
		if old.GetAgs() != "" {
			a.st.del(agsKey(old.GetAgs()))
		}
		a.st.del(orgNameKey(textsearch.Fold(old.GetName()), old.GetId()))
		if places {
			delPlaceKeys(a.st, old)
		}
		for _, pk := range old.GetKeys() {
			a.st.del(kidKey(pk.GetKid()))
		}
	}
	if n.GetAgs() != "" {
		a.st.set(agsKey(n.GetAgs()), []byte(n.GetId()))
	}
	a.st.set(orgNameKey(textsearch.Fold(n.GetName()), n.GetId()), nil)
	if places {
		setPlaceKeys(a.st, n)
	}
	for _, pk := range n.GetKeys() {
		a.st.set(kidKey(pk.GetKid()), []byte(n.GetId()))
	}
	if n.GetKind() == kindOperator {
		a.st.set([]byte(keyOperator), []byte(n.GetId()))
	}
	return a.st.setProto(orgKey(n.GetId()), n)
}

// requestJoin records a join request of the issuer (rule 2): PENDING for its
// approver. A listed, pending or declined record keeps the identity its
// approver listed and takes keys and endpoint from the request.
func (a *applyCtx) requestJoin(j *registryv1.Organisation, pre *registryv1.Precondition) error {
	if j.GetId() != a.cmd.GetIssuer() {
		return ruleErr(ErrPermissionDenied, ruleJoin, "%s may not request to join for %s", a.cmd.GetIssuer(), j.GetId())
	}
	if j.GetKind() == kindOperator {
		return ruleErr(ErrPermissionDenied, ruleJoin, "a network operator does not join; it starts the network")
	}
	old, err := loadOrg(a.st, j.GetId())
	if err != nil {
		return err
	}
	if err := checkPrecondition(pre, old != nil, old.GetRevision(), "organisation "+j.GetId()); err != nil {
		return err
	}
	var n *registryv1.Organisation
	switch s := old.GetStatus(); {
	case old == nil:
		n = proto.Clone(j).(*registryv1.Organisation)
	case joined(old):
		return ruleErr(ErrPreconditionFailed, ruleJoin, "%s is already approved (%s): rotate keys instead", j.GetId(), s)
	case final(s):
		return ruleErr(ErrPreconditionFailed, ruleJoin, "%s is %s and cannot join again", j.GetId(), s)
	default: // REGISTERED, PENDING, DECLINED
		n = proto.Clone(old).(*registryv1.Organisation)
		n.Keys = j.GetKeys()
		n.ApiEndpoint = j.GetApiEndpoint()
	}
	if err := a.checkStale(old != nil, old.GetUpdatedAtUnixMs(), "organisation "+j.GetId()); err != nil {
		return err
	}
	if err := a.checkKidsFree(n.GetId(), n.GetKeys()); err != nil {
		return err
	}
	n.Status, n.StatusReason, n.StatusChangedBy = statusPending, "join requested", a.cmd.GetIssuer()
	return a.writeOrg(old, n)
}

// statusMoveAllowed lists the moves of change_status.
func statusMoveAllowed(from, to registryv1.OrganisationStatus) bool {
	switch to {
	case statusActive:
		return from == statusPending || from == statusSuspended
	case statusDeclined:
		return from == statusPending
	case statusSuspended:
		return from == statusActive
	case statusRevoked:
		return !final(from)
	}
	return false
}

// changeStatus moves an organisation between governance states (rule 3), by
// its approver.
func (a *applyCtx) changeStatus(c *registryv1.ChangeOrganisationStatus, pre *registryv1.Precondition) error {
	old, err := loadOrg(a.st, c.GetOrganisationId())
	if err != nil {
		return err
	}
	if err := checkPrecondition(pre, old != nil, old.GetRevision(), "organisation "+c.GetOrganisationId()); err != nil {
		return err
	}
	if old == nil {
		return fmt.Errorf("%w: organisation %s", ErrNotFound, c.GetOrganisationId())
	}
	if old.GetKind() == kindOperator {
		return ruleErr(ErrPermissionDenied, ruleStatus, "nobody changes the network operator's status")
	}
	if !isApprover(a.issuer, a.operator, old) {
		return ruleErr(ErrPermissionDenied, ruleOrgApprover, "%s may not change the status of %s; its approver is %s", a.cmd.GetIssuer(), old.GetId(), approverName(a.operator, old))
	}
	from, to := old.GetStatus(), c.GetStatus()
	if !statusMoveAllowed(from, to) {
		return ruleErr(ErrPreconditionFailed, ruleStatus, "%s is %s and cannot be made %s", old.GetId(), from, to)
	}
	if from == statusPending && to == statusActive {
		if d := KeysDigest(old.GetKeys()); c.GetKeysSha256() != d {
			return ruleErr(ErrPreconditionFailed, ruleStatus, "the keys of %s are not the ones approved (keys_sha256 %q, the pending record's is %s)", old.GetId(), c.GetKeysSha256(), d)
		}
	}
	if err := a.checkStale(true, old.GetUpdatedAtUnixMs(), "organisation "+old.GetId()); err != nil {
		return err
	}
	n := proto.Clone(old).(*registryv1.Organisation)
	n.Status, n.StatusReason, n.StatusChangedBy = to, c.GetReason(), a.cmd.GetIssuer()
	return a.writeOrg(old, n)
}

// recoverKeys re-binds an organisation that lost its key (rule 4): by its
// approver, or the network operator itself with its recovery key (the
// signature path checks that). The previous signing and encryption keys
// are revoked at this index and stay in the record, so what they signed
// before stays verifiable; a recovery key in the new set revokes the old.
func (a *applyCtx) recoverKeys(r *registryv1.KeyRecovery, pre *registryv1.Precondition) error {
	old, err := loadOrg(a.st, r.GetOrganisationId())
	if err != nil {
		return err
	}
	if err := checkPrecondition(pre, old != nil, old.GetRevision(), "organisation "+r.GetOrganisationId()); err != nil {
		return err
	}
	if old == nil {
		return fmt.Errorf("%w: organisation %s", ErrNotFound, r.GetOrganisationId())
	}
	if !isApprover(a.issuer, a.operator, old) {
		return ruleErr(ErrPermissionDenied, ruleRecovery, "%s may not recover the keys of %s; its approver is %s", a.cmd.GetIssuer(), old.GetId(), approverName(a.operator, old))
	}
	if old.GetKind() == kindOperator && !isRecoveryKey(old, a.kid) {
		// Else a stolen signing key could replace the recovery key too.
		return ruleErr(ErrPermissionDenied, ruleRecovery, "the network operator's keys are recovered only with its recovery key, not with %q", a.kid)
	}
	if !joined(old) {
		return ruleErr(ErrPreconditionFailed, ruleRecovery, "%s is %s; keys are recovered for ACTIVE or SUSPENDED organisations", old.GetId(), old.GetStatus())
	}
	if !hasActiveSigKey(r.GetKeys()) {
		return ruleErr(ErrPreconditionFailed, ruleRecovery, "the new keys of %s hold no active signing key", old.GetId())
	}
	if err := a.checkStale(true, old.GetUpdatedAtUnixMs(), "organisation "+old.GetId()); err != nil {
		return err
	}
	newRec := false
	for _, pk := range r.GetKeys() {
		newRec = newRec || pk.GetUse() == keys.UseRec
	}
	n := proto.Clone(old).(*registryv1.Organisation)
	n.Keys = nil
	seen := map[string]bool{}
	for _, pk := range old.GetKeys() {
		pk = proto.Clone(pk).(*registryv1.PublicKey)
		if pk.GetUse() != keys.UseRec || newRec {
			pk.Status = registryv1.KeyStatus_KEY_STATUS_REVOKED
		}
		seen[pk.GetKid()] = true
		n.Keys = append(n.Keys, pk)
	}
	for _, pk := range r.GetKeys() {
		if seen[pk.GetKid()] {
			return ruleErr(ErrPreconditionFailed, ruleRecovery, "key %q is already a key of %s; recovery needs new keys", pk.GetKid(), old.GetId())
		}
		n.Keys = append(n.Keys, proto.Clone(pk).(*registryv1.PublicKey))
	}
	if len(n.Keys) > MaxKeys {
		return ruleErr(ErrPreconditionFailed, ruleRecovery, "%s would hold %d keys, at most %d: drop revoked keys first", old.GetId(), len(n.Keys), MaxKeys)
	}
	if err := a.checkKidsFree(n.GetId(), n.GetKeys()); err != nil {
		return err
	}
	n.StatusReason, n.StatusChangedBy = r.GetReason(), a.cmd.GetIssuer()
	return a.writeOrg(old, n)
}

// isRecoveryKey reports whether kid is a recovery ("rec") key of org.
func isRecoveryKey(org *registryv1.Organisation, kid string) bool {
	for _, pk := range org.GetKeys() {
		if pk.GetKid() == kid && pk.GetUse() == keys.UseRec {
			return true
		}
	}
	return false
}

// hasRecoveryKey reports whether org holds a recovery ("rec") key.
func hasRecoveryKey(org *registryv1.Organisation) bool {
	for _, pk := range org.GetKeys() {
		if pk.GetUse() == keys.UseRec {
			return true
		}
	}
	return false
}

// sameRecoveryKeys reports whether two records hold the same recovery keys
// (kid, key and status).
func sameRecoveryKeys(a, b *registryv1.Organisation) bool {
	rec := func(o *registryv1.Organisation) []*registryv1.PublicKey {
		var out []*registryv1.PublicKey
		for _, pk := range o.GetKeys() {
			if pk.GetUse() == keys.UseRec {
				out = append(out, pk)
			}
		}
		return out
	}
	ra, rb := rec(a), rec(b)
	if len(ra) != len(rb) {
		return false
	}
	for _, x := range ra {
		found := false
		for _, y := range rb {
			if x.GetKid() == y.GetKid() && x.GetJwkJson() == y.GetJwkJson() && x.GetStatus() == y.GetStatus() {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// keepsKeys reports whether n keeps every key of old (nil: nothing to
// keep): same kid, use and JWK, and a revoked key stays revoked. It returns
// the first key dropped or replaced. What a key signed stays verifiable
// only while the registry still lists the key.
func keepsKeys(old, n *registryv1.Organisation) (string, bool) {
	for _, o := range old.GetKeys() {
		ok := false
		for _, k := range n.GetKeys() {
			if k.GetKid() != o.GetKid() {
				continue
			}
			ok = k.GetUse() == o.GetUse() && k.GetJwkJson() == o.GetJwkJson() &&
				(o.GetStatus() != registryv1.KeyStatus_KEY_STATUS_REVOKED || k.GetStatus() == registryv1.KeyStatus_KEY_STATUS_REVOKED)
		}
		if !ok {
			return o.GetKid(), false
		}
	}
	return "", true
}
