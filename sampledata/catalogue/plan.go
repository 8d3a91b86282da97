package catalogue

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// Registry is what planning reads from the registry (the command line
// serves it with linearizable reads through QueryService).
type Registry interface {
	// Organisation returns the organisation, or nil, nil if there is none.
	Organisation(ctx context.Context, id string) (*registryv1.Organisation, error)
	// Service returns the catalogue entry, or nil, nil if there is none.
	Service(ctx context.Context, leika string) (*registryv1.Service, error)
	// Offerings returns all offerings of org and the registry index the
	// answer reflects.
	Offerings(ctx context.Context, org string) ([]*registryv1.Offering, uint64, error)
	// Authorisations returns the authorisations granted to org.
	Authorisations(ctx context.Context, grantee string) ([]*registryv1.Authorisation, error)
}

// Publisher sends signed commands (PublishService.Publish).
type Publisher interface {
	Publish(ctx context.Context, signedCommands []string) (*registryv1.PublishResponse, error)
}

// Action is what an import does with one record.
type Action string

// The actions of a plan.
const (
	ActionNew       Action = "new"
	ActionChanged   Action = "changed"
	ActionUnchanged Action = "unchanged"
	ActionRefused   Action = "refused"
	ActionDelete    Action = "delete"
)

// Entry is one line of a plan: a record of the file (or an explicit
// deletion) and what the import does with it.
type Entry struct {
	Action Action
	// Kind is "offering" or "service" (a catalogue entry).
	Kind   string
	Source string // where in the files; "--delete" for deletions
	ID     string // offering id or LeiKa key
	// Changed names the fields that differ from the registry (changed).
	Changed []string
	// Reason is why the record is refused (refused).
	Reason   error
	Warnings []string

	mutation *registryv1.Mutation

	// Set by Apply: the command sent, and its outcome.
	CommandID string
	Result    string // "applied at index N", "already applied (duplicate)", "failed: code: msg", "not sent"
	Applied   bool
}

// Plan is the difference between the files and the registry.
type Plan struct {
	Org string
	// Index is the registry index the plan read (its base).
	Index   uint64
	Entries []Entry
	// Notes are remarks on the whole import (catalogue entries not applied).
	Notes []string
}

// Count returns how many entries have the action.
func (p *Plan) Count(a Action) int {
	n := 0
	for _, e := range p.Entries {
		if e.Action == a {
			n++
		}
	}
	return n
}

// PlanOptions configure MakePlan.
type PlanOptions struct {
	// Delete are offering ids to delete explicitly (they must be the
	// organisation's).
	Delete []string
	// DeleteMissing deletes every offering of the organisation that no
	// record of the files names (refused records included). Off by
	// default: a file that omits an offering leaves it alone.
	DeleteMissing bool
}

// catalogueEditor reports whether the governance rules let o edit the
// service catalogue (rule "catalogue").
func catalogueEditor(o *registryv1.Organisation) bool {
	switch o.GetKind() {
	case registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR,
		registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY,
		registryv1.OrganisationKind_ORGANISATION_KIND_FEDERAL_AGENCY:
		return true
	}
	return false
}

