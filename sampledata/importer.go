package sampledata

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// Publisher is what the importer needs from a node (owned here; the node's
// Connect client satisfies it via a tiny adapter).
type Publisher interface {
	Publish(ctx context.Context, signedCommands []string) (*registryv1.PublishResponse, error)
}

// Progress reports the state of the current phase. Done, Total and
// Duplicates count records (mutations): Duplicates are those in commands
// the registry had already applied.
type Progress struct {
	Phase      string
	Done       int
	Total      int
	Duplicates int
	Elapsed    time.Duration
}

// Options configure Import.
type Options struct {
	// OperatorID is the network operator's organisation id; it registers
	// the state agencies and writes the catalogue entries.
	OperatorID  string
	OperatorKey jose.JSONWebKey
	// Keys returns the private signing key of each sample organisation that
	// signs (KeyedOrganisations: the 16 state agencies, Munich and the
	// synthetic shared service centre). Keep them: a re-run with other
	// keys is refused by the registry. KeyFiles keeps them in a directory.
	Keys KeySource
	// Lookup, if set, reads an organisation (nil, nil if there is none).
	// With it a re-run skips Munich's join and approval once Munich is
	// approved, and Munich's offerings once Munich's record no longer
	// holds the sample key (its own node took over, e.g. in `make
	// cluster`); without it a re-run relies on the registry's duplicate
	// answers, which last for its replay window (24 hours by default).
	Lookup func(ctx context.Context, id string) (*registryv1.Organisation, error)

	// idScheme replaces commandIDScheme (tests: new ids, as if the
	// registry had forgotten the earlier run's after its replay window).
	idScheme string
	// BatchSize is the number of mutations per command (default 500, at
	// most registry.MaxMutations). Commands are also cut at 256 KiB. Batch
	// boundaries enter the command ids: resume with the same BatchSize.
	BatchSize int
	// Parallel is the number of commands in flight within a phase
	// (default 4). Phases run one after the other.
	Parallel int
	// OnProgress, if set, is called at the start of every phase and after
	// every command; calls are serialised.
	OnProgress func(Progress)
	// RetryBackoff is the delay before retrying a transient Publish failure
	// (default 250ms); it doubles per try, up to 5 tries per command.
	RetryBackoff time.Duration
}

// Import phases, in order. Every phase is signed by the organisation the
// registry's governance rules make responsible for it (see Import).
const (
	PhaseStates         = "states"
	PhaseDistricts      = "districts"
	PhaseAssociations   = "associations"
	PhaseMunicipalities = "municipalities"
	PhaseMunichJoin     = "munich-join"
	PhaseMunichApproval = "munich-approval"
	PhaseServices       = "services"
	PhaseOfferings      = "offerings"
	PhaseDelegation     = "delegation"
	PhaseDelegatedOffer = "delegated-offerings"
	PhaseNextSteps      = "next-steps"
)

// PhaseSummary counts one phase. Records = Applied + Duplicates.
type PhaseSummary struct {
	Phase      string
	Commands   int
	Records    int
	Applied    int
	Duplicates int
}

// Summary is the outcome of Import. On error it covers what was done.
type Summary struct {
	Phases     []PhaseSummary
	Commands   int
	Records    int
	Applied    int
	Duplicates int
	// LastIndex is the highest Raft index reported; pass it as
	// ReadOptions.min_index to read the imported data on any node.
	LastIndex uint64
	Elapsed   time.Duration
}

// BatchError is a command the registry refused, or could not be reached
// for. errors.Is(err, registry.ErrPermissionDenied) etc. work for refusals.
type BatchError struct {
	Phase     string
	Batch     int
	CommandID string
	// Code is the registry's error_code; empty if Publish itself failed.
	Code string
	Err  error
}

func (e *BatchError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("sampledata: %s batch %d (command %s): %s: %v", e.Phase, e.Batch, e.CommandID, e.Code, e.Err)
	}
	return fmt.Sprintf("sampledata: %s batch %d (command %s): %v", e.Phase, e.Batch, e.CommandID, e.Err)
}

func (e *BatchError) Unwrap() error { return e.Err }

