package registry

import (
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// The governance rules (README, governance model): every forbidden command
// is refused with an error naming its rule and leaves the replicated state
// as it was; its allowed counterpart succeeds.

const (
	arsListed = "091870126333" // listed by its state agency, not joined
	arsJoiner = "091870126444" // unknown to the registry until it asks to join
)

var (
	stActive     = registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE
	stSuspended  = registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED
	stPending    = registryv1.OrganisationStatus_ORGANISATION_STATUS_PENDING
	stDeclined   = registryv1.OrganisationStatus_ORGANISATION_STATUS_DECLINED
	stRevoked    = registryv1.OrganisationStatus_ORGANISATION_STATUS_REVOKED
	stRegistered = registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED
)

// govWorld is the fixture world with the organisations governance needs:
// another state's agency, a district, a listed municipality (no keys) and a
// municipality that is about to join.
type govWorld struct {
	*world
	land05, district, listed, joiner *testOrg
	// extraKey is a private key a case made (a recovery key, a new key).
	extraKey jose.JSONWebKey
}

func newGovWorld(t *testing.T) *govWorld {
	t.Helper()
	g := &govWorld{world: newWorld(t)}
	g.land05 = g.stateAgency("05")
	g.district = g.onboard(&registryv1.Organisation{
		Id: "091870000000", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT, Name: "Landkreis Rosenheim",
		StateCode: "09", Ars: "091870000000",
	})
	g.listed = newTestOrg(t, municipalityRecord(arsListed, "Gelistet"))
	listed := g.listed.clone()
	listed.Keys = nil
	g.mustApply(g.signed(g.state, mPutOrg(listed)))
	g.joiner = newTestOrg(t, municipalityRecord(arsJoiner, "Neudorf"))
	return g
}

func municipalityRecord(ars, name string) *registryv1.Organisation {
	return &registryv1.Organisation{
		Id: ars, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: name,
		StateCode: ars[:2], Ars: ars, Ags: ars[:5] + ars[9:], ParentId: ars[:5] + "0000000",
	}
}

// join lets g.joiner request to join; returns its pending record's digest.
func (g *govWorld) join() string {
	g.t.Helper()
	g.mustApply(g.signed(g.joiner, mRequestJoin(g.joiner.clone())))
	return KeysDigest(getOrg(g.t, g.r, arsJoiner).GetKeys())
}

// addRecoveryKey gives the operator a recovery key (g.extraKey).
func (g *govWorld) addRecoveryKey() {
	g.t.Helper()
	k, err := keys.GenerateRecovery(keys.NewKID("op-rec"))
	if err != nil {
		g.t.Fatal(err)
	}
	pk, err := keys.Published(k)
	if err != nil {
		g.t.Fatal(err)
	}
	g.op.rec.Keys = append(g.op.rec.Keys, pk)
	g.mustApply(g.signed(g.op, mPutOrg(g.op.rec)))
	g.extraKey = k
}

// grantOnBehalfAndJoin lets the district entitle the centre on behalf of the
// listed municipality, which then joins and is approved.
func (g *govWorld) grantOnBehalfAndJoin() {
	g.t.Helper()
	g.mustApply(g.signed(g.district, mPutAuth(&registryv1.Authorisation{
		Id: "091870000000:ssc-inntal:listed", GrantorId: "091870000000", GranteeId: "ssc-inntal",
		Areas: []string{arsListed}, OnBehalfOf: arsListed,
	})))
	g.mustApply(g.signed(g.listed, mRequestJoin(g.listed.clone())))
	d := KeysDigest(getOrg(g.t, g.r, arsListed).GetKeys())
	g.mustApply(g.signed(g.state, mChangeStatus(arsListed, stActive, "beigetreten", d)))
}

// approveJoiner lets the joiner join and its state agency approve it.
func (g *govWorld) approveJoiner() {
	g.t.Helper()
	d := g.join()
	g.mustApply(g.signed(g.state, mChangeStatus(arsJoiner, stActive, "geprüft", d)))
}

type govCase struct {
	name  string
	setup func(g *govWorld)
	cmd   func(g *govWorld) string
	// want is the error code ("" = accepted); rule must then occur in the
	// message ("rule <name>").
	want, rule string
	check      func(t *testing.T, g *govWorld, res *registryv1.CommandResult)
}

func runGovCases(t *testing.T, cases []govCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newGovWorld(t)
			if tc.setup != nil {
				tc.setup(g)
			}
			before := dumpState(t, g.db)
			res := g.apply1(tc.cmd(g))
			requireCode(t, res, tc.want)
			if tc.want != "" {
				if tc.rule != "" && !strings.Contains(res.GetErrorMessage(), "rule "+tc.rule+":") {
					t.Fatalf("refusal %q does not name rule %s", res.GetErrorMessage(), tc.rule)
				}
				requireSameState(t, before, dumpState(t, g.db), ignoreBooks...)
			} else if d := diffState(without(before, ignoreBooks...), without(dumpState(t, g.db), ignoreBooks...)); d == "" {
				t.Fatal("accepted command changed nothing")
			}
			if tc.check != nil {
				tc.check(t, g, res)
			}
		})
	}
}

func requireStatus(t *testing.T, g *govWorld, id string, want registryv1.OrganisationStatus) *registryv1.Organisation {
	t.Helper()
	o := getOrg(t, g.r, id)
	if o.GetStatus() != want {
		t.Fatalf("%s is %v, want %v", id, o.GetStatus(), want)
	}
	return o
}

