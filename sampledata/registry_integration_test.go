package sampledata

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
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

// TestImportIntoRegistryFSM runs the import against the registry's real
// state machine: the FSM's permission rules, signature checks and
// idempotency accept everything once and answer duplicates on a re-run.
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

	opt := testOptions(nil)
	sum, err := Import(context.Background(), p, opt)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Applied != sum.Records || sum.Records != 16+294+1210+11004+111+135 {
		t.Errorf("first import: %+v", sum)
	}
	sum2, err := Import(context.Background(), p, opt)
	if err != nil {
		t.Fatal(err)
	}
	if sum2.Applied != 0 || sum2.Duplicates != sum.Records {
		t.Errorf("second import: %+v", sum2)
	}
	t.Logf("imported %d records in %d commands (%v), re-run %v", sum.Records, sum.Commands, sum.Elapsed, sum2.Elapsed)
}