const (
	defaultBatchSize = 500
	defaultParallel  = 4
	defaultBackoff   = 250 * time.Millisecond
	maxBackoff       = 5 * time.Second
	maxTries         = 5
	// featureLevelWait bounds how long a command refused with
	// feature_level is retried (the leader raises the level within a
	// reconcile interval of the last server's upgrade).
	featureLevelWait = 30 * time.Second
	maxBatchBytes    = 256 << 10
	// commandIDScheme is hashed into every command id; change it only to
	// force a complete re-import.
	commandIDScheme = "verbund-sampledata/v2"
)

type batch struct {
	num    int
	id     string
	scheme string
	issuer string
	key    jose.JSONWebKey
	muts   []*registryv1.Mutation
	bytes  int
}

type phase struct {
	name    string
	batches []*batch
	records int
	// skip, if set, is asked before the phase runs: true counts the whole
	// phase as done before (duplicates) without sending anything.
	skip func(ctx context.Context) (bool, error)
	// listing: the phase lists directory entries (put_organisation without
	// keys); with Options.Lookup, entries that have joined since are left
	// out (see importer.unjoined).
	listing bool
}

// commandID is the deterministic id of a batch: base64url of the first 24
// bytes of SHA-256 over the scheme, phase, issuer, batch
// number and the deterministic encoding of the mutations (32 characters).
// The same data always yields the same ids, so the registry answers
// "duplicate" for batches it has applied before.
func commandID(h []byte) string { return base64.RawURLEncoding.EncodeToString(h[:24]) }

func makeBatches(name, issuer string, muts []*registryv1.Mutation, size int) (*phase, error) {
	return makeBatchesScheme(commandIDScheme, name, issuer, muts, size)
}

// makeBatchesScheme is makeBatches with the id scheme given.
func makeBatchesScheme(scheme, name, issuer string, muts []*registryv1.Mutation, size int) (*phase, error) {
	ph := &phase{name: name, records: len(muts)}
	var cur *batch
	sum := sha256.New()
	finish := func() {
		if cur != nil {
			cur.id = commandID(sum.Sum(nil))
			ph.batches = append(ph.batches, cur)
		}
	}
	mo := proto.MarshalOptions{Deterministic: true}
	var lenBuf [binary.MaxVarintLen64]byte
	for _, m := range muts {
		b, err := mo.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("%s: encode mutation: %w", name, err)
		}
		if cur == nil || len(cur.muts) >= size || cur.bytes+len(b) > maxBatchBytes {
			finish()
			cur = &batch{num: len(ph.batches), issuer: issuer, scheme: scheme}
			sum.Reset()
			for _, s := range []string{scheme, name, issuer, strconv.Itoa(cur.num)} {
				sum.Write([]byte(s))
				sum.Write([]byte{0})
			}
		}
		cur.muts = append(cur.muts, m)
		cur.bytes += len(b)
		sum.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(b)))])
		sum.Write(b)
	}
	finish()
	return ph, nil
}

func putOrgs(os []*registryv1.Organisation) []*registryv1.Mutation {
	out := make([]*registryv1.Mutation, len(os))
	for i, o := range os {
		out[i] = &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: o}}
	}
	return out
}

func checkSigningKey(what string, k jose.JSONWebKey) error {
	if k.KeyID == "" || k.Key == nil || !k.Valid() || k.IsPublic() {
		return fmt.Errorf("sampledata: %s must be a private signing key with a kid", what)
	}
	return nil
}

// The synthetic delegation of the demo: a shared service centre that does
// not exist, entitled by Bayern's state agency on behalf of Unterhaching
// (a municipality that has not joined) to serve one service there, so that
// FindProviders for Unterhaching shows a delegated provider. Everything
// about it is marked "synthetisch" / "synthetic".
const (
	SSCID             = "ssc-beispiel-oberbayern"
	DelegatedARS      = "091840148148" // Unterhaching, Landkreis München
	DelegatedLeiKa    = "99050012104000"
	DelegationID      = "land-09:" + SSCID + ":091840148148"
	delegationGrantor = "land-09"
)

// KeySource returns the private signing key of a sample organisation.
type KeySource func(orgID string) (jose.JSONWebKey, error)

// KeyedOrganisations lists the sample organisations that sign commands and
// so need a key from Options.Keys: the state agencies, Munich and the
// synthetic shared service centre.
func KeyedOrganisations() ([]string, error) {
	states, err := States()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(states)+2)
	for _, s := range states {
		out = append(out, s.GetId())
	}
	return append(out, MunichARS, SSCID), nil
}

