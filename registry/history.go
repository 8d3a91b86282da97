package registry

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// History and signed commands.
//
// After every command whose mutations all succeeded, the FSM records
// (recordCommand, in the same log entry as the command's changes, so it is
// replicated state like the rest):
//
//   - j/<issuer>/<id>: the command exactly as its issuer signed it, with the
//     Raft index that applied it. Proofs of responsibility (proof.go) and
//     GetCommand hand it out for offline verification. Commands that only
//     publish an audit head are not kept: they recur for as long as a node
//     hands over cases and concern no one's responsibility; nor are commands
//     that changed nothing (every put unchanged): they leave no trace.
//   - y/<org>/<position>: one HistoryEntry per change and per organisation
//     the change concerns. The position is the revision the change gave its
//     entity (so the command behind a record's revision is found with one
//     read: y/<owner>/<revision> -> issuer, command id -> j/...), or, for a
//     deletion or withdrawal, a fresh revision number drawn from the log
//     entry's counter. Positions increase with the log, so a scan of y/<org>/
//     is the organisation's history, oldest first.
//
// Entries are a function of the command, the state before it and the state
// after it: identical on every replica. A mutation that changed nothing (a
// put of unchanged content keeps an older revision) leaves no entry.

// historyChange is what one mutation changed, for whom.
type historyChange struct {
	change, subject, summary string
	orgs                     []string // concerned organisations, in order, may repeat
}

