package registry

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry/textsearch"
)

// applyCtx carries what one command's mutations need: deterministic inputs
// only (the log index, the issuer and the command's own time).
type applyCtx struct {
	st       *stage
	index    uint64
	issuer   *registryv1.Organisation // nil only during genesis
	cmd      *registryv1.Command
	operator string
	// seq counts the entity changes made by the log entry so far; with the
	// index it makes every revision unique (see Revision).
	seq *uint64
	// rev is the revision the current mutation gave its entity (0: none).
	rev uint64
}

// RevisionBits is how many low bits of a revision number the changes
// within one log entry: revision = raft index << RevisionBits | change
// number (from 1). Two changes of one entity in the same entry (group
// commit puts many commands in one) get different revisions, so a
// conditional write based on the first can never succeed against the
// second. Revisions increase with every change.
const RevisionBits = 20

// IndexOfRevision returns the Raft index of the entry that made revision.
func IndexOfRevision(rev uint64) uint64 { return rev >> RevisionBits }

func (a *applyCtx) nextRevision() uint64 {
	*a.seq++
	a.rev = a.index<<RevisionBits | *a.seq
	return a.rev
}

func (a *applyCtx) isOperator() bool { return a.operator != "" && a.cmd.GetIssuer() == a.operator }

func (a *applyCtx) issuerKind() registryv1.OrganisationKind {
	if a.issuer == nil {
		return registryv1.OrganisationKind_ORGANISATION_KIND_UNSPECIFIED
	}
	return a.issuer.GetKind()
}

func (a *applyCtx) denied(format string, args ...any) error {
	return fmt.Errorf("%w: %s may not %s", ErrPermissionDenied, a.cmd.GetIssuer(), fmt.Sprintf(format, args...))
}

func checkPrecondition(p *registryv1.Precondition, exists bool, revision uint64, what string) error {
	if p == nil {
		return nil
	}
	switch c := p.GetCondition().(type) {
	case *registryv1.Precondition_Absent:
		if c.Absent && exists {
			return fmt.Errorf("%w: %s already exists (revision %d)", ErrPreconditionFailed, what, revision)
		}
	case *registryv1.Precondition_Revision:
		if !exists {
			return fmt.Errorf("%w: %s does not exist (expected revision %d)", ErrPreconditionFailed, what, c.Revision)
		}
		if revision != c.Revision {
			return fmt.Errorf("%w: %s is at revision %d, expected %d", ErrPreconditionFailed, what, revision, c.Revision)
		}
	}
	return nil
}

// checkStale refuses a command older than the stored version of an entity,
// so that a replayed old command cannot roll an entity back.
func (a *applyCtx) checkStale(exists bool, updatedAt int64, what string) error {
	if exists && a.cmd.GetIssuedAtUnixMs() < updatedAt {
		return fmt.Errorf("%w: %s was changed by a newer command", ErrStale, what)
	}
	return nil
}

// sameContent compares two records ignoring the registry-set metadata.
func sameContent(a, b proto.Message, clear func(proto.Message)) bool {
	ca, cb := proto.Clone(a), proto.Clone(b)
	clear(ca)
	clear(cb)
	return proto.Equal(ca, cb)
}

func (a *applyCtx) apply(m *registryv1.Mutation) error {
	switch op := m.GetOp().(type) {
	case *registryv1.Mutation_PutOrganisation:
		return a.putOrganisation(op.PutOrganisation, m.GetPrecondition())
	case *registryv1.Mutation_PutService:
		return a.putService(op.PutService, m.GetPrecondition())
	case *registryv1.Mutation_PutOffering:
		return a.putOffering(op.PutOffering, m.GetPrecondition())
	case *registryv1.Mutation_DeleteOffering:
		return a.deleteOffering(op.DeleteOffering, m.GetPrecondition())
	case *registryv1.Mutation_PutAuditHead:
		return a.putAuditHead(op.PutAuditHead, m.GetPrecondition())
	default:
		return invalid("unknown mutation %T", op)
	}
}