// MakePlan checks every record against the registry and the governance
// rules (the same ones the registry applies: an organisation publishes only
// its own offerings, for its own area or areas an authorisation grants it,
// for LeiKa keys in the catalogue) and compares it with what the registry
// holds. It changes nothing.
func MakePlan(ctx context.Context, reg Registry, org string, recs []Record, opt PlanOptions) (*Plan, error) {
	p := &Plan{Org: org}
	me, err := reg.Organisation(ctx, org)
	if err != nil {
		return nil, err
	}
	if me == nil {
		return nil, fmt.Errorf("organisation %s is not in the registry", org)
	}
	var inactive error
	if me.GetStatus() != registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE {
		inactive = fmt.Errorf("%w: organisation %s is %s, not active", ErrNotEntitled, org, me.GetStatus())
	}
	auths, err := reg.Authorisations(ctx, org)
	if err != nil {
		return nil, err
	}
	current, index, err := reg.Offerings(ctx, org)
	if err != nil {
		return nil, err
	}
	p.Index = index
	byID := map[string]*registryv1.Offering{}
	inCatalogue := map[string]bool{} // LeiKa keys org offers already: in the catalogue (entries are never deleted)
	for _, o := range current {
		byID[o.GetId()] = o
		inCatalogue[o.GetLeikaKey()] = true
	}
	services := map[string]*registryv1.Service{}
	known := func(leika string) (*registryv1.Service, error) {
		if s, ok := services[leika]; ok {
			return s, nil
		}
		s, err := reg.Service(ctx, leika)
		if err != nil {
			return nil, err
		}
		services[leika] = s
		return s, nil
	}
	areaKnown := map[string]bool{}
	editor := catalogueEditor(me)
	plannedService := map[string]bool{}
	skippedCatalogue := 0
	named := map[string]bool{}

	for _, r := range recs {
		e := Entry{Kind: "offering", Source: r.Source, ID: r.Ref, Warnings: r.Warnings}
		if r.Offering != nil {
			e.ID = r.Offering.GetId()
			named[e.ID] = true
		}
		refuse := func(err error) {
			e.Action, e.Reason = ActionRefused, err
			p.Entries = append(p.Entries, e)
		}
		if r.Problem != nil {
			refuse(r.Problem)
			continue
		}
		if inactive != nil {
			refuse(inactive)
			continue
		}
		o := r.Offering
		if o.GetOrganisationId() != org {
			refuse(fmt.Errorf("%w: an offering of %s (rule own-offerings)", ErrNotEntitled, o.GetOrganisationId()))
			continue
		}
		// The catalogue entry: added or updated first, by an editor.
		var svc *registryv1.Service
		if editor || !inCatalogue[o.GetLeikaKey()] {
			if svc, err = known(o.GetLeikaKey()); err != nil {
				return nil, err
			}
		} else {
			svc = &registryv1.Service{LeikaKey: o.GetLeikaKey()}
		}
		if r.Service != nil && editor && !plannedService[o.GetLeikaKey()] {
			plannedService[o.GetLeikaKey()] = true
			se := Entry{Kind: "service", Source: r.Source, ID: o.GetLeikaKey()}
			n := proto.Clone(r.Service).(*registryv1.Service)
			if svc == nil {
				se.Action = ActionNew
			} else if se.Changed = diff(svc, n); len(se.Changed) == 0 {
				se.Action = ActionUnchanged
			} else {
				se.Action = ActionChanged
				if len(n.GetLifeSituations()) == 0 {
					n.LifeSituations = svc.GetLifeSituations()
					se.Changed = diff(svc, n)
				}
				if len(se.Changed) == 0 {
					se.Action = ActionUnchanged
				}
			}
			se.mutation = &registryv1.Mutation{Op: &registryv1.Mutation_PutService{PutService: n}, Precondition: precondition(svc == nil, svc.GetRevision())}
			p.Entries = append(p.Entries, se)
		} else if r.Service != nil && !editor {
			skippedCatalogue++
		}
		if svc == nil && !plannedService[o.GetLeikaKey()] {
			refuse(fmt.Errorf("%w: LeiKa key %s is not in the service catalogue, and %s may not add it (rule catalogue: the operator, state and federal agencies)",
				ErrNotEntitled, o.GetLeikaKey(), org))
			continue
		}
		// Areas: known, and entitled.
		var areaErr error
		for _, a := range o.GetAreas() {
			if len(a) == 12 {
				ok, seen := areaKnown[a]
				if !seen {
					m, err := reg.Organisation(ctx, a)
					if err != nil {
						return nil, err
					}
					ok = m != nil
					areaKnown[a] = ok
				}
				if !ok {
					areaErr = fmt.Errorf("%w: no municipality %s is registered", ErrUnknownArea, a)
					break
				}
			}
			if !registry.Entitled(me, auths, o.GetLeikaKey(), a) {
				areaErr = fmt.Errorf("%w: %s may not offer %s for area %s: not its own area and no authorisation covers it (rule area-responsibility)",
					ErrNotEntitled, org, o.GetLeikaKey(), a)
				break
			}
		}
		if areaErr != nil {
			refuse(areaErr)
			continue
		}
		old := byID[o.GetId()]
		switch {
		case old == nil:
			e.Action = ActionNew
		default:
			if e.Changed = diff(old, o); len(e.Changed) == 0 {
				e.Action = ActionUnchanged
			} else {
				e.Action = ActionChanged
			}
		}
		e.mutation = &registryv1.Mutation{Op: &registryv1.Mutation_PutOffering{PutOffering: o}, Precondition: precondition(old == nil, old.GetRevision())}
		p.Entries = append(p.Entries, e)
	}
	if skippedCatalogue > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("%d catalogue entries in the files are not applied: %s may not edit the catalogue (the operator, state and federal agencies do)", skippedCatalogue, org))
	}

	// Deletions: only those asked for.
	del := slices.Clone(opt.Delete)
	if opt.DeleteMissing {
		for _, o := range current {
			if !named[o.GetId()] {
				del = append(del, o.GetId())
			}
		}
	}
	sort.Strings(del)
	del = slices.Compact(del)
	for _, id := range del {
		e := Entry{Kind: "offering", Source: "--delete", ID: id}
		if opt.DeleteMissing && !slices.Contains(opt.Delete, id) {
			e.Source = "--delete-missing"
		}
		old := byID[id]
		switch {
		case old == nil:
			e.Action, e.Reason = ActionRefused, fmt.Errorf("%w: %s has no offering %s to delete", ErrNotEntitled, org, id)
		case named[id]:
			e.Action, e.Reason = ActionRefused, fmt.Errorf("offering %s is both in the files and to be deleted", id)
		case inactive != nil:
			e.Action, e.Reason = ActionRefused, inactive
		default:
			e.Action = ActionDelete
			e.mutation = &registryv1.Mutation{Op: &registryv1.Mutation_DeleteOffering{DeleteOffering: id}, Precondition: precondition(false, old.GetRevision())}
		}
		p.Entries = append(p.Entries, e)
	}
	// Catalogue entries first: offerings need them.
	sort.SliceStable(p.Entries, func(i, j int) bool { return p.Entries[i].Kind == "service" && p.Entries[j].Kind != "service" })
	return p, nil
}