// Rule 1: organisation records are written by the organisation itself
// (never its identity or status) or by its approver.
func TestRuleOrganisationApprover(t *testing.T) {
	newMuni := func() *testOrg { return newTestOrg(t, municipalityRecord("091870126555", "Neu")) }
	runGovCases(t, []govCase{
		{
			name: "state agency registers a municipality of its state",
			cmd:  func(g *govWorld) string { return g.signed(g.state, mPutOrg(newMuni().rec)) },
			check: func(t *testing.T, g *govWorld, _ *registryv1.CommandResult) {
				requireStatus(t, g, "091870126555", stActive) // with a signing key
			},
		},
		{
			name: "state agency lists a municipality without keys",
			cmd: func(g *govWorld) string {
				r := newMuni().clone()
				r.Keys = nil
				return g.signed(g.state, mPutOrg(r))
			},
			check: func(t *testing.T, g *govWorld, _ *registryv1.CommandResult) {
				requireStatus(t, g, "091870126555", stRegistered)
			},
		},
		{
			name: "approver of another state registers a municipality",
			cmd:  func(g *govWorld) string { return g.signed(g.land05, mPutOrg(newMuni().rec)) },
			want: CodePermissionDenied, rule: ruleOrgApprover,
		},
		{
			name: "operator registers a municipality",
			cmd:  func(g *govWorld) string { return g.signed(g.op, mPutOrg(newMuni().rec)) },
			want: CodePermissionDenied, rule: ruleOrgApprover,
		},
		{
			name: "operator changes a municipality",
			cmd: func(g *govWorld) string {
				r := g.muni.clone()
				r.Name = "Umbenannt"
				return g.signed(g.op, mPutOrg(r))
			},
			want: CodePermissionDenied, rule: ruleOrgApprover,
		},
		{
			name: "approver moves a municipality into another state",
			cmd: func(g *govWorld) string {
				r := g.muni.clone()
				r.StateCode = "05"
				return g.signed(g.state, mPutOrg(r))
			},
			want: CodePermissionDenied, rule: ruleOrgApprover,
		},
		{
			name: "other state's agency takes over a municipality",
			cmd: func(g *govWorld) string {
				r := g.muni.clone()
				r.StateCode = "05"
				return g.signed(g.land05, mPutOrg(r))
			},
			want: CodePermissionDenied, rule: ruleOrgApprover,
		},
		{
			name: "municipality changes its neighbour",
			cmd: func(g *govWorld) string {
				r := g.muni2.clone()
				r.ApiEndpoint = "https://evil.example"
				return g.signed(g.muni, mPutOrg(r))
			},
			want: CodePermissionDenied, rule: ruleOrgApprover,
		},
		{
			name: "municipality changes its own parent",
			cmd: func(g *govWorld) string {
				r := g.muni.clone()
				r.ParentId = "ssc-inntal"
				return g.signed(g.muni, mPutOrg(r))
			},
			want: CodePermissionDenied, rule: ruleOwnRecord,
		},
		{
			name: "municipality changes its own endpoint",
			cmd: func(g *govWorld) string {
				r := g.muni.clone()
				r.ApiEndpoint = "https://verbund.musterdorf.de"
				return g.signed(g.muni, mPutOrg(r))
			},
		},
		{
			name: "approver registers keys for a listed municipality, making it active",
			cmd: func(g *govWorld) string {
				r := g.listed.clone()
				r.Status = stActive
				return g.signed(g.state, mPutOrg(r))
			},
			check: func(t *testing.T, g *govWorld, _ *registryv1.CommandResult) {
				requireStatus(t, g, arsListed, stActive)
				g.mustApply(g.signed(g.listed, mPutOffering(offering(arsListed, leikaGewerbe, arsListed))))
			},
		},
		{
			name: "approver re-sends a listed record without a status",
			cmd: func(g *govWorld) string {
				r := g.listed.clone()
				r.Keys, r.Name = nil, "Gelistet (neu)"
				return g.signed(g.state, mPutOrg(r))
			},
			check: func(t *testing.T, g *govWorld, _ *registryv1.CommandResult) {
				requireStatus(t, g, arsListed, stRegistered)
			},
		},
		{
			name: "approver suspends through put",
			cmd: func(g *govWorld) string {
				r := g.muni.clone()
				r.Status = stSuspended
				return g.signed(g.state, mPutOrg(r))
			},
			want: CodePreconditionFailed, rule: ruleStatus,
		},
		{
			name: "operator registers a state agency",
			cmd: func(g *govWorld) string {
				return g.signed(g.op, mPutOrg(newTestOrg(t, &registryv1.Organisation{
					Id: "nw-it", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY, Name: "IT.NRW", StateCode: "05",
				}).rec))
			},
		},
		{
			name: "state agency registers another state agency",
			cmd: func(g *govWorld) string {
				return g.signed(g.state, mPutOrg(newTestOrg(t, &registryv1.Organisation{
					Id: "by-neu", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY, Name: "Neu", StateCode: "09",
				}).rec))
			},
			want: CodePermissionDenied, rule: ruleOrgApprover,
		},
	})
}

