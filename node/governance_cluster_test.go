package node_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	"github.com/verbund/verbund/node"
	"github.com/verbund/verbund/node/nodetest"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// govOrg is an organisation of the test with its signing key.
type govOrg struct {
	id  string
	key jose.JSONWebKey
	rec *registryv1.Organisation
}

func newGovOrg(t *testing.T, rec *registryv1.Organisation) *govOrg {
	t.Helper()
	k, err := keys.GenerateSigning(keys.NewKID(rec.GetId()))
	if err != nil {
		t.Fatal(err)
	}
	pk, err := keys.Published(k)
	if err != nil {
		t.Fatal(err)
	}
	rec.Keys = append(rec.Keys, pk)
	return &govOrg{id: rec.GetId(), key: k, rec: rec}
}

func (o *govOrg) sign(t *testing.T, muts ...*registryv1.Mutation) (string, *registryv1.Command) {
	t.Helper()
	cmd := registry.NewCommand(o.id, muts...)
	jws, err := registry.SignCommand(cmd, o.key)
	if err != nil {
		t.Fatal(err)
	}
	return jws, cmd
}

func putOrg(o *registryv1.Organisation) *registryv1.Mutation {
	return &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: o}}
}

func govOffering(org, leika string, areas ...string) *registryv1.Mutation {
	return &registryv1.Mutation{Op: &registryv1.Mutation_PutOffering{PutOffering: &registryv1.Offering{
		Id: org + ":" + leika + ":" + strings.Join(areas, "-"), OrganisationId: org, LeikaKey: leika, Areas: areas, Name: "Gewerbe anmelden",
	}}}
}

func govStatus(org string, s registryv1.OrganisationStatus, keysSHA string) *registryv1.Mutation {
	return &registryv1.Mutation{Op: &registryv1.Mutation_ChangeStatus{ChangeStatus: &registryv1.ChangeOrganisationStatus{
		OrganisationId: org, Status: s, Reason: "Prüfung", KeysSha256: keysSHA,
	}}}
}