func precondition(absent bool, rev uint64) *registryv1.Precondition {
	if absent {
		return &registryv1.Precondition{Condition: &registryv1.Precondition_Absent{Absent: true}}
	}
	return &registryv1.Precondition{Condition: &registryv1.Precondition_Revision{Revision: rev}}
}

// metaFields are set by the registry, not by a file.
var metaFields = map[protoreflect.Name]bool{"revision": true, "updated_at_unix_ms": true, "updated_by": true, "command_id": true}

// diff names the top-level fields in which b differs from a, ignoring the
// registry's metadata.
func diff(a, b proto.Message) []string {
	ra, rb := a.ProtoReflect(), b.ProtoReflect()
	var out []string
	fields := ra.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		if metaFields[f.Name()] {
			continue
		}
		if !fieldEqual(f, ra, rb) {
			out = append(out, string(f.Name()))
		}
	}
	return out
}

func fieldEqual(f protoreflect.FieldDescriptor, a, b protoreflect.Message) bool {
	if a.Has(f) != b.Has(f) {
		return false
	}
	if !a.Has(f) {
		return true
	}
	ca, cb := a.New(), b.New()
	ca.Set(f, a.Get(f))
	cb.Set(f, b.Get(f))
	return proto.Equal(ca.Interface(), cb.Interface())
}

// ApplyOptions configure Apply.
type ApplyOptions struct {
	Issuer string
	Key    jose.JSONWebKey
	// Now is the issue time of the commands (default time.Now).
	Now func() time.Time
	// PerRequest is the number of commands per Publish call (default 100).
	PerRequest int
	// Tries is how often a Publish call that failed in transit is sent
	// again, with the same command ids (default 5).
	Tries        int
	RetryBackoff time.Duration
	// Retryable tells a transient Publish error (default: none is).
	Retryable func(error) bool
}

// idScheme is hashed into every command id.
const idScheme = "verbund-catalogue/v1"

// CommandID is the deterministic id of the command that makes one change:
// base64url of the first 24 bytes of SHA-256 over the scheme, the issuer,
// the registry index the plan was made at and the deterministic encoding of
// the mutation (with its precondition). The same change planned on the same
// registry state always has the same id, so a Publish call sent again is
// answered "duplicate"; the base index keeps a later change that happens to
// repeat an earlier one (an offering deleted and imported again) from being
// taken for that earlier command.
func CommandID(issuer string, base uint64, m *registryv1.Mutation) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00", idScheme, issuer, base)
	h.Write(b)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:24]), nil
}

// Report counts the outcome of Apply.
type Report struct {
	Sent, Applied, Duplicates, Failed, NotSent int
	LastIndex                                  uint64
}