func clearOrgMeta(m proto.Message) {
	o := m.(*registryv1.Organisation)
	o.Revision, o.UpdatedAtUnixMs, o.UpdatedBy = 0, 0, ""
}

func (a *applyCtx) putOrganisation(o *registryv1.Organisation, pre *registryv1.Precondition) error {
	if o.GetStatus() == registryv1.OrganisationStatus_ORGANISATION_STATUS_UNSPECIFIED {
		// Stored as REGISTERED: compare as such, so that re-sending a record
		// without a status is neither a status change nor a new revision.
		o = proto.Clone(o).(*registryv1.Organisation)
		o.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED
	}
	old := &registryv1.Organisation{}
	exists, err := a.st.getProto(orgKey(o.GetId()), old)
	if err != nil {
		return err
	}
	if err := checkPrecondition(pre, exists, old.GetRevision(), "organisation "+o.GetId()); err != nil {
		return err
	}
	isOpKind := o.GetKind() == registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR
	switch {
	case a.operator == "":
		// Genesis: only the operator's self-signed record (checked by the caller).
		if !isOpKind || o.GetId() != a.cmd.GetIssuer() {
			return fmt.Errorf("%w: the registry has no operator yet; the first command must register the network operator", ErrPermissionDenied)
		}
	case a.isOperator():
		if isOpKind && o.GetId() != a.operator {
			return a.denied("register a second network operator %s", o.GetId())
		}
		if o.GetId() == a.operator && !isOpKind {
			return a.denied("change the operator's kind")
		}
	case o.GetId() == a.cmd.GetIssuer():
		// Self-service: an organisation maintains its own endpoint, name and
		// keys; identity and status are the operator's to change.
		if !exists {
			return a.denied("register itself; the network operator onboards organisations")
		}
		if o.GetKind() != old.GetKind() || o.GetArs() != old.GetArs() || o.GetAgs() != old.GetAgs() ||
			o.GetStateCode() != old.GetStateCode() || o.GetParentId() != old.GetParentId() || o.GetStatus() != old.GetStatus() {
			return a.denied("change its own kind, area keys, parent or status")
		}
	default:
		return a.denied("change organisation %s", o.GetId())
	}
	if err := a.checkStale(exists, old.GetUpdatedAtUnixMs(), "organisation "+o.GetId()); err != nil {
		return err
	}
	for _, pk := range o.GetKeys() {
		owner, err := a.st.get(kidKey(pk.GetKid()))
		if err != nil {
			return err
		}
		if owner != nil && string(owner) != o.GetId() {
			return fmt.Errorf("%w: key %q belongs to another organisation", ErrPermissionDenied, pk.GetKid())
		}
	}
	// The key rule's stamps are the registry's: what the client sent there
	// is replaced before comparing, so it neither shows nor makes a change.
	n := proto.Clone(o).(*registryv1.Organisation)
	keys.Stamp(old, n, a.index) // old is empty if the organisation is new
	if exists && sameContent(old, n, clearOrgMeta) {
		a.rev = old.GetRevision()
		return nil
	}
	n.Revision, n.UpdatedAtUnixMs, n.UpdatedBy = a.nextRevision(), a.cmd.GetIssuedAtUnixMs(), a.cmd.GetIssuer()
	if exists {
		if old.GetAgs() != "" {
			a.st.del(agsKey(old.GetAgs()))
		}
		a.st.del(orgNameKey(textsearch.Fold(old.GetName()), old.GetId()))
		for _, pk := range old.GetKeys() {
			a.st.del(kidKey(pk.GetKid()))
		}
	}
	if n.GetAgs() != "" {
		a.st.set(agsKey(n.GetAgs()), []byte(n.GetId()))
	}
	a.st.set(orgNameKey(textsearch.Fold(n.GetName()), n.GetId()), nil)
	for _, pk := range n.GetKeys() {
		a.st.set(kidKey(pk.GetKid()), []byte(n.GetId()))
	}
	if isOpKind {
		a.st.set([]byte(keyOperator), []byte(n.GetId()))
	}
	return a.st.setProto(orgKey(n.GetId()), n)
}

