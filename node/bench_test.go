package node

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// BenchmarkFindProvidersAPI: ranked provider queries over Connect on
// loopback against a node holding the full sample data (11,004
// municipalities), from parallel clients.
//
//	go test -run '^$' -bench FindProvidersAPI -benchtime 5s ./node
func BenchmarkFindProvidersAPI(b *testing.B) {
	cfg := testConfig(b, b.TempDir())
	n, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	ImportSampleData(b, n, n)
	q := registryv1connect.NewQueryServiceClient(h2cClient(), n.APIURL())
	areas := []string{"091620000000", "09162000", "091840112112", "097610000000"}
	var i atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			a := areas[i.Add(1)%int64(len(areas))]
			if _, err := q.FindProviders(context.Background(), connect.NewRequest(&registryv1.FindProvidersRequest{LeikaKey: "99050012104000", Area: a})); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}

// BenchmarkPublishAPI: signed registry writes over Connect on loopback,
// one command with one mutation per request, parallel clients: each
// command is parsed, its Ed25519 signature verified, group-committed into
// the Raft log (fsync) and applied to badger before the call returns.
//
//	go test -run '^$' -bench PublishAPI -benchtime 5s ./node
func BenchmarkPublishAPI(b *testing.B) {
	cfg := testConfig(b, b.TempDir())
	n, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	key := n.SigningKey()
	// Sign outside the timed loop: clients sign, the registry verifies.
	cmds := make([]string, b.N)
	for i := range cmds {
		cmds[i] = sign(b, key, "test-operator", &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
			Id: fmt.Sprintf("ssc-bench-%d", i), Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: "bench",
		}}})
	}
	p := registryv1connect.NewPublishServiceClient(h2cClient(), n.APIURL())
	var i atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c := cmds[i.Add(1)-1]
			res, err := p.Publish(context.Background(), connect.NewRequest(&registryv1.PublishRequest{SignedCommands: []string{c}}))
			if err != nil {
				b.Error(err)
				return
			}
			if r := res.Msg.GetResults()[0]; r.GetErrorCode() != "" {
				b.Error(r.GetErrorMessage())
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}