// Rule 2: a join request is signed with a key it carries and makes the
// organisation PENDING; it publishes nothing until approved.
func TestRuleJoin(t *testing.T) {
	runGovCases(t, []govCase{
		{
			name: "new organisation asks to join",
			cmd:  func(g *govWorld) string { return g.signed(g.joiner, mRequestJoin(g.joiner.clone())) },
			check: func(t *testing.T, g *govWorld, _ *registryv1.CommandResult) {
				o := requireStatus(t, g, arsJoiner, stPending)
				if o.GetStatusChangedBy() != arsJoiner || len(o.GetKeys()) != 1 {
					t.Fatalf("pending record %v", o)
				}
			},
		},
		{
			name: "listed organisation joins, keeping the identity its approver listed",
			cmd: func(g *govWorld) string {
				r := g.listed.clone()
				r.Name = "Selbst ernannt"
				r.ApiEndpoint = "https://verbund.gelistet.de"
				return g.signed(g.listed, mRequestJoin(r))
			},
			check: func(t *testing.T, g *govWorld, _ *registryv1.CommandResult) {
				o := requireStatus(t, g, arsListed, stPending)
				if o.GetName() != "Gelistet" || o.GetApiEndpoint() != "https://verbund.gelistet.de" || len(o.GetKeys()) != 1 {
					t.Fatalf("pending record %v", o)
				}
			},
		},
		{
			name: "join request signed with a key it does not carry",
			cmd: func(g *govWorld) string {
				r := g.joiner.clone()
				_, other := newSigningKey(t, "anderer")
				r.Keys = []*registryv1.PublicKey{other}
				return g.signed(g.joiner, mRequestJoin(r))
			},
			want: CodeUnknownKey, rule: ruleJoin,
		},
		{
			name: "approved organisation asks to join again",
			cmd:  func(g *govWorld) string { return g.signed(g.muni, mRequestJoin(g.muni.clone())) },
			want: CodePreconditionFailed, rule: ruleJoin,
		},
		{
			name:  "pending organisation publishes",
			setup: func(g *govWorld) { g.join() },
			cmd: func(g *govWorld) string {
				return g.signed(g.joiner, mPutOffering(offering(arsJoiner, leikaGewerbe, arsJoiner)))
			},
			want: CodePermissionDenied, rule: ruleNotApproved,
		},
		{
			name:  "approved organisation publishes",
			setup: func(g *govWorld) { g.approveJoiner() },
			cmd: func(g *govWorld) string {
				return g.signed(g.joiner, mPutOffering(offering(arsJoiner, leikaGewerbe, arsJoiner)))
			},
		},
		{
			name: "join request takes a key of another organisation",
			cmd: func(g *govWorld) string {
				r := g.joiner.clone()
				r.Keys = append(r.Keys, g.muni.rec.GetKeys()[0])
				return g.signed(g.joiner, mRequestJoin(r))
			},
			want: CodePermissionDenied, rule: "", // kid uniqueness (no governance rule name)
		},
	})
}

// Rule 3: status changes by the approver, along the allowed moves.
func TestRuleStatusTransition(t *testing.T) {
	approve := func(by func(g *govWorld) *testOrg, digest func(g *govWorld, d string) string) func(g *govWorld) string {
		return func(g *govWorld) string {
			d := KeysDigest(getOrg(g.t, g.r, arsJoiner).GetKeys())
			return g.signed(by(g), mChangeStatus(arsJoiner, stActive, "geprüft", digest(g, d)))
		}
	}
	same := func(_ *govWorld, d string) string { return d }
	runGovCases(t, []govCase{
		{
			name:  "state agency approves its municipality",
			setup: func(g *govWorld) { g.join() },
			cmd:   approve(func(g *govWorld) *testOrg { return g.state }, same),
			check: func(t *testing.T, g *govWorld, _ *registryv1.CommandResult) {
				o := requireStatus(t, g, arsJoiner, stActive)
				if o.GetStatusChangedBy() != "by-lfst" || o.GetStatusReason() != "geprüft" {
					t.Fatalf("record %v", o)
				}
			},
		},
		{
			name:  "another state's agency approves",
			setup: func(g *govWorld) { g.join() },
			cmd:   approve(func(g *govWorld) *testOrg { return g.land05 }, same),
			want:  CodePermissionDenied, rule: ruleOrgApprover,
		},
		{
			name:  "operator approves a municipality",
			setup: func(g *govWorld) { g.join() },
			cmd:   approve(func(g *govWorld) *testOrg { return g.op }, same),
			want:  CodePermissionDenied, rule: ruleOrgApprover,
		},
		{
			name:  "approval of other keys than the pending ones",
			setup: func(g *govWorld) { g.join() },
			cmd: approve(func(g *govWorld) *testOrg { return g.state }, func(g *govWorld, _ string) string {
				return KeysDigest(g.muni.rec.GetKeys())
			}),
			want: CodePreconditionFailed, rule: ruleStatus,
		},
		{
			name:  "decline",
			setup: func(g *govWorld) { g.join() },
			cmd: func(g *govWorld) string {
				return g.signed(g.state, mChangeStatus(arsJoiner, stDeclined, "unbekannt", ""))
			},
			check: func(t *testing.T, g *govWorld, _ *registryv1.CommandResult) {
				requireStatus(t, g, arsJoiner, stDeclined)
				// A declined organisation may ask again.
				g.mustApply(g.signed(g.joiner, mRequestJoin(g.joiner.clone())))
				requireStatus(t, g, arsJoiner, stPending)
			},
		},
		{
			name: "decline an active organisation",
			cmd:  func(g *govWorld) string { return g.signed(g.state, mChangeStatus(arsMuni, stDeclined, "nein", "")) },
			want: CodePreconditionFailed, rule: ruleStatus,
		},
		{
			name: "suspend, then its writes are refused",
			cmd: func(g *govWorld) string {
				return g.signed(g.state, mChangeStatus(arsMuni, stSuspended, "Prüfung", ""))
			},
			check: func(t *testing.T, g *govWorld, _ *registryv1.CommandResult) {
				o := requireStatus(t, g, arsMuni, stSuspended)
				if o.GetInactiveSinceIndex() != g.index {
					t.Fatalf("inactive_since_index %d, want %d", o.GetInactiveSinceIndex(), g.index)
				}
				before := dumpState(t, g.db)
				res := g.apply1(g.signed(g.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))))
				requireCode(t, res, CodePermissionDenied)
				if !strings.Contains(res.GetErrorMessage(), "rule "+ruleSuspended) {
					t.Fatalf("refusal %q", res.GetErrorMessage())
				}
				requireSameState(t, before, dumpState(t, g.db), ignoreBooks...)
				g.mustApply(g.signed(g.state, mChangeStatus(arsMuni, stActive, "geprüft", "")))
				g.mustApply(g.signed(g.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))))
			},
		},
		{
			name: "suspension by another state's agency",
			cmd:  func(g *govWorld) string { return g.signed(g.land05, mChangeStatus(arsMuni, stSuspended, "fremd", "")) },
			want: CodePermissionDenied, rule: ruleOrgApprover,
		},
		{
			name: "suspension by the municipality's neighbour",
			cmd:  func(g *govWorld) string { return g.signed(g.muni2, mChangeStatus(arsMuni, stSuspended, "fremd", "")) },
			want: CodePermissionDenied, rule: ruleOrgApprover,
		},
		{
			name: "revoke, then it can neither sign nor come back",
			cmd: func(g *govWorld) string {
				return g.signed(g.state, mChangeStatus(arsMuni, stRevoked, "aufgelöst", ""))
			},
			check: func(t *testing.T, g *govWorld, _ *registryv1.CommandResult) {
				requireStatus(t, g, arsMuni, stRevoked)
				res := g.apply1(g.signed(g.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))))
				requireCode(t, res, CodePermissionDenied)
				if !strings.Contains(res.GetErrorMessage(), "rule "+ruleRevoked) {
					t.Fatalf("refusal %q", res.GetErrorMessage())
				}
				requireCode(t, g.apply1(g.signed(g.state, mChangeStatus(arsMuni, stActive, "doch", ""))), CodePreconditionFailed)
			},
		},
		{
			name: "the operator's status",
			cmd:  func(g *govWorld) string { return g.signed(g.op, mChangeStatus(operatorID, stSuspended, "selbst", "")) },
			want: CodePermissionDenied, rule: ruleStatus,
		},
		{
			name: "operator suspends a state agency",
			cmd:  func(g *govWorld) string { return g.signed(g.op, mChangeStatus("land-05", stSuspended, "Prüfung", "")) },
		},
	})
}