func clearServiceMeta(m proto.Message) {
	s := m.(*registryv1.Service)
	s.Revision, s.UpdatedAtUnixMs, s.UpdatedBy = 0, 0, ""
}

// serviceTerms returns the search terms of a service with the fields they occur in.
func serviceTerms(s *registryv1.Service) map[string]textsearch.Fields {
	return textsearch.Document{
		Name:           s.GetName(),
		Keywords:       s.GetKeywords(),
		LifeSituations: s.GetLifeSituations(),
		Description:    s.GetDescription(),
	}.Index()
}

func (a *applyCtx) putService(s *registryv1.Service, pre *registryv1.Precondition) error {
	switch a.issuerKind() {
	case registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR,
		registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY,
		registryv1.OrganisationKind_ORGANISATION_KIND_FEDERAL_AGENCY:
	default:
		return a.denied("edit the service catalogue (operator, state and federal agencies only)")
	}
	old := &registryv1.Service{}
	exists, err := a.st.getProto(serviceKey(s.GetLeikaKey()), old)
	if err != nil {
		return err
	}
	if err := checkPrecondition(pre, exists, old.GetRevision(), "service "+s.GetLeikaKey()); err != nil {
		return err
	}
	if err := a.checkStale(exists, old.GetUpdatedAtUnixMs(), "service "+s.GetLeikaKey()); err != nil {
		return err
	}
	if exists && sameContent(old, s, clearServiceMeta) {
		a.rev = old.GetRevision()
		return nil
	}
	n := proto.Clone(s).(*registryv1.Service)
	n.Revision, n.UpdatedAtUnixMs, n.UpdatedBy = a.nextRevision(), a.cmd.GetIssuedAtUnixMs(), a.cmd.GetIssuer()
	newTerms := serviceTerms(n)
	if exists {
		// Sorted: the write order enters the change feed, which must be
		// identical on every replica.
		for _, t := range slices.Sorted(maps.Keys(serviceTerms(old))) {
			if _, ok := newTerms[t]; !ok {
				a.st.del(searchKey(t, old.GetLeikaKey()))
			}
		}
		for _, ls := range old.GetLifeSituations() {
			a.st.del(lifeKey(textsearch.Fold(ls), old.GetLeikaKey()))
		}
	}
	for _, t := range slices.Sorted(maps.Keys(newTerms)) { // deterministic write order
		a.st.set(searchKey(t, n.GetLeikaKey()), []byte{byte(newTerms[t])})
	}
	for _, ls := range n.GetLifeSituations() {
		f := textsearch.Fold(ls)
		a.st.set(lifeKey(f, n.GetLeikaKey()), nil)
		a.st.set(lifeNameKey(f), []byte(ls))
	}
	return a.st.setProto(serviceKey(n.GetLeikaKey()), n)
}

func clearOfferingMeta(m proto.Message) {
	o := m.(*registryv1.Offering)
	o.Revision, o.UpdatedAtUnixMs, o.UpdatedBy = 0, 0, ""
}

