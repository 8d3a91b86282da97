package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/cli"
	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/sampledata"
)

// TestKillDuringImport SIGKILLs the node in the middle of the bulk import of
// the sample data, restarts it from its data dir, and checks that every
// batch the node acknowledged is there, that the import resumes (applied
// batches come back as duplicates) and that nothing is duplicated.
func TestKillDuringImport(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level crash test")
	}
	dir := t.TempDir()
	args := []string{"dev", "--no-sample-data", "--data-dir", dir, "--http-addr", freeAddr(t), "--raft-addr", freeAddr(t), "--log-level", "warn", "--rate-limits", "off"}
	p := start(t, args...)
	waitHTTP(t, p.API)
	opKey, err := keys.Load(filepath.Join(dir, "keys", "signing.jwk"))
	if err != nil {
		t.Fatal(err)
	}
	sampleKeys := sampledata.KeyFiles(t.TempDir())

	// Acknowledged records, by kind, as reported to the importer.
	var mu sync.Mutex
	acked := map[string]int{}
	var killed atomic.Bool
	pub := func(api string) cli.ConnectPublisher {
		return cli.ConnectPublisher{Client: registryv1connect.NewPublishServiceClient(http.DefaultClient, api), Timeout: 5 * time.Second}
	}
	opts := sampledata.Options{
		OperatorID: "verbund-dev", OperatorKey: opKey, Keys: sampleKeys, BatchSize: 100, Parallel: 4,
		RetryBackoff: 20 * time.Millisecond,
		OnProgress: func(pr sampledata.Progress) {
			mu.Lock()
			acked[pr.Phase] = pr.Done
			mu.Unlock()
			// Kill the node once it is well into the municipalities.
			if pr.Phase == sampledata.PhaseMunicipalities && pr.Done >= 3000 && killed.CompareAndSwap(false, true) {
				p.Kill()
			}
		},
	}
	_, err = sampledata.Import(context.Background(), pub(p.API), opts)
	if err == nil || !killed.Load() {
		t.Fatalf("import finished without the kill (err %v, killed %v)", err, killed.Load())
	}
	mu.Lock()
	ackedMunis := acked[sampledata.PhaseMunicipalities]
	mu.Unlock()
	t.Logf("killed after %d acknowledged municipalities: %v", ackedMunis, err)

	// Restart from the same data dir.
	p2 := start(t, args...)
	waitHTTP(t, p2.API)
	q := registryv1connect.NewQueryServiceClient(http.DefaultClient, p2.API)
	count := func(kind registryv1.OrganisationKind) (int, map[string]bool) {
		ids := map[string]bool{}
		tok := ""
		for {
			res, err := q.ListOrganisations(context.Background(), connect.NewRequest(&registryv1.ListOrganisationsRequest{Kind: kind, PageSize: 1000, PageToken: tok}))
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range res.Msg.GetOrganisations() {
				if ids[o.GetId()] {
					t.Fatalf("organisation %s listed twice", o.GetId())
				}
				ids[o.GetId()] = true
			}
			if tok = res.Msg.GetNextPageToken(); tok == "" {
				return len(ids), ids
			}
		}
	}
	got, _ := count(registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY)
	if got < ackedMunis {
		t.Fatalf("after SIGKILL: %d municipalities stored, %d were acknowledged", got, ackedMunis)
	}
	t.Logf("after restart: %d municipalities stored (%d acknowledged before the kill)", got, ackedMunis)

	// Resume: completes, with the applied batches as duplicates.
	opts.OnProgress = nil
	sum, err := sampledata.Import(context.Background(), pub(p2.API), opts)
	if err != nil {
		t.Fatalf("resumed import: %v\n%s", err, p2.Logs())
	}
	if sum.Duplicates < ackedMunis {
		t.Fatalf("resume re-applied acknowledged batches: %d duplicates < %d acknowledged", sum.Duplicates, ackedMunis)
	}
	want := map[registryv1.OrganisationKind]int{
		registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY:          16,
		registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT:              294,
		registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPAL_ASSOCIATION: 1210,
		registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY:          11004,
	}
	for kind, n := range want {
		if got, _ := count(kind); got != n {
			t.Errorf("%v: %d organisations, want %d", kind, got, n)
		}
	}
	// A third run changes nothing.
	sum, err = sampledata.Import(context.Background(), pub(p2.API), opts)
	if err != nil || sum.Applied != 0 {
		t.Fatalf("third run: applied %d, err %v", sum.Applied, err)
	}
	stop(t, p2)
	if _, err := os.Stat(filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}
}