// Rule 4: key recovery by the approver, or the operator's own by its
// recovery key; old keys are revoked at that index.
func TestRuleKeyRecovery(t *testing.T) {
	freshKey := func(t *testing.T) *registryv1.PublicKey {
		_, pk := newSigningKey(t, "neu")
		return pk
	}
	runGovCases(t, []govCase{
		{
			name: "state agency recovers its municipality",
			cmd: func(g *govWorld) string {
				k, pk := newSigningKey(t, "musterdorf-neu")
				g.extraKey = k
				return g.signed(g.state, mRecoverKeys(arsMuni, "Schlüssel verloren", pk))
			},
			check: func(t *testing.T, g *govWorld, res *registryv1.CommandResult) {
				o := getOrg(t, g.r, arsMuni)
				if len(o.GetKeys()) != 2 || o.GetKeys()[0].GetStatus() != registryv1.KeyStatus_KEY_STATUS_REVOKED ||
					o.GetKeys()[0].GetRevokedAtIndex() != res.GetIndex() || o.GetStatusReason() != "Schlüssel verloren" {
					t.Fatalf("record %v", o)
				}
				// The old key signs nothing any more; the new one does.
				requireCode(t, g.apply1(g.signed(g.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))), CodeUnknownKey)
				g.muni.key = g.extraKey
				g.mustApply(g.signed(g.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))))
				// What the old key signed before stays verifiable.
				if _, err := keys.SigningKeyAt(o, o.GetKeys()[0].GetKid(), keys.Moment{Index: res.GetIndex() - 1}); err != nil {
					t.Fatalf("old key before the recovery: %v", err)
				}
			},
		},
		{
			name: "operator recovers a municipality",
			cmd:  func(g *govWorld) string { return g.signed(g.op, mRecoverKeys(arsMuni, "verloren", freshKey(t))) },
			want: CodePermissionDenied, rule: ruleRecovery,
		},
		{
			name: "neighbour recovers a municipality",
			cmd:  func(g *govWorld) string { return g.signed(g.muni2, mRecoverKeys(arsMuni, "verloren", freshKey(t))) },
			want: CodePermissionDenied, rule: ruleRecovery,
		},
		{
			name: "another state's agency recovers a municipality",
			cmd:  func(g *govWorld) string { return g.signed(g.land05, mRecoverKeys(arsMuni, "verloren", freshKey(t))) },
			want: CodePermissionDenied, rule: ruleRecovery,
		},
		{
			name:  "operator recovers itself with its signing key",
			setup: func(g *govWorld) { g.addRecoveryKey() },
			cmd: func(g *govWorld) string {
				return g.signed(g.op, mRecoverKeys(operatorID, "gestohlen?", freshKey(t)))
			},
			want: CodePermissionDenied, rule: ruleRecovery,
		},
		{
			name:  "operator replaces its recovery key by a put",
			setup: func(g *govWorld) { g.addRecoveryKey() },
			cmd: func(g *govWorld) string {
				k, err := keys.GenerateRecovery(keys.NewKID("op-rec"))
				if err != nil {
					t.Fatal(err)
				}
				pk, _ := keys.Published(k)
				rec := proto.Clone(g.op.rec).(*registryv1.Organisation)
				var ks []*registryv1.PublicKey
				for _, x := range rec.GetKeys() {
					if x.GetUse() != keys.UseRec {
						ks = append(ks, x)
					}
				}
				rec.Keys = append(ks, pk)
				return g.signed(g.op, mPutOrg(rec))
			},
			want: CodePermissionDenied, rule: ruleRecovery,
		},
		{
			name: "approver's put drops the keys of a joined organisation",
			cmd: func(g *govWorld) string {
				rec := proto.Clone(g.muni.rec).(*registryv1.Organisation)
				rec.Keys = nil
				return g.signed(g.state, mPutOrg(rec))
			},
			want: CodePermissionDenied, rule: ruleKeysKept,
		},
		{
			name: "approver's put replaces a key with another under the same kid",
			cmd: func(g *govWorld) string {
				rec := proto.Clone(g.muni.rec).(*registryv1.Organisation)
				k, err := keys.GenerateSigning(g.muni.key.KeyID)
				if err != nil {
					t.Fatal(err)
				}
				pk, _ := keys.Published(k)
				rec.Keys = []*registryv1.PublicKey{pk}
				return g.signed(g.state, mPutOrg(rec))
			},
			want: CodePermissionDenied, rule: ruleKeysKept,
		},
		{
			name: "approver's put revokes a key and adds one",
			cmd: func(g *govWorld) string {
				rec := proto.Clone(g.muni.rec).(*registryv1.Organisation)
				for _, pk := range rec.GetKeys() {
					pk.Status = registryv1.KeyStatus_KEY_STATUS_REVOKED
				}
				_, pk := newSigningKey(t, "neu")
				rec.Keys = append(rec.Keys, pk)
				return g.signed(g.state, mPutOrg(rec))
			},
		},
		{
			name: "operator recovers a state agency",
			cmd:  func(g *govWorld) string { return g.signed(g.op, mRecoverKeys("by-lfst", "verloren", freshKey(t))) },
		},
		{
			name:  "recovery of a pending organisation",
			setup: func(g *govWorld) { g.join() },
			cmd:   func(g *govWorld) string { return g.signed(g.state, mRecoverKeys(arsJoiner, "verloren", freshKey(t))) },
			want:  CodePreconditionFailed, rule: ruleRecovery,
		},
		{
			name:  "operator recovers itself with its recovery key",
			setup: func(g *govWorld) { g.addRecoveryKey() },
			cmd: func(g *govWorld) string {
				return signCmd(t, g.cmd(g.op, mRecoverKeys(operatorID, "Betriebsschlüssel verloren", freshKey(t))), g.extraKey)
			},
			check: func(t *testing.T, g *govWorld, _ *registryv1.CommandResult) {
				o := getOrg(t, g.r, operatorID)
				for _, pk := range o.GetKeys() {
					if pk.GetKid() == g.op.key.KeyID && pk.GetStatus() != registryv1.KeyStatus_KEY_STATUS_REVOKED {
						t.Fatalf("old operator key %v", pk)
					}
				}
				requireCode(t, g.apply1(g.signed(g.op, mPutService(service(leikaHund, "Hund", nil, nil)))), CodeUnknownKey)
			},
		},
		{
			name:  "recovery key signs anything else",
			setup: func(g *govWorld) { g.addRecoveryKey() },
			cmd: func(g *govWorld) string {
				return signCmd(t, g.cmd(g.op, mPutService(service(leikaHund, "Hund", nil, nil))), g.extraKey)
			},
			want: CodePermissionDenied, rule: ruleRecovery,
		},
		{
			name:  "recovery key recovers another organisation",
			setup: func(g *govWorld) { g.addRecoveryKey() },
			cmd: func(g *govWorld) string {
				return signCmd(t, g.cmd(g.op, mRecoverKeys("by-lfst", "verloren", freshKey(t))), g.extraKey)
			},
			want: CodePermissionDenied, rule: ruleRecovery,
		},
	})
}

