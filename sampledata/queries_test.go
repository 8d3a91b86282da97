package sampledata

import (
	"context"
	"os"

	"sort"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// The registry queries behind the web pages (issue 10), run against the
// full sample data in a real registry state machine.

var (
	fullOnce   sync.Once
	fullReader *registry.Reader
	fullErr    error
	fullDir    string
	fullDB     *badger.DB
)

// TestMain removes the shared full registry after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if fullDB != nil {
		_ = fullDB.Close()
	}
	if fullDir != "" {
		_ = os.RemoveAll(fullDir)
	}
	os.Exit(code)
}

// fullRegistry imports the whole sample data once per test binary into a
// registry FSM (genesis, feature level raised as a leader would) and
// returns a reader over it.
func fullRegistry(t *testing.T) *registry.Reader {
	t.Helper()
	fullOnce.Do(func() {
		fullDir, fullErr = os.MkdirTemp("", "verbund-sampledata-")
		if fullErr != nil {
			return
		}
		var db *badger.DB
		db, fullErr = badger.Open(badger.DefaultOptions(fullDir).WithLogger(nil))
		if fullErr != nil {
			return
		}
		fullDB = db
		var fsm *registry.FSM
		if fsm, fullErr = registry.NewFSM(db, registry.DefaultFSMConfig()); fullErr != nil {
			return
		}
		p := &fsmPublisher{fsm: fsm}
		pub, err := keys.Published(testOperatorKey)
		if err != nil {
			fullErr = err
			return
		}
		op := &registryv1.Organisation{
			Id: testOperator, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR, Name: "Verbund-Betrieb",
			Keys: []*registryv1.PublicKey{pub}, Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
		}
		raw, err := registry.SignCommand(registry.NewCommand(testOperator, &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: op}}), testOperatorKey)
		if err != nil {
			fullErr = err
			return
		}
		if _, err := p.Publish(context.Background(), []string{raw}); err != nil {
			fullErr = err
			return
		}
		p.raiseFeatureLevel(t, registry.SupportedFeatureLevel())
		if _, fullErr = Import(context.Background(), p, testOptions(nil)); fullErr != nil {
			return
		}
		fullReader = registry.NewReader(db)
	})
	if fullErr != nil {
		t.Fatal(fullErr)
	}
	return fullReader
}

// p50 runs fn n times and returns the median duration.
func p50(n int, fn func()) time.Duration {
	ds := make([]time.Duration, n)
	for i := range ds {
		start := time.Now()
		fn()
		ds[i] = time.Since(start)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[n/2]
}

func ids(os []*registryv1.Organisation) []string {
	out := make([]string, len(os))
	for i, o := range os {
		out[i] = o.GetId()
	}
	return out
}