// KeyFiles is a KeySource that keeps each organisation's key in
// dir/<id>.jwk (mode 0600), generated on first use and reused after, so
// that a restarted import signs with the keys the registry knows.
func KeyFiles(dir string) KeySource {
	return func(id string) (jose.JSONWebKey, error) {
		if !registry.ValidOrgID(id) {
			return jose.JSONWebKey{}, fmt.Errorf("sampledata: key for %q: not an organisation id", id)
		}
		k, _, err := keys.LoadOrGenerate(filepath.Join(dir, id+".jwk"), keys.GenerateSigning, id+"-sig")
		return k, err
	}
}

// statusDone reports whether an organisation has been approved (or moved
// on from approval): its join request and approval are history.
func statusDone(o *registryv1.Organisation) bool {
	switch o.GetStatus() {
	case registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED,
		registryv1.OrganisationStatus_ORGANISATION_STATUS_REVOKED, registryv1.OrganisationStatus_ORGANISATION_STATUS_RETIRED:
		return true
	}
	return false
}

// signsWith reports whether o is ACTIVE with kid among its active signing keys.
func signsWith(o *registryv1.Organisation, kid string) bool {
	if o.GetStatus() != registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE {
		return false
	}
	for _, k := range o.GetKeys() {
		if k.GetKid() == kid && k.GetUse() == keys.UseSig && k.GetStatus() == registryv1.KeyStatus_KEY_STATUS_ACTIVE {
			return true
		}
	}
	return false
}

// byState groups organisations by their state code, in state order.
func byState(os []*registryv1.Organisation) ([]string, map[string][]*registryv1.Organisation) {
	m := map[string][]*registryv1.Organisation{}
	var codes []string
	for _, o := range os {
		sc := o.GetStateCode()
		if _, ok := m[sc]; !ok {
			codes = append(codes, sc)
		}
		m[sc] = append(m[sc], o)
	}
	slices.Sort(codes)
	return codes, m
}

// listed returns the records as their state agency lists them: without a
// status, so that a new record is REGISTERED and one that has joined since
// keeps its status when the import is run again.
func listed(os []*registryv1.Organisation) []*registryv1.Organisation {
	out := make([]*registryv1.Organisation, len(os))
	for i, o := range os {
		c := proto.Clone(o).(*registryv1.Organisation)
		c.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_UNSPECIFIED
		out[i] = c
	}
	return out
}

type signer struct {
	id  string
	key jose.JSONWebKey
}