// Rule 5: authorisations by the area's responsible body.
func TestRuleAuthorisation(t *testing.T) {
	onBehalf := func(grantor string) *registryv1.Authorisation {
		return &registryv1.Authorisation{Id: grantor + ":ssc-inntal:listed", GrantorId: grantor, GranteeId: "ssc-inntal", Areas: []string{arsListed}, OnBehalfOf: arsListed}
	}
	runGovCases(t, []govCase{
		{
			name: "municipality authorises a centre for its area",
			cmd: func(g *govWorld) string {
				return g.signed(g.muni, mPutAuth(authorisation(arsMuni, "ssc-inntal", arsMuni)))
			},
		},
		{
			name: "forged: signed by a neighbour in the municipality's name",
			cmd: func(g *govWorld) string {
				return g.signed(g.muni2, mPutAuth(authorisation(arsMuni, "ssc-inntal", arsMuni)))
			},
			want: CodePermissionDenied, rule: ruleAuthGrantor,
		},
		{
			name: "forged: an area outside the grantor's",
			cmd: func(g *govWorld) string {
				return g.signed(g.muni2, mPutAuth(authorisation(arsMuni2, "ssc-inntal", arsMuni)))
			},
			want: CodePermissionDenied, rule: ruleAuthArea,
		},
		{
			name: "municipality authorises for its whole district",
			cmd: func(g *govWorld) string {
				return g.signed(g.muni, mPutAuth(authorisation(arsMuni, "ssc-inntal", "09187")))
			},
			want: CodePermissionDenied, rule: ruleAuthArea,
		},
		{
			name: "district authorises for its district",
			cmd: func(g *govWorld) string {
				return g.signed(g.district, mPutAuth(authorisation("091870000000", "ssc-inntal", "09187")))
			},
		},
		{
			name: "centre authorises (no area of its own)",
			cmd: func(g *govWorld) string {
				return g.signed(g.ssc, mPutAuth(authorisation("ssc-inntal", arsMuni, arsMuni)))
			},
			want: CodePermissionDenied, rule: ruleAuthArea,
		},
		{
			name: "district grants on behalf of a listed municipality",
			cmd:  func(g *govWorld) string { return g.signed(g.district, mPutAuth(onBehalf("091870000000"))) },
		},
		{
			name: "state agency grants on behalf of a listed municipality",
			cmd:  func(g *govWorld) string { return g.signed(g.state, mPutAuth(onBehalf("by-lfst"))) },
		},
		{
			name: "another state's agency grants on behalf",
			cmd:  func(g *govWorld) string { return g.signed(g.land05, mPutAuth(onBehalf("land-05"))) },
			want: CodePermissionDenied, rule: ruleAuthArea,
		},
		{
			name: "on behalf of a municipality that has joined",
			cmd: func(g *govWorld) string {
				a := onBehalf("091870000000")
				a.Areas, a.OnBehalfOf = []string{arsMuni}, arsMuni
				return g.signed(g.district, mPutAuth(a))
			},
			want: CodePermissionDenied, rule: ruleAuthArea,
		},
		{
			name:  "the municipality takes over a grant made on its behalf once it joined",
			setup: func(g *govWorld) { g.grantOnBehalfAndJoin() },
			cmd: func(g *govWorld) string {
				a := onBehalf("091870000000")
				a.GrantorId, a.OnBehalfOf = arsListed, ""
				return g.signed(g.listed, mPutAuth(a))
			},
		},
		{
			name:  "the district changes its grant after the municipality joined",
			setup: func(g *govWorld) { g.grantOnBehalfAndJoin() },
			cmd: func(g *govWorld) string {
				a := onBehalf("091870000000")
				a.Note = "geändert"
				return g.signed(g.district, mPutAuth(a))
			},
			want: CodePermissionDenied, rule: ruleAuthArea,
		},
		{
			name:  "a stranger changes a grant",
			setup: func(g *govWorld) { g.authorise(g.muni, g.ssc, arsMuni) },
			cmd: func(g *govWorld) string {
				a := authorisation(arsMuni, "ssc-inntal", arsMuni)
				a.GrantorId = arsMuni2
				a.Areas = []string{arsMuni2}
				return g.signed(g.muni2, mPutAuth(a))
			},
			want: CodePermissionDenied, rule: ruleAuthGrantor,
		},
	})
}