func (a *applyCtx) putOffering(o *registryv1.Offering, pre *registryv1.Precondition) error {
	if !a.isOperator() && o.GetOrganisationId() != a.cmd.GetIssuer() {
		return a.denied("publish offerings of organisation %s", o.GetOrganisationId())
	}
	if ok, err := a.st.has(orgKey(o.GetOrganisationId())); err != nil {
		return err
	} else if !ok {
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
	if exists && old.GetOrganisationId() != o.GetOrganisationId() && !a.isOperator() {
		return a.denied("take over offering %s of %s", o.GetId(), old.GetOrganisationId())
	}
	if err := a.checkStale(exists, old.GetUpdatedAtUnixMs(), "offering "+o.GetId()); err != nil {
		return err
	}
	if exists && sameContent(old, o, clearOfferingMeta) {
		a.rev = old.GetRevision()
		return nil
	}
	n := proto.Clone(o).(*registryv1.Offering)
	n.Revision, n.UpdatedAtUnixMs, n.UpdatedBy = a.nextRevision(), a.cmd.GetIssuedAtUnixMs(), a.cmd.GetIssuer()
	if exists {
		a.unindexOffering(old)
	}
	for _, area := range n.GetAreas() {
		a.st.set(providerKey(n.GetLeikaKey(), area, n.GetId()), nil)
	}
	a.st.set(orgOfferKey(n.GetOrganisationId(), n.GetId()), nil)
	return a.st.setProto(offeringKey(n.GetId()), n)
}

func (a *applyCtx) unindexOffering(old *registryv1.Offering) {
	for _, area := range old.GetAreas() {
		a.st.del(providerKey(old.GetLeikaKey(), area, old.GetId()))
	}
	a.st.del(orgOfferKey(old.GetOrganisationId(), old.GetId()))
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
	if !a.isOperator() && old.GetOrganisationId() != a.cmd.GetIssuer() {
		return a.denied("delete offering %s of %s", id, old.GetOrganisationId())
	}
	if err := a.checkStale(true, old.GetUpdatedAtUnixMs(), "offering "+id); err != nil {
		return err
	}
	a.unindexOffering(old)
	a.st.del(offeringKey(id))
	return nil
}

func (a *applyCtx) putAuditHead(h *registryv1.AuditHead, pre *registryv1.Precondition) error {
	if h.GetOrganisationId() != a.cmd.GetIssuer() {
		return a.denied("publish the audit head of %s", h.GetOrganisationId())
	}
	old := &registryv1.AuditHead{}
	exists, err := a.st.getProto(auditKey(h.GetOrganisationId()), old)
	if err != nil {
		return err
	}
	if err := checkPrecondition(pre, exists, 0, "audit head of "+h.GetOrganisationId()); err != nil {
		return err
	}
	if exists && h.GetSequence() < old.GetSequence() {
		return fmt.Errorf("%w: audit head sequence %d is behind the published %d", ErrStale, h.GetSequence(), old.GetSequence())
	}
	if exists && h.GetSequence() == old.GetSequence() && h.GetHash() != old.GetHash() {
		return fmt.Errorf("%w: audit head %d already published with another hash", ErrPreconditionFailed, h.GetSequence())
	}
	return a.st.setProto(auditKey(h.GetOrganisationId()), h)
}

// signingKey finds the key a command must verify against, by the key rule
// (keys.SigningKeyAt) at moment at: the index and proposal time of the log
// entry that records the command. A suspended or retired issuer is
// ErrPermissionDenied; every other refusal is ErrUnknownKey.
func signingKey(org *registryv1.Organisation, kid string, at keys.Moment) (*registryv1.PublicKey, error) {
	pk, err := keys.SigningKeyAt(org, kid, at)
	switch {
	case err == nil:
		return pk, nil
	case errors.Is(err, keys.ErrOrgInactive):
		return nil, fmt.Errorf("%w: %v", ErrPermissionDenied, err)
	default:
		return nil, fmt.Errorf("%w: %v", ErrUnknownKey, err)
	}
}

// genesisKey returns the key for a genesis command: the operator's record in
// the command itself, self-signed.
func genesisKey(cmd *registryv1.Command, kid string) (*registryv1.PublicKey, error) {
	for _, m := range cmd.GetMutations() {
		o := m.GetPutOrganisation()
		if o == nil || o.GetId() != cmd.GetIssuer() || o.GetKind() != registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR {
			continue
		}
		o = proto.Clone(o).(*registryv1.Organisation)
		o.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE
		return signingKey(o, kid, keys.Moment{})
	}
	return nil, fmt.Errorf("%w: issuer %s is not registered", ErrUnknownKey, cmd.GetIssuer())
}

func parseKey(pk *registryv1.PublicKey) (jose.JSONWebKey, error) {
	k, err := keys.ParsePublic(pk)
	if err != nil {
		return k, fmt.Errorf("%w: %v", ErrUnknownKey, err)
	}
	return k, nil
}
