package node

import (
	"context"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// TestWebQueries: the queries behind the web pages (issue 10) answer over
// the API, unauthenticated, with both read modes: place search, search
// with distinctions and valid life situations, next steps (published
// once the single server raised the feature level to 2), coverage and the
// handover statistics.
func TestWebQueries(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	hc := h2cClient()
	f := &fixture{n: n,
		pub:   registryv1connect.NewPublishServiceClient(hc, n.APIURL()),
		query: registryv1connect.NewQueryServiceClient(hc, n.APIURL()),
	}
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		l, err := n.FeatureLevel()
		if err != nil {
			t.Fatal(err)
		}
		if l == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("feature level %d, want 2 (a single server supports it)", l)
		}
		time.Sleep(20 * time.Millisecond)
	}
	const wohnsitz, hund = "99115005000000", "99102013104000"
	put := func(o *registryv1.Organisation) *registryv1.Mutation {
		return &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: o}}
	}
	svc := func(leika, name string, life ...string) *registryv1.Mutation {
		return &registryv1.Mutation{Op: &registryv1.Mutation_PutService{PutService: &registryv1.Service{LeikaKey: leika, Name: name, LifeSituations: life}}}
	}
	mustOK(t, f.publish(t, sign(t, n.SigningKey(), "test-operator",
		put(&registryv1.Organisation{Id: "land-09", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY, Name: "Bayern", StateCode: "09"}),
		svc(wohnsitz, "Wohnsitzanmeldung", "Umzug"),
		svc(hund, "Hundesteuer Anmeldung", "Hund"),
		svc("99036008007003", "Aus dem Ausland eingeführtes Fahrzeug anmelden"),
		svc("99036008007004", "Aus dem Ausland eingeführtes Fahrzeug anmelden"),
		&registryv1.Mutation{Op: &registryv1.Mutation_PutNextSteps{PutNextSteps: &registryv1.NextSteps{
			Id: "umzug", LifeSituation: "Umzug", TriggerLeikaKey: wohnsitz, NextLeikaKeys: []string{hund},
		}}},
	)))
	// A federal-level organisation the operator registers itself (a
	// municipality would need its state agency's signature).
	mustOK(t, f.publish(t, sign(t, n.SigningKey(), "test-operator",
		put(&registryv1.Organisation{Id: "augsburg-stadtwerke", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_FEDERAL_AGENCY, Name: "Augsburg Bundesstelle"}),
	)))

	for _, read := range []*registryv1.ReadOptions{nil, {Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}} {
		orgs, err := f.query.ListOrganisations(ctx, connect.NewRequest(&registryv1.ListOrganisationsRequest{Query: "augsb", Read: read}))
		if err != nil || len(orgs.Msg.GetOrganisations()) != 1 || orgs.Msg.GetOrganisations()[0].GetId() != "augsburg-stadtwerke" || orgs.Msg.GetRead() == nil {
			t.Fatalf("place search: %v, %v", orgs, err)
		}
		if read != nil && !orgs.Msg.GetRead().GetLinearizable() {
			t.Fatalf("linearizable place search answered %v", orgs.Msg.GetRead())
		}
		hits, err := f.query.SearchServices(ctx, connect.NewRequest(&registryv1.SearchServicesRequest{Text: "Fahrzeug Ausland", Read: read}))
		if err != nil || len(hits.Msg.GetHits()) != 2 || hits.Msg.GetHits()[0].GetDistinction() == "" ||
			hits.Msg.GetHits()[0].GetDistinction() == hits.Msg.GetHits()[1].GetDistinction() {
			t.Fatalf("search: %v, %v", hits, err)
		}
		unknown, err := f.query.SearchServices(ctx, connect.NewRequest(&registryv1.SearchServicesRequest{LifeSituation: "Hochzeit", Read: read}))
		var valid []string
		for _, l := range unknown.Msg.GetValidLifeSituations() {
			valid = append(valid, l.GetName())
		}
		if err != nil || len(unknown.Msg.GetHits()) != 0 || !slices.Equal(valid, []string{"Hund", "Umzug"}) {
			t.Fatalf("unknown life situation: %v, %v", unknown, err)
		}
		ns, err := f.query.ListNextSteps(ctx, connect.NewRequest(&registryv1.ListNextStepsRequest{TriggerLeikaKey: wohnsitz, LifeSituation: "umzug", Area: munichARS, Read: read}))
		if err != nil || len(ns.Msg.GetNextSteps()) != 1 || ns.Msg.GetNextSteps()[0].GetNextLeikaKeys()[0] != hund {
			t.Fatalf("next steps: %v, %v", ns, err)
		}
		cov, err := f.query.GetCoverage(ctx, connect.NewRequest(&registryv1.GetCoverageRequest{LeikaKey: wohnsitz, StateCode: "09", Read: read}))
		if err != nil || cov.Msg.GetService().GetLeikaKey() != wohnsitz || cov.Msg.GetMunicipalities() != 0 || cov.Msg.GetRead() == nil {
			t.Fatalf("coverage: %v, %v", cov, err)
		}
	}
	if _, err := f.query.GetCoverage(ctx, connect.NewRequest(&registryv1.GetCoverageRequest{LeikaKey: wohnsitz, StateCode: "9"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("coverage of state 9: %v", err)
	}
	// Handover statistics: open, counts only.
	stats, err := federationv1connect.NewHandoverServiceClient(hc, n.APIURL()).GetHandoverStats(ctx, connect.NewRequest(&federationv1.GetHandoverStatsRequest{}))
	if err != nil || stats.Msg.GetOrganisationId() != "test-operator" || stats.Msg.GetGeneratedAtUnixMs() == 0 || len(stats.Msg.GetBuckets()) != 0 {
		t.Fatalf("handover stats: %v, %v", stats, err)
	}
	if _, err := federationv1connect.NewHandoverServiceClient(hc, n.APIURL()).GetHandoverStats(ctx, connect.NewRequest(&federationv1.GetHandoverStatsRequest{SinceUnixMs: -1})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("negative since: %v", err)
	}
}