// Rule 6: withdrawal by the grantor, the municipality granted for, or the
// grantor's approver; the offering areas it entitled leave every answer in
// the same entry, unless another authorisation covers them.
func TestRuleWithdrawAuthorisation(t *testing.T) {
	sscOff := "ssc-inntal:" + leikaGewerbe
	id := authorisation(arsMuni, "ssc-inntal", arsMuni).GetId()
	serving := func(g *govWorld) {
		g.authorise(g.muni, g.ssc, arsMuni)
		g.authorise(g.muni2, g.ssc, arsMuni2)
		// Published directly: addOffering would add grants of its own.
		g.mustApply(g.signed(g.ssc, mPutOffering(offering("ssc-inntal", leikaGewerbe, arsMuni, arsMuni2))))
		if got := providerIDs(g.t, g.r, leikaGewerbe, arsMuni); !slices.Equal(got, []string{sscOff}) {
			g.t.Fatalf("providers before %v", got)
		}
	}
	gone := func(t *testing.T, g *govWorld, res *registryv1.CommandResult) {
		if got := providerIDs(t, g.r, leikaGewerbe, arsMuni); len(got) != 0 {
			t.Fatalf("providers for %s after the withdrawal: %v", arsMuni, got)
		}
		if got := providerIDs(t, g.r, leikaGewerbe, arsMuni2); !slices.Equal(got, []string{sscOff}) {
			t.Fatalf("providers for %s: %v", arsMuni2, got)
		}
		d := dumpState(t, g.db)
		if ks := keysWithPrefix(d, string(authDepPrefix(id))); len(ks) != 0 {
			t.Fatalf("dependencies left: %v", ks)
		}
		if _, ok := d[string(offerAuthKey(sscOff, arsMuni))]; ok {
			t.Fatal("x/ao entry left")
		}
		checkEntitledIndex(t, d)
	}
	runGovCases(t, []govCase{
		{name: "by its grantor", setup: serving, cmd: func(g *govWorld) string { return g.signed(g.muni, mWithdrawAuth(id)) }, check: gone},
		{name: "by the grantor's approver", setup: serving, cmd: func(g *govWorld) string { return g.signed(g.state, mWithdrawAuth(id)) }, check: gone},
		{
			name: "by a stranger", setup: serving,
			cmd:  func(g *govWorld) string { return g.signed(g.muni2, mWithdrawAuth(id)) },
			want: CodePermissionDenied, rule: ruleAuthGrantor,
		},
		{
			name: "by the grantee", setup: serving,
			cmd:  func(g *govWorld) string { return g.signed(g.ssc, mWithdrawAuth(id)) },
			want: CodePermissionDenied, rule: ruleAuthGrantor,
		},
		{
			name: "by another state's agency", setup: serving,
			cmd:  func(g *govWorld) string { return g.signed(g.land05, mWithdrawAuth(id)) },
			want: CodePermissionDenied, rule: ruleAuthGrantor,
		},
		{
			name: "another authorisation still covers the area",
			setup: func(g *govWorld) {
				serving(g)
				g.authorise(g.district, g.ssc, "09187")
			},
			cmd: func(g *govWorld) string { return g.signed(g.muni, mWithdrawAuth(id)) },
			check: func(t *testing.T, g *govWorld, _ *registryv1.CommandResult) {
				if got := providerIDs(t, g.r, leikaGewerbe, arsMuni); !slices.Equal(got, []string{sscOff}) {
					t.Fatalf("providers %v", got)
				}
				d := dumpState(t, g.db)
				if v := d[string(offerAuthKey(sscOff, arsMuni))]; v != authorisation("091870000000", "ssc-inntal", "09187").GetId() {
					t.Fatalf("entitlement now %q", v)
				}
				checkEntitledIndex(t, d)
			},
		},
		{
			name:  "narrowed to other services",
			setup: serving,
			cmd: func(g *govWorld) string {
				a := authorisation(arsMuni, "ssc-inntal", arsMuni)
				a.LeikaKeys = []string{leikaHund}
				return g.signed(g.muni, mPutAuth(a))
			},
			check: gone,
		},
		{
			name: "on-behalf grant withdrawn by the municipality once it joined",
			setup: func(g *govWorld) {
				g.grantOnBehalfAndJoin()
				g.mustApply(g.signed(g.ssc, mPutOffering(offering("ssc-inntal", leikaGewerbe, arsListed))))
				if got := providerIDs(g.t, g.r, leikaGewerbe, arsListed); !slices.Equal(got, []string{sscOff}) {
					g.t.Fatalf("providers before %v", got)
				}
			},
			cmd: func(g *govWorld) string { return g.signed(g.listed, mWithdrawAuth("091870000000:ssc-inntal:listed")) },
			check: func(t *testing.T, g *govWorld, _ *registryv1.CommandResult) {
				if got := providerIDs(t, g.r, leikaGewerbe, arsListed); len(got) != 0 {
					t.Fatalf("providers %v", got)
				}
				checkEntitledIndex(t, dumpState(t, g.db))
			},
		},
		{
			name: "unknown authorisation",
			cmd:  func(g *govWorld) string { return g.signed(g.muni, mWithdrawAuth(id)) },
			want: CodeNotFound, rule: "",
		},
	})
}