// recordCommand stores the signed command sc, applied at index with the
// revisions revs (one per mutation), and its history entries. before is the
// state before the command, after the state with the command's changes;
// the records are written to after. seq is the log entry's change counter
// (see Revision): deletions draw their history position from it.
func recordCommand(before, after *stage, sc *SignedCommand, index uint64, revs []uint64, seq *uint64) error {
	cmd := sc.Command
	changed := false
	for i, m := range cmd.GetMutations() {
		if m.GetPutAuditHead() == nil && i < len(revs) && (revs[i] == 0 || IndexOfRevision(revs[i]) == index) {
			changed = true
		}
	}
	if changed {
		after.set(commandJWSKey(cmd.GetIssuer(), cmd.GetId()), append(u64(index), sc.Raw...))
	}
	h := historian{before: before, after: after, issuer: cmd.GetIssuer()}
	for i, m := range cmd.GetMutations() {
		var rev uint64
		if i < len(revs) {
			rev = revs[i]
		}
		if rev != 0 && IndexOfRevision(rev) != index {
			continue // unchanged: the entity kept an older revision
		}
		c, err := h.describe(m)
		if err != nil {
			return err
		}
		if c == nil {
			continue
		}
		pos := rev
		if pos == 0 {
			*seq++
			pos = index<<RevisionBits | *seq
		}
		for _, org := range c.orgs {
			if org == "" {
				continue
			}
			key := historyKey(org, pos)
			if ok, err := after.has(key); err != nil {
				return err
			} else if ok {
				// Already recorded by an earlier mutation or command of
				// this log entry: the first one made the change.
				continue
			}
			e := &registryv1.HistoryEntry{
				Index: index, Revision: rev, Change: c.change, Subject: c.subject, Summary: c.summary,
				Issuer: cmd.GetIssuer(), CommandId: cmd.GetId(), Kid: sc.KID, Actor: cmd.GetActor(),
				IssuedAtUnixMs: cmd.GetIssuedAtUnixMs(),
			}
			if err := after.setProto(key, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// historian describes mutations from the states around a command.
type historian struct {
	before, after *stage
	issuer        string
}

// org returns organisation id's record before and after the command.
func (h historian) org(id string) (old, n *registryv1.Organisation, err error) {
	if old, err = loadOrg(h.before, id); err != nil {
		return nil, nil, err
	}
	n, err = loadOrg(h.after, id)
	return old, n, err
}

// describe returns the change m made, or nil if it concerns no organisation
// (catalogue entries, audit heads).
func (h historian) describe(m *registryv1.Mutation) (*historyChange, error) {
	switch op := m.GetOp().(type) {
	case *registryv1.Mutation_PutOrganisation:
		id := op.PutOrganisation.GetId()
		old, n, err := h.org(id)
		if err != nil {
			return nil, err
		}
		existed := old != nil
		c := &historyChange{change: "organisation", subject: id, orgs: []string{id}}
		if !existed {
			c.summary = fmt.Sprintf("registered %s %q as %s", kindName(n.GetKind()), n.GetName(), statusName(n.GetStatus()))
			if ks := keyList(n.GetKeys()); ks != "" {
				c.summary += " with keys " + ks
			}
		} else {
			c.summary = orgDiff(old, n)
		}
		return c, nil

	case *registryv1.Mutation_RequestJoin:
		id := op.RequestJoin.GetId()
		old, n, err := h.org(id)
		if err != nil {
			return nil, err
		}
		existed := old != nil
		from := "new"
		if existed {
			from = statusName(old.GetStatus())
		}
		s := fmt.Sprintf("join request: %s → %s", from, statusName(n.GetStatus()))
		if ks := keyList(n.GetKeys()); ks != "" {
			s += "; keys " + ks
		}
		if ep := n.GetApiEndpoint(); ep != "" {
			s += "; endpoint " + ep
		}
		return &historyChange{change: "join_request", subject: id, summary: s, orgs: []string{id}}, nil

	case *registryv1.Mutation_ChangeStatus:
		id := op.ChangeStatus.GetOrganisationId()
		old, n, err := h.org(id)
		if err != nil {
			return nil, err
		}
		s := fmt.Sprintf("%s → %s: %s", statusName(old.GetStatus()), statusName(n.GetStatus()), op.ChangeStatus.GetReason())
		return &historyChange{change: "status", subject: id, summary: s, orgs: []string{id}}, nil

	case *registryv1.Mutation_RecoverKeys:
		id := op.RecoverKeys.GetOrganisationId()
		old, n, err := h.org(id)
		if err != nil {
			return nil, err
		}
		s := "keys recovered"
		if d := keysDiff(old.GetKeys(), n.GetKeys()); d != "" {
			s += ": " + d
		}
		s += "; reason: " + op.RecoverKeys.GetReason()
		return &historyChange{change: "key_recovery", subject: id, summary: s, orgs: []string{id}}, nil

	case *registryv1.Mutation_PutOffering:
		o := op.PutOffering
		existed, err := h.before.has(offeringKey(o.GetId()))
		if err != nil {
			return nil, err
		}
		verb := "published"
		if existed {
			verb = "changed"
		}
		s := fmt.Sprintf("%s offering %s (%s) for %s", verb, o.GetId(), o.GetLeikaKey(), strings.Join(o.GetAreas(), ", "))
		return &historyChange{change: "offering", subject: o.GetId(), summary: s, orgs: []string{o.GetOrganisationId()}}, nil

	case *registryv1.Mutation_DeleteOffering:
		old := &registryv1.Offering{}
		if ok, err := h.before.getProto(offeringKey(op.DeleteOffering), old); err != nil || !ok {
			return nil, err
		}
		s := fmt.Sprintf("deleted offering %s (%s) for %s", old.GetId(), old.GetLeikaKey(), strings.Join(old.GetAreas(), ", "))
		return &historyChange{change: "offering_deleted", subject: old.GetId(), summary: s, orgs: []string{old.GetOrganisationId()}}, nil

	case *registryv1.Mutation_PutAuthorisation:
		a := op.PutAuthorisation
		existed, err := h.before.has(authKey(a.GetId()))
		if err != nil {
			return nil, err
		}
		verb := "granted"
		if existed {
			verb = "changed"
		}
		s := fmt.Sprintf("%s authorisation %s: %s", verb, a.GetId(), authorisationText(a))
		return &historyChange{change: "authorisation", subject: a.GetId(), summary: s, orgs: authorisationOrgs(a)}, nil

	case *registryv1.Mutation_WithdrawAuthorisation:
		old := &registryv1.Authorisation{}
		if ok, err := h.before.getProto(authKey(op.WithdrawAuthorisation), old); err != nil || !ok {
			return nil, err
		}
		s := fmt.Sprintf("withdrew authorisation %s: %s", old.GetId(), authorisationText(old))
		return &historyChange{change: "authorisation_withdrawn", subject: old.GetId(), summary: s, orgs: authorisationOrgs(old)}, nil

	case *registryv1.Mutation_PutNextSteps:
		id := op.PutNextSteps.GetId()
		n := &registryv1.NextSteps{}
		if ok, err := h.after.getProto(nextStepsKey(id), n); err != nil || !ok {
			return nil, err
		}
		existed, err := h.before.has(nextStepsKey(id))
		if err != nil {
			return nil, err
		}
		verb := "published"
		if existed {
			verb = "changed"
		}
		s := fmt.Sprintf("%s next steps %s", verb, nextStepsText(n))
		return &historyChange{change: "next_steps", subject: id, summary: s, orgs: []string{n.GetUpdatedBy()}}, nil

	case *registryv1.Mutation_DeleteNextSteps:
		old := &registryv1.NextSteps{}
		if ok, err := h.before.getProto(nextStepsKey(op.DeleteNextSteps), old); err != nil || !ok {
			return nil, err
		}
		s := "withdrew next steps " + nextStepsText(old)
		return &historyChange{change: "next_steps_withdrawn", subject: old.GetId(), summary: s, orgs: []string{old.GetUpdatedBy(), h.issuer}}, nil
	}
	return nil, nil
}

// authorisationOrgs are the organisations an authorisation concerns: its
// grantor, its grantee and the municipality a grant on behalf is for.
func authorisationOrgs(a *registryv1.Authorisation) []string {
	return []string{a.GetGrantorId(), a.GetGranteeId(), a.GetOnBehalfOf()}
}

func authorisationText(a *registryv1.Authorisation) string {
	services := "every service"
	if len(a.GetLeikaKeys()) > 0 {
		services = "services " + strings.Join(a.GetLeikaKeys(), ", ")
	}
	s := fmt.Sprintf("%s entitles %s to offer %s for %s", a.GetGrantorId(), a.GetGranteeId(), services, strings.Join(a.GetAreas(), ", "))
	if m := a.GetOnBehalfOf(); m != "" {
		s += " on behalf of " + m
	}
	return s
}

func statusName(s registryv1.OrganisationStatus) string {
	return strings.TrimPrefix(s.String(), "ORGANISATION_STATUS_")
}

func kindName(k registryv1.OrganisationKind) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k.String(), "ORGANISATION_KIND_"), "_", " "))
}