// Apply sends the plan's new, changed and delete entries, one signed command
// each (all-or-nothing in the registry), with a precondition on the revision
// the plan saw. It records each entry's outcome in the plan; on an error
// (a Publish call that failed for good, ctx done) the entries not sent say
// "not sent". Commands the registry applied before (an interrupted run)
// come back as duplicates. Refusals of single commands are no error:
// the report counts them.
func (p *Plan) Apply(ctx context.Context, pub Publisher, opt ApplyOptions) (Report, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.PerRequest <= 0 {
		opt.PerRequest = 100
	}
	if opt.Tries <= 0 {
		opt.Tries = 5
	}
	if opt.RetryBackoff <= 0 {
		opt.RetryBackoff = 250 * time.Millisecond
	}
	var rep Report
	var todo []int
	for i := range p.Entries {
		e := &p.Entries[i]
		if e.Action == ActionNew || e.Action == ActionChanged || e.Action == ActionDelete {
			todo = append(todo, i)
			e.Result = "not sent"
		}
	}
	// Catalogue entries in their own round, before the offerings.
	var rounds [][]int
	var svc, rest []int
	for _, i := range todo {
		if p.Entries[i].Kind == "service" {
			svc = append(svc, i)
		} else {
			rest = append(rest, i)
		}
	}
	for _, r := range [][]int{svc, rest} {
		for start := 0; start < len(r); start += opt.PerRequest {
			rounds = append(rounds, r[start:min(start+opt.PerRequest, len(r))])
		}
	}
	finish := func(err error) (Report, error) {
		for _, i := range todo {
			if p.Entries[i].Result == "not sent" {
				rep.NotSent++
			}
		}
		return rep, err
	}
	for _, round := range rounds {
		signed := make([]string, len(round))
		now := opt.Now().UnixMilli()
		for j, i := range round {
			e := &p.Entries[i]
			id, err := CommandID(opt.Issuer, p.Index, e.mutation)
			if err != nil {
				return finish(err)
			}
			e.CommandID = id
			cmd := &registryv1.Command{Id: id, Issuer: opt.Issuer, IssuedAtUnixMs: now, Mutations: []*registryv1.Mutation{e.mutation}}
			if err := registry.ValidateCommand(cmd); err != nil {
				return finish(fmt.Errorf("%s: %w", e.ID, err))
			}
			if signed[j], err = registry.SignCommand(cmd, opt.Key); err != nil {
				return finish(fmt.Errorf("%s: %w", e.ID, err))
			}
		}
		var res *registryv1.PublishResponse
		var err error
		backoff := opt.RetryBackoff
		for try := 1; ; try++ {
			if err = ctx.Err(); err != nil {
				return finish(err)
			}
			res, err = pub.Publish(ctx, signed)
			if err == nil || opt.Retryable == nil || !opt.Retryable(err) || try >= opt.Tries {
				break
			}
			select {
			case <-ctx.Done():
				return finish(ctx.Err())
			case <-time.After(backoff):
			}
			backoff *= 2
		}
		if err != nil {
			return finish(err)
		}
		rep.Sent += len(round)
		for j, i := range round {
			e := &p.Entries[i]
			if j >= len(res.GetResults()) {
				e.Result = "failed: no_result: the node returned no result for this command"
				rep.Failed++
				continue
			}
			r := res.GetResults()[j]
			switch {
			case r.GetErrorCode() != "":
				e.Result = fmt.Sprintf("failed: %s: %s", r.GetErrorCode(), r.GetErrorMessage())
				rep.Failed++
			case r.GetDuplicate():
				e.Result, e.Applied = fmt.Sprintf("already applied at index %d (duplicate)", r.GetIndex()), true
				rep.Duplicates++
			default:
				e.Result, e.Applied = fmt.Sprintf("applied at index %d", r.GetIndex()), true
				rep.Applied++
			}
			rep.LastIndex = max(rep.LastIndex, r.GetIndex())
		}
		rep.LastIndex = max(rep.LastIndex, res.GetIndex())
	}
	return finish(nil)
}

// ErrNothingToExport is returned by Export when the selection is empty.
var ErrNothingToExport = errors.New("no offerings to export")

// Export writes offerings (with the catalogue entries of their LeiKa keys,
// from services; nil entries are left out) as an XZuFiFile, in offering id
// order.
func Export(source string, offerings []*registryv1.Offering, services map[string]*registryv1.Service) (*XZuFiFile, error) {
	if len(offerings) == 0 {
		return nil, ErrNothingToExport
	}
	sorted := slices.Clone(offerings)
	slices.SortFunc(sorted, func(a, b *registryv1.Offering) int {
		switch {
		case a.GetId() < b.GetId():
			return -1
		case a.GetId() > b.GetId():
			return 1
		}
		return 0
	})
	f := &XZuFiFile{Schema: XZuFiSubset, Quelle: source}
	for _, o := range sorted {
		f.Leistungen = append(f.Leistungen, ToXZuFi(o, services[o.GetLeikaKey()]))
	}
	return f, nil
}