// Rule 7: an organisation publishes only its own offerings, and only for
// areas it is responsible for or authorised by the area's responsible body.
func TestRuleAreaResponsibility(t *testing.T) {
	runGovCases(t, []govCase{
		{
			name: "municipality offers for its own area",
			cmd: func(g *govWorld) string {
				return g.signed(g.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))
			},
		},
		{
			name: "municipality offers for its neighbour's area",
			cmd: func(g *govWorld) string {
				return g.signed(g.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni, arsMuni2)))
			},
			want: CodePermissionDenied, rule: ruleAreaResponsible,
		},
		{
			name: "municipality offers for another state",
			cmd: func(g *govWorld) string {
				return g.signed(g.muni, mPutOffering(offering(arsMuni, leikaGewerbe, "05")))
			},
			want: CodePermissionDenied, rule: ruleAreaResponsible,
		},
		{
			name: "centre offers without an authorisation",
			cmd: func(g *govWorld) string {
				return g.signed(g.ssc, mPutOffering(offering("ssc-inntal", leikaGewerbe, arsMuni)))
			},
			want: CodePermissionDenied, rule: ruleAreaResponsible,
		},
		{
			name:  "centre offers with the municipality's authorisation",
			setup: func(g *govWorld) { g.authorise(g.muni, g.ssc, arsMuni) },
			cmd: func(g *govWorld) string {
				return g.signed(g.ssc, mPutOffering(offering("ssc-inntal", leikaGewerbe, arsMuni)))
			},
			check: func(t *testing.T, g *govWorld, _ *registryv1.CommandResult) {
				if got := providerIDs(t, g.r, leikaGewerbe, arsMuni); !slices.Equal(got, []string{"ssc-inntal:" + leikaGewerbe}) {
					t.Fatalf("providers %v", got)
				}
				checkEntitledIndex(t, dumpState(t, g.db))
			},
		},
		{
			name:  "centre offers beyond its authorisation",
			setup: func(g *govWorld) { g.authorise(g.muni, g.ssc, arsMuni) },
			cmd: func(g *govWorld) string {
				return g.signed(g.ssc, mPutOffering(offering("ssc-inntal", leikaGewerbe, arsMuni, "091870126")))
			},
			want: CodePermissionDenied, rule: ruleAreaResponsible,
		},
		{
			name: "centre offers a service the authorisation does not cover",
			setup: func(g *govWorld) {
				a := authorisation(arsMuni, "ssc-inntal", arsMuni)
				a.LeikaKeys = []string{leikaHund}
				g.mustApply(g.signed(g.muni, mPutAuth(a)))
			},
			cmd: func(g *govWorld) string {
				return g.signed(g.ssc, mPutOffering(offering("ssc-inntal", leikaGewerbe, arsMuni)))
			},
			want: CodePermissionDenied, rule: ruleAreaResponsible,
		},
		{
			name:  "authorisation granted to someone else",
			setup: func(g *govWorld) { g.authorise(g.muni, g.muni2, arsMuni) },
			cmd: func(g *govWorld) string {
				return g.signed(g.ssc, mPutOffering(offering("ssc-inntal", leikaGewerbe, arsMuni)))
			},
			want: CodePermissionDenied, rule: ruleAreaResponsible,
		},
		{
			name: "municipality publishes its neighbour's offering",
			cmd: func(g *govWorld) string {
				return g.signed(g.muni, mPutOffering(offering(arsMuni2, leikaGewerbe, arsMuni2)))
			},
			want: CodePermissionDenied, rule: ruleOwnOfferings,
		},
		{
			name:  "municipality deletes its neighbour's offering",
			setup: func(g *govWorld) { g.addOffering(g.muni2, leikaGewerbe, arsMuni2) },
			cmd: func(g *govWorld) string {
				return g.signed(g.muni, mDeleteOffering(arsMuni2+":"+leikaGewerbe))
			},
			want: CodePermissionDenied, rule: ruleOwnOfferings,
		},
		{
			name: "state agency offers for its state",
			cmd: func(g *govWorld) string {
				return g.signed(g.state, mPutOffering(offering("by-lfst", leikaGewerbe, "09")))
			},
		},
		{
			name: "district offers for a municipality in it",
			cmd: func(g *govWorld) string {
				return g.signed(g.district, mPutOffering(offering("091870000000", leikaGewerbe, arsMuni)))
			},
		},
	})
}