// plan converts all data and cuts it into the commands of every phase.
func plan(opt Options) ([]*phase, error) {
	if !registry.ValidOrgID(opt.OperatorID) {
		return nil, fmt.Errorf("sampledata: operator id %q is not an organisation id", opt.OperatorID)
	}
	if err := checkSigningKey("operator key", opt.OperatorKey); err != nil {
		return nil, err
	}
	if opt.Keys == nil {
		return nil, errors.New("sampledata: Options.Keys is required")
	}
	ids, err := KeyedOrganisations()
	if err != nil {
		return nil, err
	}
	signers := map[string]jose.JSONWebKey{}
	for _, id := range ids {
		k, err := opt.Keys(id)
		if err != nil {
			return nil, fmt.Errorf("sampledata: key of %s: %w", id, err)
		}
		if err := checkSigningKey("key of "+id, k); err != nil {
			return nil, err
		}
		signers[id] = k
	}
	publish := func(id string) (*registryv1.PublicKey, error) {
		pub, err := keys.Published(signers[id])
		if err != nil {
			return nil, fmt.Errorf("sampledata: key of %s: %w", id, err)
		}
		return pub, nil
	}
	states, err := States()
	if err != nil {
		return nil, err
	}
	districts, err := Districts()
	if err != nil {
		return nil, err
	}
	assocs, err := Associations()
	if err != nil {
		return nil, err
	}
	munis, err := Municipalities()
	if err != nil {
		return nil, err
	}
	services, offerings, err := MunichServices()
	if err != nil {
		return nil, err
	}
	services = append(services, CatalogueAdditions()...)
	// The state agencies, registered by the operator with their keys:
	// registration by the responsible office, ACTIVE at once.
	for _, s := range states {
		pub, err := publish(s.GetId())
		if err != nil {
			return nil, err
		}
		s.Keys = []*registryv1.PublicKey{pub}
		s.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE
	}
	// Munich is not listed: it asks to join itself (signed with its own
	// key) and its state agency approves it.
	var munich *registryv1.Organisation
	others := munis[:0:0]
	for _, m := range munis {
		if m.GetId() == MunichARS {
			munich = m
		} else {
			others = append(others, m)
		}
	}
	if munich == nil {
		return nil, errors.New("sampledata: Munich is missing from the municipalities")
	}
	munichKey := signers[MunichARS]
	pub, err := publish(MunichARS)
	if err != nil {
		return nil, err
	}
	munich.Keys = []*registryv1.PublicKey{pub}
	munich.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_UNSPECIFIED
	bayern := StateID(munich.GetStateCode())
	if bayern != delegationGrantor {
		return nil, fmt.Errorf("sampledata: Munich is in state %s, not Bayern", munich.GetStateCode())
	}
	approval := &registryv1.ChangeOrganisationStatus{
		OrganisationId: MunichARS,
		Status:         registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
		Reason:         "sample data: join request of Munich approved by Bayern's state agency after comparing its keys",
		KeysSha256:     registry.KeysDigest(munich.GetKeys()),
	}

	// The synthetic delegation.
	var svcName string
	for _, s := range services {
		if s.GetLeikaKey() == DelegatedLeiKa {
			svcName = s.GetName()
		}
	}
	if svcName == "" {
		return nil, fmt.Errorf("sampledata: service %s is missing from the catalogue", DelegatedLeiKa)
	}
	var delegated *registryv1.Organisation
	for _, m := range others {
		if m.GetId() == DelegatedARS {
			delegated = m
		}
	}
	if delegated == nil {
		return nil, fmt.Errorf("sampledata: municipality %s is missing", DelegatedARS)
	}
	sscPub, err := publish(SSCID)
	if err != nil {
		return nil, err
	}
	ssc := &registryv1.Organisation{
		Id:        SSCID,
		Kind:      registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE,
		Name:      "Beispiel-Servicezentrum Oberbayern (synthetisch, Demo)",
		StateCode: munich.GetStateCode(),
		Keys:      []*registryv1.PublicKey{sscPub},
		Status:    registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
	}
	grant := &registryv1.Authorisation{
		Id:         DelegationID,
		GrantorId:  bayern,
		GranteeId:  SSCID,
		Areas:      []string{DelegatedARS},
		LeikaKeys:  []string{DelegatedLeiKa},
		OnBehalfOf: DelegatedARS,
		Note:       "synthetic sample data: " + delegated.GetName() + " has not joined; Bayern's state agency authorises on its behalf",
	}
	sscOffer := &registryv1.Offering{
		Id:             SSCID + ":" + DelegatedLeiKa + ":" + DelegatedARS,
		OrganisationId: SSCID,
		LeikaKey:       DelegatedLeiKa,
		Areas:          []string{DelegatedARS},
		Name:           svcName + " (synthetisch: Beispiel-Servicezentrum für " + delegated.GetName() + ")",
		Languages:      []string{"de"},
		Channels: []*registryv1.Channel{{
			Kind: registryv1.ChannelKind_CHANNEL_KIND_ONLINE, Url: "https://ssc-beispiel.example/" + DelegatedLeiKa,
			Available_24_7: true, Note: "synthetic sample data",
		}},
	}
	if err := registry.ValidateOffering(sscOffer); err != nil {
		return nil, fmt.Errorf("sampledata: delegated offering: %w", err)
	}

	svcMuts := make([]*registryv1.Mutation, len(services))
	for i, s := range services {
		svcMuts[i] = &registryv1.Mutation{Op: &registryv1.Mutation_PutService{PutService: s}}
	}
	var nextMuts []*registryv1.Mutation
	for _, n := range DefaultNextSteps() {
		if err := registry.ValidateNextSteps(n); err != nil {
			return nil, fmt.Errorf("sampledata: %w", err)
		}
		nextMuts = append(nextMuts, &registryv1.Mutation{Op: &registryv1.Mutation_PutNextSteps{PutNextSteps: n}})
	}
	offMuts := make([]*registryv1.Mutation, len(offerings))
	for i, o := range offerings {
		offMuts[i] = &registryv1.Mutation{Op: &registryv1.Mutation_PutOffering{PutOffering: o}}
	}

	size := opt.BatchSize
	if size <= 0 {
		size = defaultBatchSize
	}
	size = min(size, registry.MaxMutations)
	op := signer{opt.OperatorID, opt.OperatorKey}
	type group struct {
		by   signer
		muts []*registryv1.Mutation
	}
	// perState cuts records into one group per state, each signed by that
	// state's agency.
	perState := func(os []*registryv1.Organisation) ([]group, error) {
		codes, m := byState(listed(os))
		out := make([]group, 0, len(codes))
		for _, c := range codes {
			id := StateID(c)
			k, ok := signers[id]
			if !ok {
				return nil, fmt.Errorf("sampledata: no state agency %s for %d organisations", id, len(m[c]))
			}
			out = append(out, group{signer{id, k}, putOrgs(m[c])})
		}
		return out, nil
	}
	dg, err := perState(districts)
	if err != nil {
		return nil, err
	}
	ag, err := perState(assocs)
	if err != nil {
		return nil, err
	}
	mg, err := perState(others)
	if err != nil {
		return nil, err
	}
	lookup := func(ctx context.Context, id string) (*registryv1.Organisation, error) {
		if opt.Lookup == nil {
			return nil, nil
		}
		return opt.Lookup(ctx, id)
	}
	joined := func(ctx context.Context) (bool, error) {
		o, err := lookup(ctx, MunichARS)
		return o != nil && statusDone(o), err
	}
	ownKey := func(id, kid string) func(ctx context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			o, err := lookup(ctx, id)
			// Skip once the record has moved on from the sample key (its own
			// node took over, or it was suspended): those writes are its own.
			return o != nil && statusDone(o) && !signsWith(o, kid), err
		}
	}
	specs := []struct {
		name    string
		groups  []group
		skip    func(ctx context.Context) (bool, error)
		listing bool
	}{
		{PhaseStates, []group{{op, putOrgs(states)}}, nil, false},
		{PhaseDistricts, dg, nil, true},
		{PhaseAssociations, ag, nil, true},
		{PhaseMunicipalities, mg, nil, true},
		{PhaseMunichJoin, []group{{signer{MunichARS, munichKey}, []*registryv1.Mutation{{Op: &registryv1.Mutation_RequestJoin{RequestJoin: munich}}}}}, joined, false},
		{PhaseMunichApproval, []group{{signer{bayern, signers[bayern]}, []*registryv1.Mutation{{Op: &registryv1.Mutation_ChangeStatus{ChangeStatus: approval}}}}}, joined, false},
		{PhaseServices, []group{{op, svcMuts}}, nil, false},
		{PhaseOfferings, []group{{signer{MunichARS, munichKey}, offMuts}}, ownKey(MunichARS, munichKey.KeyID), false},
		{PhaseDelegation, []group{{signer{bayern, signers[bayern]}, []*registryv1.Mutation{
			{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: ssc}},
			{Op: &registryv1.Mutation_PutAuthorisation{PutAuthorisation: grant}},
		}}}, nil, false},
		{PhaseDelegatedOffer, []group{{signer{SSCID, signers[SSCID]}, []*registryv1.Mutation{
			{Op: &registryv1.Mutation_PutOffering{PutOffering: sscOffer}},
		}}}, ownKey(SSCID, signers[SSCID].KeyID), false},
		{PhaseNextSteps, []group{{op, nextMuts}}, nil, false},
	}
	phases := make([]*phase, 0, len(specs))
	for _, s := range specs {
		ph := &phase{name: s.name, skip: s.skip, listing: s.listing}
		for _, g := range s.groups {
			scheme := commandIDScheme
			if opt.idScheme != "" {
				scheme = opt.idScheme
			}
			gp, err := makeBatchesScheme(scheme, s.name, g.by.id, g.muts, size)
			if err != nil {
				return nil, err
			}
			for _, b := range gp.batches {
				b.key = g.by.key
			}
			ph.batches = append(ph.batches, gp.batches...)
			ph.records += gp.records
		}
		phases = append(phases, ph)
	}
	return phases, nil
}

