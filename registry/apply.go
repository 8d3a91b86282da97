package registry

import (
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
	st     *stage
	index  uint64
	issuer *registryv1.Organisation // nil only during genesis
	cmd    *registryv1.Command
	// kid is the key id the command was signed with.
	kid      string
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
	case *registryv1.Mutation_RequestJoin:
		return a.requestJoin(op.RequestJoin, m.GetPrecondition())
	case *registryv1.Mutation_ChangeStatus:
		return a.changeStatus(op.ChangeStatus, m.GetPrecondition())
	case *registryv1.Mutation_RecoverKeys:
		return a.recoverKeys(op.RecoverKeys, m.GetPrecondition())
	case *registryv1.Mutation_PutAuthorisation:
		return a.putAuthorisation(op.PutAuthorisation, m.GetPrecondition())
	case *registryv1.Mutation_WithdrawAuthorisation:
		return a.withdrawAuthorisation(op.WithdrawAuthorisation, m.GetPrecondition())
	case *registryv1.Mutation_PutNextSteps:
		return a.putNextSteps(op.PutNextSteps, m.GetPrecondition())
	case *registryv1.Mutation_DeleteNextSteps:
		return a.deleteNextSteps(op.DeleteNextSteps, m.GetPrecondition())
	default:
		return invalid("unknown mutation %T", op)
	}
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
		return ruleErr(ErrPermissionDenied, ruleCatalogue, "%s may not edit the service catalogue (operator, state and federal agencies only)", a.cmd.GetIssuer())
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

func parseKey(pk *registryv1.PublicKey) (jose.JSONWebKey, error) { return parsedKeys.get(pk) }

func parseKeyUncached(pk *registryv1.PublicKey) (jose.JSONWebKey, error) {
	k, err := keys.ParsePublic(pk)
	if err != nil {
		return k, fmt.Errorf("%w: %v", ErrUnknownKey, err)
	}
	return k, nil
}