func keyStatusName(s registryv1.KeyStatus) string {
	return strings.TrimPrefix(s.String(), "KEY_STATUS_")
}

// keyList renders keys as "kid (use)", in record order.
func keyList(ks []*registryv1.PublicKey) string {
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s (%s)", k.GetKid(), k.GetUse()))
	}
	return strings.Join(parts, ", ")
}

// keysDiff describes how a key set changed: added and removed keys and
// status changes, in record order.
func keysDiff(old, n []*registryv1.PublicKey) string {
	before := map[string]*registryv1.PublicKey{}
	for _, k := range old {
		before[k.GetKid()] = k
	}
	after := map[string]bool{}
	var parts []string
	for _, k := range n {
		after[k.GetKid()] = true
		o, ok := before[k.GetKid()]
		switch {
		case !ok:
			parts = append(parts, fmt.Sprintf("key %s (%s) added", k.GetKid(), k.GetUse()))
		case o.GetStatus() != k.GetStatus():
			parts = append(parts, fmt.Sprintf("key %s %s → %s", k.GetKid(), keyStatusName(o.GetStatus()), keyStatusName(k.GetStatus())))
		}
	}
	for _, k := range old {
		if !after[k.GetKid()] {
			parts = append(parts, fmt.Sprintf("key %s removed", k.GetKid()))
		}
	}
	return strings.Join(parts, "; ")
}

