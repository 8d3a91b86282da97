package synth

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
	"github.com/verbund/verbund/sampledata"
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

const testOperator = "verbund-betrieb"

// newRegistry is a registry state machine after the operator's genesis.
func newRegistry(t *testing.T) (*fsmPublisher, *badger.DB, Config) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	fsm, err := registry.NewFSM(db, registry.DefaultFSMConfig())
	if err != nil {
		t.Fatal(err)
	}
	p := &fsmPublisher{fsm: fsm}
	opKey := Key(1, testOperator)
	pub, _ := keys.Published(opKey)
	raw, err := registry.SignCommand(registry.NewCommand(testOperator, &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
		Id: testOperator, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR, Name: "Verbund-Betrieb",
		Keys: []*registryv1.PublicKey{pub}, Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
	}}}), opKey)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := p.Publish(context.Background(), []string{raw}); err != nil || r.GetResults()[0].GetErrorCode() != "" {
		t.Fatalf("genesis: %v %v", err, r)
	}
	return p, db, Config{Seed: 7, OperatorID: testOperator, OperatorKey: opKey}
}

// bavarianSample: the first n municipalities of Bavaria in the register.
func bavarianSample(t *testing.T, n int) []string {
	ms, err := sampledata.Municipalities()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		if m.GetStateCode() == "09" && len(out) < n {
			out = append(out, m.GetId())
		}
	}
	return out
}

// TestLoadIntoRegistry: a small synthesised registry (120 Bavarian
// municipalities, 6,000 offerings, centres every 20 municipalities) is
// accepted whole by the registry's governance rules; a re-run is all
// duplicates; FindProviders answers every municipality with its own
// offering, and a centre's neighbours also with the centre (a delegated
// provider); everything synthesised says so.
func TestLoadIntoRegistry(t *testing.T) {
	p, db, cfg := newRegistry(t)
	cfg.Municipalities = bavarianSample(t, 120)
	cfg.Offerings = 6000
	cfg.CentreEvery = 20
	var last Progress
	prog, err := Load(context.Background(), p, cfg, LoadOptions{CommandsPerRequest: 50, OnProgress: func(p Progress) { last = p }})
	if err != nil {
		t.Fatal(err)
	}
	if prog.Offerings < 6000 || prog.Errors != 0 || prog.Duplicates != 0 || last.Commands != prog.Commands {
		t.Fatalf("progress %+v (last reported %+v)", prog, last)
	}
	t.Logf("loaded %+v", prog)
	again, err := Load(context.Background(), p, cfg, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Duplicates != again.Commands || again.Commands != prog.Commands {
		t.Fatalf("re-run: %+v, want %d duplicates", again, prog.Commands)
	}
	r := registry.NewReader(db)
	plan, err := newPlan(cfg.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.centres) == 0 {
		t.Fatal("no centres planned")
	}
	for _, ars := range cfg.Municipalities {
		res, err := r.FindProviders(plan.tmpl[0].GetLeikaKey(), ars, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Matches) == 0 || res.Matches[0].GetOrganisation().GetId() != ars || !strings.Contains(res.Matches[0].GetOffering().GetName(), "synthetisch") {
			t.Fatalf("providers of %s for %s: %v", plan.tmpl[0].GetLeikaKey(), ars, res.Matches)
		}
	}
	c := plan.centres[0]
	for _, n := range c.neighbours {
		res, err := r.FindProviders(c.leika[0], n.GetId(), 20)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, m := range res.Matches {
			found = found || m.GetOrganisation().GetId() == c.org.GetId()
		}
		if !found {
			t.Fatalf("centre %s is not a provider of %s for its neighbour %s: %v", c.org.GetId(), c.leika[0], n.GetId(), res.Matches)
		}
	}
}

// TestGenerateDeterministic: the same seed gives the same commands (ids
// and payloads); another seed other keys and ids.
func TestGenerateDeterministic(t *testing.T) {
	_, _, cfg := newRegistry(t)
	cfg.Municipalities = bavarianSample(t, 10)
	cfg.Offerings = 300
	at := time.UnixMilli(1_800_000_000_000)
	cfg.Now = func() time.Time { return at }
	collect := func(cfg Config) []string {
		var out []string
		for c, err := range Generate(cfg) {
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c.ID+" "+c.Signed)
		}
		return out
	}
	a, b := collect(cfg), collect(cfg)
	if len(a) == 0 || strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Fatalf("two runs differ (%d and %d commands)", len(a), len(b))
	}
	cfg.Seed++
	c := collect(cfg)
	for i := 0; i < min(len(a), len(c)); i++ {
		if a[i] == c[i] {
			t.Fatalf("another seed gave the same command %d: %.80s", i, c[i])
		}
	}
}