// Import loads all sample data into the registry behind p through the
// ordinary signed write path, each write signed by the organisation the
// registry's governance rules make responsible for it:
//
//   - the 16 state agencies, registered by the network operator with their
//     keys (ACTIVE);
//   - districts, associations and municipalities, listed (REGISTERED) by
//     their state's agency;
//   - Munich's join request, signed with Munich's own key (proof of
//     possession), then its approval by Bayern's state agency, which
//     compares the request's keys (keys_sha256);
//   - the catalogue entries (operator) and Munich's offerings (Munich);
//   - a synthetic shared service centre, registered by Bayern's agency,
//     and Bayern's authorisation on behalf of Unterhaching (which has not
//     joined) for one service, which the centre then offers there: a
//     delegated provider in FindProviders;
//   - the default "what comes next" relations (DefaultNextSteps), by the
//     operator. They need cluster feature level 2: a command refused with
//     feature_level is retried for up to 30 s while the leader raises it.
//
// Command ids are derived from the content, so Import is idempotent and
// resumable: after a crash, a re-run resubmits the same commands and the
// registry answers "duplicate" for those already applied (the issue time,
// which differs between runs, is not part of what the registry compares).
// The registry remembers command ids for its replay window, 24 hours by
// default; after that a re-run applies them again, which leaves identical
// records as they are (see Options.Lookup for the steps that cannot be
// repeated). A command result with another error code stops the import
// with a *BatchError. Publish failures with Connect codes Unavailable,
// DeadlineExceeded, Aborted or Unknown (or the registry errors
// ErrUnavailable, ErrIndeterminate, ErrNotLeader) are retried with
// backoff, up to 5 tries.
func Import(ctx context.Context, p Publisher, opt Options) (Summary, error) {
	start := time.Now()
	var sum Summary
	phases, err := plan(opt)
	if err != nil {
		return sum, err
	}
	im := &importer{p: p, opt: opt, start: start}
	if im.opt.Parallel <= 0 {
		im.opt.Parallel = defaultParallel
	}
	if im.opt.RetryBackoff <= 0 {
		im.opt.RetryBackoff = defaultBackoff
	}
	for _, ph := range phases {
		ps, last, err := im.runPhase(ctx, ph)
		sum.Phases = append(sum.Phases, ps)
		sum.Commands += ps.Commands
		sum.Records += ps.Records
		sum.Applied += ps.Applied
		sum.Duplicates += ps.Duplicates
		sum.LastIndex = max(sum.LastIndex, last)
		sum.Elapsed = time.Since(start)
		if err != nil {
			return sum, err
		}
	}
	return sum, nil
}