// TestGovernanceRefusedOnEveryNode sends every kind of forbidden command
// (wrong organisation, wrong area, unapproved, suspended, revoked key,
// approver of another state, the operator approving a municipality, a
// forged authorisation, a reused command id) through each node of a
// three-voter cluster with a member, and checks on every node: the
// registry recorded the same refusal (its own FSM's dedupe record, with
// the same code and message naming the rule), and the replicated state is
// unchanged and identical everywhere.
func TestGovernanceRefusedOnEveryNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Members: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	op := &govOrg{id: "test-operator", key: c.OperatorKey()}
	const (
		leika = "99050012104000"
		arsM  = "091620000000" // München
		arsM2 = "091840000000" // a municipality that will be suspended
		arsM3 = "091890000000" // one whose key is revoked
		arsJ  = "091870000000" // joins, stays pending
	)
	send := func(via int, jws string) *registryv1.CommandResult {
		t.Helper()
		res, err := c.Publish(via).Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: []string{jws}}))
		if err != nil {
			t.Fatalf("publish via n%d: %v", via, err)
		}
		return res.Msg.GetResults()[0]
	}
	ok := func(via int, jws string) {
		t.Helper()
		if r := send(via, jws); r.GetErrorCode() != "" {
			t.Fatalf("setup command refused: %s: %s", r.GetErrorCode(), r.GetErrorMessage())
		}
	}
	by := newGovOrg(t, &registryv1.Organisation{Id: "by-lfst", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY, Name: "Bayern", StateCode: "09"})
	bw := newGovOrg(t, &registryv1.Organisation{Id: "bw-lfst", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY, Name: "Baden-Württemberg", StateCode: "08"})
	muni := func(ars, name string) *govOrg {
		return newGovOrg(t, &registryv1.Organisation{Id: ars, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: name, StateCode: "09", Ars: ars})
	}
	m, m2, m3 := muni(arsM, "München"), muni(arsM2, "Musterstadt"), muni(arsM3, "Beispielheim")
	ssc := newGovOrg(t, &registryv1.Organisation{Id: "ssc-oberland", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: "SSC Oberland", StateCode: "09"})
	j := muni(arsJ, "Beitrittsdorf")

	// Setup, through the rules: the operator registers the agencies and the
	// catalogue entry, Bayern its organisations; J asks to join.
	jws, _ := op.sign(t, putOrg(by.rec), putOrg(bw.rec),
		&registryv1.Mutation{Op: &registryv1.Mutation_PutService{PutService: &registryv1.Service{LeikaKey: leika, Name: "Gewerbe anmelden"}}})
	ok(0, jws)
	jws, _ = by.sign(t, putOrg(m.rec), putOrg(m2.rec), putOrg(m3.rec), putOrg(ssc.rec))
	ok(1, jws)
	jws, _ = j.sign(t, &registryv1.Mutation{Op: &registryv1.Mutation_RequestJoin{RequestJoin: j.rec}})
	ok(2, jws)
	jws, _ = by.sign(t, govStatus(arsM2, registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED, ""))
	ok(3, jws)
	rev := proto.Clone(m3.rec).(*registryv1.Organisation)
	rev.Keys[0].Status = registryv1.KeyStatus_KEY_STATUS_REVOKED
	jws, _ = m3.sign(t, putOrg(rev))
	ok(0, jws)
	reused, reusedCmd := m.sign(t, govOffering(arsM, leika, arsM))
	ok(1, reused)

	forged := &registryv1.Authorisation{Id: arsM + ":ssc-oberland:gewerbe", GrantorId: arsM, GranteeId: "ssc-oberland", Areas: []string{arsM}}
	other := registry.NewCommand(arsM, govOffering(arsM, leika, arsM), &registryv1.Mutation{Op: &registryv1.Mutation_DeleteOffering{DeleteOffering: arsM + ":" + leika + ":" + arsM}})
	other.Id = reusedCmd.GetId()
	otherJWS, err := registry.SignCommand(other, m.key)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, code, rule string
		jws              func() (string, string) // signed command, issuer
	}{
		{"wrong organisation", registry.CodePermissionDenied, "rule own-offerings", func() (string, string) {
			s, _ := m.sign(t, govOffering("ssc-oberland", leika, arsM))
			return s, arsM
		}},
		{"wrong area", registry.CodePermissionDenied, "rule area-responsibility", func() (string, string) {
			s, _ := m.sign(t, govOffering(arsM, leika, arsM2))
			return s, arsM
		}},
		{"unapproved", registry.CodePermissionDenied, "rule not-approved", func() (string, string) {
			s, _ := j.sign(t, govOffering(arsJ, leika, arsJ))
			return s, arsJ
		}},
		{"suspended", registry.CodePermissionDenied, "rule suspended", func() (string, string) {
			s, _ := m2.sign(t, govOffering(arsM2, leika, arsM2))
			return s, arsM2
		}},
		{"revoked key", registry.CodeUnknownKey, "revoked", func() (string, string) {
			s, _ := m3.sign(t, govOffering(arsM3, leika, arsM3))
			return s, arsM3
		}},
		{"approver of another state", registry.CodePermissionDenied, "rule organisation-approver", func() (string, string) {
			s, _ := bw.sign(t, govStatus(arsJ, registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, registry.KeysDigest(j.rec.GetKeys())))
			return s, "bw-lfst"
		}},
		{"operator approves a municipality", registry.CodePermissionDenied, "rule organisation-approver", func() (string, string) {
			s, _ := op.sign(t, govStatus(arsJ, registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, registry.KeysDigest(j.rec.GetKeys())))
			return s, "test-operator"
		}},
		{"forged authorisation", registry.CodePermissionDenied, "rule authorisation-grantor", func() (string, string) {
			// The centre signs a grant in München's name for itself.
			s, _ := ssc.sign(t, &registryv1.Mutation{Op: &registryv1.Mutation_PutAuthorisation{PutAuthorisation: forged}})
			return s, "ssc-oberland"
		}},
		{"same id, other content", registry.CodeAlreadyExists, "already used", func() (string, string) {
			return otherJWS, arsM
		}},
	}
	// The replicated state before the forbidden commands, on every node.
	before := sameOnEveryNode(t, c)
	for i, tc := range cases {
		via := i % len(c.Nodes)
		jws, issuer := tc.jws()
		r := send(via, jws)
		if r.GetErrorCode() != tc.code || !strings.Contains(r.GetErrorMessage(), tc.rule) {
			t.Fatalf("%s via n%d: got %s: %s; want %s naming %q", tc.name, via, r.GetErrorCode(), r.GetErrorMessage(), tc.code, tc.rule)
		}
		sc, err := registry.ParseCommand(jws)
		if err != nil {
			t.Fatal(err)
		}
		if r.GetIndex() == 0 {
			// Refused by admission, before the log (a signature no key
			// of the issuer may make now, a reused id): every server's
			// admission decides the same from its own copy.
			for k, nd := range c.Nodes {
				if nd.Role != node.RoleVoter {
					continue
				}
				err := nd.Node().FSM().PreVerify(sc)
				if tc.code == registry.CodeAlreadyExists {
					prev, _ := nd.Node().FSM().LookupResult(issuer, sc.Command.GetId())
					if prev == nil || prev.GetErrorCode() != "" {
						t.Fatalf("%s: n%d lost the first command's record: %v", tc.name, k, prev)
					}
					continue
				}
				if registry.ErrorCode(err) != tc.code || !strings.Contains(fmt.Sprint(err), tc.rule) {
					t.Fatalf("%s: n%d's admission says %v, want %s naming %q", tc.name, k, err, tc.code, tc.rule)
				}
			}
			continue
		}
		// Every server's own FSM recorded the same decision (a member holds
		// no dedupe records: it copies state, it decides nothing).
		if err := c.WaitFor(30*time.Second, func() error {
			for k, nd := range c.Nodes {
				if nd.Role != node.RoleVoter {
					continue
				}
				got, err := nd.Node().FSM().LookupResult(issuer, sc.Command.GetId())
				if err != nil || got == nil {
					return fmt.Errorf("n%d has no result for %s yet (%v)", k, tc.name, err)
				}
				if got.GetErrorCode() != r.GetErrorCode() || got.GetErrorMessage() != r.GetErrorMessage() {
					t.Fatalf("%s: n%d decided %s: %s; the answer was %s: %s", tc.name, k, got.GetErrorCode(), got.GetErrorMessage(), r.GetErrorCode(), r.GetErrorMessage())
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	after := sameOnEveryNode(t, c)
	if d := nodetest.DiffDumps(before, after, 10); len(d) > 0 {
		t.Fatalf("refused commands changed the replicated state:\n%s", strings.Join(d, "\n"))
	}
}

// sameOnEveryNode waits until every node holds the same replicated state
// and returns it.
func sameOnEveryNode(t *testing.T, c *nodetest.Cluster) map[string]string {
	t.Helper()
	c.EnsureSame(t)
	d, _, err := nodetest.ReplicatedDump(c.Nodes[0].Node())
	if err != nil {
		t.Fatal(err)
	}
	return d
}