// orgDiff describes what changed between two versions of an organisation.
func orgDiff(old, n *registryv1.Organisation) string {
	var parts []string
	if old.GetStatus() != n.GetStatus() {
		s := fmt.Sprintf("%s → %s", statusName(old.GetStatus()), statusName(n.GetStatus()))
		if r := n.GetStatusReason(); r != "" && r != old.GetStatusReason() {
			s += ": " + r
		}
		parts = append(parts, s)
	}
	if old.GetName() != n.GetName() {
		parts = append(parts, fmt.Sprintf("name %q → %q", old.GetName(), n.GetName()))
	}
	if old.GetApiEndpoint() != n.GetApiEndpoint() {
		parts = append(parts, fmt.Sprintf("endpoint %q → %q", old.GetApiEndpoint(), n.GetApiEndpoint()))
	}
	if d := keysDiff(old.GetKeys(), n.GetKeys()); d != "" {
		parts = append(parts, d)
	}
	var fields []string
	for _, f := range []struct {
		name    string
		changed bool
	}{
		{"kind", old.GetKind() != n.GetKind()},
		{"state code", old.GetStateCode() != n.GetStateCode()},
		{"ARS", old.GetArs() != n.GetArs()},
		{"AGS", old.GetAgs() != n.GetAgs()},
		{"parent", old.GetParentId() != n.GetParentId()},
		{"location", old.GetLocation().GetLat() != n.GetLocation().GetLat() || old.GetLocation().GetLon() != n.GetLocation().GetLon()},
		{"postal code", old.GetPostalCode() != n.GetPostalCode()},
		{"population", old.GetPopulation() != n.GetPopulation()},
	} {
		if f.changed {
			fields = append(fields, f.name)
		}
	}
	if len(fields) > 0 {
		parts = append(parts, "changed "+strings.Join(fields, ", "))
	}
	if len(parts) == 0 {
		return "record updated"
	}
	return strings.Join(parts, "; ")
}

// History returns the changes concerning an organisation, oldest first,
// one page at a time (pageSize at most 1000, default 100; pageToken from
// the previous page's answer).
func (r *Reader) History(org string, pageSize int, pageToken string) ([]*registryv1.HistoryEntry, string, uint64, error) {
	if !ValidOrgID(org) {
		return nil, "", 0, invalid("organisation id %q must be a 12-digit ARS or a slug", org)
	}
	var err error
	if pageSize, err = checkPageSize(pageSize); err != nil {
		return nil, "", 0, err
	}
	prefix := historyPrefix(org)
	start := prefix
	if pageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(pageToken)
		if err != nil || len(b) != 8 {
			return nil, "", 0, invalid("bad page token")
		}
		start = historyKey(org, binary.BigEndian.Uint64(b))
	}
	var out []*registryv1.HistoryEntry
	var next string
	idx, err := r.view(func(st *stage) error {
		it := st.txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: min(pageSize+1, 100)})
		defer it.Close()
		for it.Seek(start); it.Valid(); it.Next() {
			key := it.Item().Key()
			if len(out) == pageSize {
				next = base64.RawURLEncoding.EncodeToString(key[len(prefix):])
				return nil
			}
			e := &registryv1.HistoryEntry{}
			if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, e) }); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, next, idx, err
}

// Command returns an applied command as its issuer signed it (JWS compact
// serialisation) and the Raft index that applied it; readIndex is the state
// the answer was read from. ErrNotFound if no such command was recorded.
func (r *Reader) Command(issuer, id string) (jws string, index, readIndex uint64, err error) {
	if !ValidOrgID(issuer) {
		return "", 0, 0, invalid("issuer %q must be a 12-digit ARS or a slug", issuer)
	}
	if !reCommandID.MatchString(id) {
		return "", 0, 0, invalid("command id %q must be 16-64 characters of [A-Za-z0-9_-]", id)
	}
	readIndex, err = r.view(func(st *stage) error {
		var err error
		jws, index, err = storedCommand(st, issuer, id)
		return err
	})
	return jws, index, readIndex, err
}

// storedCommand reads j/<issuer>/<id>.
func storedCommand(st *stage, issuer, id string) (string, uint64, error) {
	v, err := st.get(commandJWSKey(issuer, id))
	if err != nil {
		return "", 0, err
	}
	if len(v) < 8 {
		return "", 0, fmt.Errorf("%w: no recorded command %s of %s", ErrNotFound, id, issuer)
	}
	return string(v[8:]), binary.BigEndian.Uint64(v[:8]), nil
}