type importer struct {
	p     Publisher
	opt   Options
	start time.Time
}

func (im *importer) runPhase(ctx context.Context, ph *phase) (PhaseSummary, uint64, error) {
	ps := PhaseSummary{Phase: ph.name}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
		last     uint64
		done     int
	)
	report := func() {
		if im.opt.OnProgress != nil {
			im.opt.OnProgress(Progress{Phase: ph.name, Done: done, Total: ph.records, Duplicates: ps.Duplicates, Elapsed: time.Since(im.start)})
		}
	}
	if ph.skip != nil {
		skip, err := ph.skip(ctx)
		if err != nil {
			return ps, 0, fmt.Errorf("sampledata: %s: %w", ph.name, err)
		}
		if skip {
			// Done before, and the registry has moved on since (see
			// Options.Lookup): counted as duplicates.
			ps.Records, ps.Duplicates, done = ph.records, ph.records, ph.records
			report()
			return ps, 0, nil
		}
	}
	mu.Lock()
	report()
	mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, im.opt.Parallel)
loop:
	for _, b := range ph.batches {
		if ctx.Err() != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop {
			<-sem
			break
		}
		wg.Add(1)
		go func(b *batch) {
			defer wg.Done()
			defer func() { <-sem }()
			dup, index, err := im.publish(ctx, ph, b)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
					cancel()
				}
				return
			}
			last = max(last, index)
			ps.Commands++
			ps.Records += len(b.muts)
			done += len(b.muts)
			if dup {
				ps.Duplicates += len(b.muts)
			} else {
				ps.Applied += len(b.muts)
			}
			report()
		}(b)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if firstErr == nil && ctx.Err() != nil && done < ph.records {
		firstErr = fmt.Errorf("sampledata: %s: %w", ph.name, context.Cause(ctx))
	}
	return ps, last, firstErr
}

