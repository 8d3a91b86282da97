package node

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

// TestProofsAndHistory walks the governed path on one node: a state agency
// approves Munich's join request, Munich publishes and authorises a shared
// service centre for its area. FindProviders with include_proof then
// answers both providers with proofs that registry.VerifyProof accepts
// offline, and GetHistory shows the approval with the person and key that
// signed it, whose command GetCommand returns as signed.
func TestProofsAndHistory(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	hc := h2cClient()
	f := &fixture{n: n,
		pub:   registryv1connect.NewPublishServiceClient(hc, n.APIURL()),
		query: registryv1connect.NewQueryServiceClient(hc, n.APIURL()),
	}
	ctx := context.Background()
	newKey := func(kid string) (jose.JSONWebKey, *registryv1.PublicKey) {
		k, err := keys.GenerateSigning(kid)
		if err != nil {
			t.Fatal(err)
		}
		pk, err := keys.Published(k)
		if err != nil {
			t.Fatal(err)
		}
		return k, pk
	}
	putOrg := func(o *registryv1.Organisation) *registryv1.Mutation {
		return &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: o}}
	}
	signAs := func(key jose.JSONWebKey, issuer, actor string, muts ...*registryv1.Mutation) (string, *registryv1.Command) {
		cmd := registry.NewCommand(issuer, muts...)
		cmd.Actor = actor
		jws, err := registry.SignCommand(cmd, key)
		if err != nil {
			t.Fatal(err)
		}
		return jws, cmd
	}

	// The operator registers Bavaria's state agency, which registers a
	// shared service centre of its state.
	stmiKey, stmiPub := newKey("by-stmi-sig-1")
	sscKey, sscPub := newKey("ssc-muenchen-sig-1")
	mustOK(t, f.publish(t, sign(t, n.SigningKey(), "test-operator",
		putOrg(&registryv1.Organisation{
			Id: "by-stmi", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY, Name: "Bayerisches Staatsministerium des Innern",
			StateCode: "09", Keys: []*registryv1.PublicKey{stmiPub},
		}),
		&registryv1.Mutation{Op: &registryv1.Mutation_PutService{PutService: &registryv1.Service{LeikaKey: gewerbe, Name: "Gewerbe-Anmeldung"}}},
	)))
	mustOK(t, f.publish(t, sign(t, stmiKey, "by-stmi", putOrg(&registryv1.Organisation{
		Id: "ssc-muenchen", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: "Servicezentrum München",
		StateCode: "09", Keys: []*registryv1.PublicKey{sscPub},
	}))))

	// Munich asks to join, signed with its own key; the agency approves.
	munichKey, munichPub := newKey("munich-sig-1")
	mustOK(t, f.publish(t, sign(t, munichKey, munichARS, &registryv1.Mutation{Op: &registryv1.Mutation_RequestJoin{RequestJoin: &registryv1.Organisation{
		Id: munichARS, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: "München, Landeshauptstadt",
		StateCode: "09", Ars: munichARS, Ags: "09162000", Keys: []*registryv1.PublicKey{munichPub},
	}}})))
	const actor = "Erika Muster (by-stmi)"
	approval, approvalCmd := signAs(stmiKey, "by-stmi", actor, &registryv1.Mutation{Op: &registryv1.Mutation_ChangeStatus{ChangeStatus: &registryv1.ChangeOrganisationStatus{
		OrganisationId: munichARS, Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
		Reason: "approved after video call", KeysSha256: registry.KeysDigest([]*registryv1.PublicKey{munichPub}),
	}}})
	mustOK(t, f.publish(t, approval))

	// Munich publishes for itself and entitles the centre, which publishes
	// for Munich.
	mustOK(t, f.publish(t, sign(t, munichKey, munichARS, offering(munichARS+":"+gewerbe, munichARS))))
	mustOK(t, f.publish(t, sign(t, munichKey, munichARS, &registryv1.Mutation{Op: &registryv1.Mutation_PutAuthorisation{PutAuthorisation: &registryv1.Authorisation{
		Id: munichARS + ":ssc-muenchen:1", GrantorId: munichARS, GranteeId: "ssc-muenchen", Areas: []string{munichARS},
	}}})))
	mustOK(t, f.publish(t, sign(t, sscKey, "ssc-muenchen", offering("ssc-muenchen:"+gewerbe, "ssc-muenchen"))))
	read := &registryv1.ReadOptions{MinIndex: f.lastIdx}

	res, err := f.query.FindProviders(ctx, connect.NewRequest(&registryv1.FindProvidersRequest{LeikaKey: gewerbe, Area: munichARS, IncludeProof: true, Read: read}))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Msg.GetProviders()) != 2 {
		t.Fatalf("providers = %v", res.Msg.GetProviders())
	}
	for _, p := range res.Msg.GetProviders() {
		if err := registry.VerifyProof(p, munichARS); err != nil {
			t.Errorf("provider %s: %v", p.GetOrganisation().GetId(), err)
		}
		if p.GetOrganisation().GetId() == "ssc-muenchen" && p.GetProof().GetAuthorisation().GetGrantorId() != munichARS {
			t.Errorf("centre's proof holds no authorisation by Munich: %v", p.GetProof())
		}
	}
	lean, err := f.query.FindProviders(ctx, connect.NewRequest(&registryv1.FindProvidersRequest{LeikaKey: gewerbe, Area: munichARS}))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lean.Msg.GetProviders() {
		if p.GetProof() != nil {
			t.Fatalf("proof without include_proof: %v", p)
		}
	}

	hist, err := f.query.GetHistory(ctx, connect.NewRequest(&registryv1.GetHistoryRequest{OrganisationId: munichARS, Read: read}))
	if err != nil {
		t.Fatal(err)
	}
	var found *registryv1.HistoryEntry
	for _, e := range hist.Msg.GetEntries() {
		if e.GetChange() == "status" {
			found = e
		}
	}
	if found == nil || found.GetActor() != actor || found.GetKid() != stmiKey.KeyID || found.GetIssuer() != "by-stmi" ||
		found.GetCommandId() != approvalCmd.GetId() || found.GetSummary() != "PENDING → ACTIVE: approved after video call" {
		t.Fatalf("approval in history: %v (history %v)", found, hist.Msg.GetEntries())
	}
	cmd, err := f.query.GetCommand(ctx, connect.NewRequest(&registryv1.GetCommandRequest{Issuer: "by-stmi", Id: approvalCmd.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Msg.GetSignedCommand() != approval || cmd.Msg.GetIndex() != found.GetIndex() {
		t.Fatalf("GetCommand = %v, want the approval as signed at index %d", cmd.Msg, found.GetIndex())
	}
	if _, err := f.query.GetCommand(ctx, connect.NewRequest(&registryv1.GetCommandRequest{Issuer: "by-stmi", Id: registry.NewCommandID()})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("GetCommand(unknown) = %v, want not_found", err)
	}
	auths, err := f.query.ListAuthorisations(ctx, connect.NewRequest(&registryv1.ListAuthorisationsRequest{GranteeId: "ssc-muenchen"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(auths.Msg.GetAuthorisations()) != 1 || auths.Msg.GetAuthorisations()[0].GetGrantorId() != munichARS {
		t.Fatalf("ListAuthorisations = %v", auths.Msg.GetAuthorisations())
	}
}