// Rule 9: a command id reused by its issuer for other content is refused
// with already_exists; the first command's record stays, and a true retry
// is answered as a duplicate.
func TestRuleSameIDOtherContent(t *testing.T) {
	w := newWorld(t)
	cmd := w.cmd(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))
	first := signCmd(t, cmd, w.muni.key)
	r1 := w.apply1(first)
	requireCode(t, r1, "")
	if len(r1.GetCommandSha256()) != 32 {
		t.Fatalf("command_sha256 %x", r1.GetCommandSha256())
	}
	other := proto.Clone(cmd).(*registryv1.Command)
	other.Mutations = []*registryv1.Mutation{mDeleteOffering(arsMuni + ":" + leikaGewerbe)}
	before := dumpState(t, w.db)
	res := w.apply1(signCmd(t, other, w.muni.key))
	requireCode(t, res, CodeAlreadyExists)
	if res.GetDuplicate() {
		t.Fatal("reuse answered as a duplicate")
	}
	requireSameState(t, before, dumpState(t, w.db), ignoreApplied...) // not even the dedupe record changes
	// A true retry (also signed again, and signed again later) is a
	// duplicate with the first result.
	later := proto.Clone(cmd).(*registryv1.Command)
	later.IssuedAtUnixMs += 60_000
	for _, raw := range []string{first, signCmd(t, cmd, w.muni.key), signCmd(t, later, w.muni.key)} {
		again := w.apply1(raw)
		if !again.GetDuplicate() || again.GetIndex() != r1.GetIndex() || again.GetErrorCode() != "" {
			t.Fatalf("retry: %v", again)
		}
	}
	if ErrorCode(ErrorFromCode(CodeAlreadyExists, "x")) != CodeAlreadyExists {
		t.Fatal("already_exists does not round-trip")
	}
}

// checkEntitledIndex checks the provider index against the entitlement
// records: every x/pa entry has its x/ao record, every x/ao naming an
// authorisation has its x/ad dependency and a stored authorisation of the
// offering's organisation that covers it, and vice versa.
func checkEntitledIndex(t testing.TB, d map[string]string) {
	t.Helper()
	offerings := map[string]*registryv1.Offering{}
	for _, k := range keysWithPrefix(d, pOffering) {
		o := &registryv1.Offering{}
		if err := proto.Unmarshal([]byte(d[k]), o); err != nil {
			t.Fatal(err)
		}
		offerings[o.GetId()] = o
	}
	pa := map[string]bool{}
	for _, k := range keysWithPrefix(d, pProvider) {
		pa[k] = true
	}
	ao := 0
	for _, k := range keysWithPrefix(d, pOfferAuth) {
		rest := k[len(pOfferAuth):]
		cut := strings.LastIndexByte(rest, '/')
		off, area, auth := rest[:cut], rest[cut+1:], d[k]
		o := offerings[off]
		if o == nil || !pa[string(providerKey(o.GetLeikaKey(), area, off))] {
			t.Fatalf("x/ao %s without its provider entry", k)
		}
		ao++
		if auth == "" {
			continue
		}
		if _, ok := d[string(authDepKey(auth, off, area))]; !ok {
			t.Fatalf("x/ao %s -> %s without its dependency", k, auth)
		}
		a := &registryv1.Authorisation{}
		if err := proto.Unmarshal([]byte(d[string(authKey(auth))]), a); err != nil || a.GetId() != auth {
			t.Fatalf("x/ao %s names missing authorisation %s", k, auth)
		}
		if a.GetGranteeId() != o.GetOrganisationId() || !covers(a, o.GetLeikaKey(), area) {
			t.Fatalf("authorisation %s does not cover %s for %s", auth, off, area)
		}
	}
	if ao != len(pa) {
		t.Fatalf("%d provider entries, %d entitlement records", len(pa), ao)
	}
	for _, k := range keysWithPrefix(d, pAuthDep) {
		rest := k[len(pAuthDep):]
		i := strings.IndexByte(rest, '/')
		j := strings.LastIndexByte(rest, '/')
		if d[string(offerAuthKey(rest[i+1:j], rest[j+1:]))] != rest[:i] {
			t.Fatalf("dependency %s not matched by x/ao", k)
		}
	}
}

// The change feed reports authorisations as CHANGE_KIND_AUTHORISATION, and
// a withdrawal as a deletion in the same entry as the provider entries it
// takes away.
func TestFeedAuthorisationChanges(t *testing.T) {
	w := newWorld(t)
	id := authorisation(arsMuni, "ssc-inntal", arsMuni).GetId()
	changes := func(after uint64) ([]*registryv1.Change, []*registryv1.FeedEntry) {
		t.Helper()
		entries, _, ok, err := w.r.FeedAfter(after, 100)
		if err != nil || !ok {
			t.Fatalf("feed after %d: ok %v, %v", after, ok, err)
		}
		var out []*registryv1.Change
		for _, e := range entries {
			out = append(out, Changes(e.GetIndex(), e.GetWrites(), true)...)
		}
		return out, entries
	}
	before := w.fsm.AppliedIndex()
	w.authorise(w.muni, w.ssc, arsMuni)
	got, _ := changes(before)
	if len(got) != 1 || got[0].GetKind() != registryv1.ChangeKind_CHANGE_KIND_AUTHORISATION || got[0].GetId() != id ||
		got[0].GetAuthorisation().GetGranteeId() != "ssc-inntal" || got[0].GetAuthorisation().GetCommandId() == "" {
		t.Fatalf("changes %v", got)
	}
	w.mustApply(w.signed(w.ssc, mPutOffering(offering("ssc-inntal", leikaGewerbe, arsMuni))))
	before = w.fsm.AppliedIndex()
	w.mustApply(w.signed(w.muni, mWithdrawAuth(id)))
	got, entries := changes(before)
	if len(got) != 1 || got[0].GetKind() != registryv1.ChangeKind_CHANGE_KIND_AUTHORISATION || !got[0].GetDeleted() {
		t.Fatalf("changes after the withdrawal %v", got)
	}
	gone := string(providerKey(leikaGewerbe, arsMuni, "ssc-inntal:"+leikaGewerbe))
	found := false
	for _, wr := range entries[0].GetWrites() {
		found = found || (string(wr.GetKey()) == gone && wr.GetDelete())
	}
	if !found || len(entries) != 1 {
		t.Fatalf("the withdrawal's entry does not delete %s", gone)
	}
}