// unjoined returns b without the directory entries whose organisation has
// moved on from its listing (joined, approved, or registered with keys: the
// approver's put would replace its record, keys included), with the id of
// what remains; b itself if none has; nil if all have. Listing an
// organisation again is only a no-op while it is listed.
func (im *importer) unjoined(ctx context.Context, ph *phase, b *batch) (*batch, error) {
	keep := make([]*registryv1.Mutation, 0, len(b.muts))
	for _, m := range b.muts {
		o, err := im.opt.Lookup(ctx, m.GetPutOrganisation().GetId())
		if err != nil {
			return nil, fmt.Errorf("lookup: %w", err)
		}
		if o == nil || (o.GetStatus() == registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED && len(o.GetKeys()) == 0) {
			keep = append(keep, m)
		}
	}
	switch len(keep) {
	case 0:
		return nil, nil
	case len(b.muts):
		return b, nil
	}
	nb, err := makeBatchesScheme(b.scheme, ph.name, b.issuer, keep, len(keep))
	if err != nil {
		return nil, err
	}
	c := *nb.batches[0]
	c.num, c.key = b.num, b.key
	return &c, nil
}

// retryable reports whether a failed Publish may succeed when retried.
// Commands are idempotent, so retrying one that was in fact committed is
// safe: the registry answers "duplicate".
func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeAborted,
		connect.CodeUnknown: // outcome unknown: the command id makes a retry safe
		return true
	}
	return errors.Is(err, registry.ErrUnavailable) || errors.Is(err, registry.ErrIndeterminate) || errors.Is(err, registry.ErrNotLeader)
}

func (im *importer) publish(ctx context.Context, ph *phase, b *batch) (dup bool, index uint64, err error) {
	fail := func(code string, err error) (bool, uint64, error) {
		return false, 0, &BatchError{Phase: ph.name, Batch: b.num, CommandID: b.id, Code: code, Err: err}
	}
	if ph.listing && im.opt.Lookup != nil {
		nb, err := im.unjoined(ctx, ph, b)
		if err != nil {
			return fail("", err)
		}
		if nb == nil {
			return true, 0, nil // every entry has joined: nothing to list
		}
		b = nb
	}
	cmd := &registryv1.Command{Issuer: b.issuer, Id: b.id, IssuedAtUnixMs: time.Now().UnixMilli(), Mutations: b.muts}
	raw, err := registry.SignCommand(cmd, b.key)
	if err != nil {
		return fail("", fmt.Errorf("sign: %w", err))
	}
	delay := im.opt.RetryBackoff
	featureDeadline := time.Now().Add(featureLevelWait)
	for try := 1; ; try++ {
		if err := ctx.Err(); err != nil {
			return fail("", context.Cause(ctx))
		}
		resp, err := im.p.Publish(ctx, []string{raw})
		if err == nil {
			rs := resp.GetResults()
			if len(rs) != 1 {
				return fail("", fmt.Errorf("publish returned %d results for 1 command", len(rs)))
			}
			r := rs[0]
			if r.GetErrorCode() == registry.CodeFeatureLevel && time.Now().Before(featureDeadline) {
				// Refused, not applied: the cluster has not raised its
				// feature level yet (its leader does so within a
				// reconcile interval once every server supports it).
				try--
				if err := sleepCtx(ctx, delay); err != nil {
					return fail("", fmt.Errorf("%w (waiting for the cluster feature level: %s)", err, r.GetErrorMessage()))
				}
				delay = min(2*delay, time.Second)
				continue
			}
			if r.GetErrorCode() != "" {
				return fail(r.GetErrorCode(), registry.ErrorFromCode(r.GetErrorCode(), r.GetErrorMessage()))
			}
			if r.GetCommandId() != "" && r.GetCommandId() != b.id {
				return fail("", fmt.Errorf("result is for command %q", r.GetCommandId()))
			}
			return r.GetDuplicate(), max(r.GetIndex(), resp.GetIndex()), nil
		}
		if ctx.Err() != nil {
			return fail("", fmt.Errorf("%w (after %d tries: %v)", context.Cause(ctx), try, err))
		}
		if !retryable(err) || try == maxTries {
			return fail("", fmt.Errorf("publish (try %d of %d): %w", try, maxTries, err))
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fail("", fmt.Errorf("%w (after %d tries: %v)", context.Cause(ctx), try, err))
		case <-t.C:
		}
		delay = min(2*delay, maxBackoff)
	}
}

// sleepCtx waits d or until ctx is done (then its cause).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
