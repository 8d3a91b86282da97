package sampledata

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// fsmPublisher applies each Publish call as one Raft log entry to a real
// registry state machine (no Raft, no network).
type fsmPublisher struct {
	mu    sync.Mutex
	fsm   *registry.FSM
	index uint64
}

func (p *fsmPublisher) Publish(ctx context.Context, signed []string) (*registryv1.PublishResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	data, err := proto.Marshal(&registryv1.LogEntry{SignedCommands: signed, ProposedAtUnixMs: time.Now().UnixMilli()})
	if err != nil {
		return nil, err
	}
	p.index++
	res, ok := p.fsm.Apply(&raft.Log{Index: p.index, Type: raft.LogCommand, Data: data}).(*registry.LogResult)
	if !ok {
		return nil, fmt.Errorf("log %d: no result", p.index)
	}
	return &registryv1.PublishResponse{Results: res.Results, Index: res.Index}, nil
}

// raiseFeatureLevel applies the log entry a leader proposes once every
// server supports level.
func (p *fsmPublisher) raiseFeatureLevel(t testing.TB, level uint32) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	data, err := registry.RaiseFeatureLevelEntry(level, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	p.index++
	p.fsm.Apply(&raft.Log{Index: p.index, Type: raft.LogCommand, Data: data})
	if l, err := p.fsm.FeatureLevel(); err != nil || l != level {
		t.Fatalf("feature level %d, %v; want %d", l, err, level)
	}
}

// TestImportIntoRegistryFSM runs the import against the registry's real
// state machine: its governance rules, signature checks and idempotency
// accept everything once and answer duplicates on a re-run; Munich is
// approved by Bayern, and the synthetic shared service centre is a
// delegated provider for Unterhaching. A re-run after the replay window,
// with Lookup, skips Munich's join and approval, which cannot be repeated.
func TestImportIntoRegistryFSM(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fsm, err := registry.NewFSM(db, registry.DefaultFSMConfig())
	if err != nil {
		t.Fatal(err)
	}
	p := &fsmPublisher{fsm: fsm}

	// Genesis: the operator registers itself.
	pub, err := keys.Published(testOperatorKey)
	if err != nil {
		t.Fatal(err)
	}
	op := &registryv1.Organisation{
		Id: testOperator, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR, Name: "Verbund-Betrieb",
		Keys: []*registryv1.PublicKey{pub}, Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
	}
	raw, err := registry.SignCommand(registry.NewCommand(testOperator, &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: op}}), testOperatorKey)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := p.Publish(context.Background(), []string{raw}); err != nil || resp.GetResults()[0].GetErrorCode() != "" {
		t.Fatalf("genesis: %v %v", resp, err)
	}

	p.raiseFeatureLevel(t, registry.SupportedFeatureLevel())

	opt := testOptions(nil)
	sum, err := Import(context.Background(), p, opt)
	if err != nil {
		t.Fatal(err)
	}
	// States, districts, associations, the municipalities but Munich,
	// Munich's join and approval, services, Munich's offerings, the
	// centre and its authorisation, the centre's offering, the catalogue
	// additions and the default next steps.
	if sum.Applied != sum.Records || sum.Records != 16+294+1210+11003+1+1+111+135+2+1+len(CatalogueAdditions())+len(DefaultNextSteps()) {
		t.Errorf("first import: %+v", sum)
	}
	r := registry.NewReader(db)
	m, _, err := r.Organisation(MunichARS)
	if err != nil || m.GetStatus() != registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE || m.GetStatusChangedBy() != "land-09" {
		t.Errorf("Munich: %v, %v", m, err)
	}
	u, _, err := r.Organisation(DelegatedARS)
	if err != nil || u.GetStatus() != registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED || u.GetUpdatedBy() != "land-09" {
		t.Errorf("Unterhaching: %v, %v", u, err)
	}
	ps, err := r.FindProviders(DelegatedLeiKa, DelegatedARS, 10)
	if err != nil {
		t.Fatal(err)
	}
	delegated := false
	for _, p := range ps.Matches {
		if p.GetOrganisation().GetId() == SSCID && p.GetMatch() == registryv1.MatchKind_MATCH_KIND_DELEGATED {
			delegated = true
		}
	}
	if !delegated {
		t.Errorf("no delegated provider %s for %s: %v", SSCID, DelegatedARS, ps.Matches)
	}
	sum2, err := Import(context.Background(), p, opt)
	if err != nil {
		t.Fatal(err)
	}
	if sum2.Applied != 0 || sum2.Duplicates != sum.Records {
		t.Errorf("second import: %+v", sum2)
	}
	t.Logf("imported %d records in %d commands (%v), re-run %v", sum.Records, sum.Commands, sum.Elapsed, sum2.Elapsed)

	// Augsburg, listed by Bayern, joins and is approved.
	augsburg := "097610000000"
	aKey := testKey(augsburg)
	aPub, err := keys.Published(aKey)
	if err != nil {
		t.Fatal(err)
	}
	listedA, _, err := r.Organisation(augsburg)
	if err != nil {
		t.Fatal(err)
	}
	join := proto.Clone(listedA).(*registryv1.Organisation)
	join.Keys, join.Status, join.Revision, join.UpdatedAtUnixMs, join.UpdatedBy = []*registryv1.PublicKey{aPub}, 0, 0, 0, ""
	for _, c := range []struct {
		key jose.JSONWebKey
		cmd *registryv1.Command
	}{
		{aKey, registry.NewCommand(augsburg, &registryv1.Mutation{Op: &registryv1.Mutation_RequestJoin{RequestJoin: join}})},
		{testKey("land-09"), registry.NewCommand("land-09", &registryv1.Mutation{Op: &registryv1.Mutation_ChangeStatus{ChangeStatus: &registryv1.ChangeOrganisationStatus{
			OrganisationId: augsburg, Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, Reason: "test",
			KeysSha256: registry.KeysDigest([]*registryv1.PublicKey{aPub})}}})},
	} {
		raw, err := registry.SignCommand(c.cmd, c.key)
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := p.Publish(context.Background(), []string{raw}); err != nil || resp.GetResults()[0].GetErrorCode() != "" {
			t.Fatalf("Augsburg joins: %v %v", resp, err)
		}
	}

	// After the replay window the registry has forgotten the command ids
	// (here: new ids): a re-run applies again. Munich's join request would
	// be refused now (approved already); with Lookup the importer skips it
	// and the approval, and the rest leaves identical records as they are.
	opt.idScheme = "test: after the replay window"
	opt.Lookup = func(_ context.Context, id string) (*registryv1.Organisation, error) {
		o, _, err := r.Organisation(id)
		if errors.Is(err, registry.ErrNotFound) {
			return nil, nil
		}
		return o, err
	}
	sum3, err := Import(context.Background(), p, opt)
	if err != nil {
		t.Fatalf("re-run after the replay window: %v", err)
	}
	for _, ph := range sum3.Phases {
		if skipped := ph.Phase == PhaseMunichJoin || ph.Phase == PhaseMunichApproval; skipped != (ph.Commands == 0) {
			t.Errorf("re-run after the replay window, phase %+v", ph)
		}
	}
	// Augsburg, which joined, is not listed again: it keeps its key.
	if a, _, err := r.Organisation(augsburg); err != nil || a.GetStatus() != registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE ||
		len(a.GetKeys()) != 1 || a.GetKeys()[0].GetKid() != aKey.KeyID {
		t.Errorf("Augsburg after the re-run: %v, %v", a, err)
	}
	// Without Lookup the join request is refused: the steps that cannot
	// be repeated need it.
	opt.Lookup = nil
	if _, err := Import(context.Background(), p, opt); !errors.Is(err, registry.ErrPreconditionFailed) && !errors.Is(err, registry.ErrPermissionDenied) {
		t.Errorf("re-run without Lookup: %v", err)
	}
}
