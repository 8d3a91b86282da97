package registry

import (
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

func TestGenesis(t *testing.T) {
	tests := []struct {
		name string
		// first builds the first command of an empty registry.
		first    func(h *harness) string
		wantCode string
	}{
		{
			name:  "operator self-signed",
			first: func(h *harness) string { op := newTestOrg(t, operatorRecord()); return h.signed(op, mPutOrg(op.rec)) },
		},
		{
			name: "municipality registers itself",
			first: func(h *harness) string {
				o := newTestOrg(t, &registryv1.Organisation{Id: arsMuni, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: "Musterdorf"})
				return h.signed(o, mPutOrg(o.rec))
			},
			wantCode: CodeUnknownKey,
		},
		{
			name: "operator record signed with a key not in it",
			first: func(h *harness) string {
				op := newTestOrg(t, operatorRecord())
				other, _ := newSigningKey(t, "other")
				return signCmd(t, h.cmd(op, mPutOrg(op.rec)), other)
			},
			wantCode: CodeUnknownKey,
		},
		{
			name: "operator record with the right kid but signed by another key",
			first: func(h *harness) string {
				op := newTestOrg(t, operatorRecord())
				other, _ := newSigningKey(t, "other")
				other.KeyID = op.key.KeyID
				return signCmd(t, h.cmd(op, mPutOrg(op.rec)), other)
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "operator record issued by another organisation",
			first: func(h *harness) string {
				op := newTestOrg(t, operatorRecord())
				cmd := h.cmd(op, mPutOrg(op.rec))
				cmd.Issuer = "someone-else"
				return signCmd(t, cmd, op.key)
			},
			wantCode: CodeUnknownKey,
		},
		{
			name: "operator record with a revoked key",
			first: func(h *harness) string {
				op := newTestOrg(t, operatorRecord())
				op.rec.Keys[0].Status = registryv1.KeyStatus_KEY_STATUS_REVOKED
				return h.signed(op, mPutOrg(op.rec))
			},
			wantCode: CodeUnknownKey,
		},
		{
			name: "operator issues a service before registering itself",
			first: func(h *harness) string {
				op := newTestOrg(t, operatorRecord())
				return h.signed(op, mPutService(service(leikaGewerbe, "Gewerbe-Anmeldung", nil, nil)), mPutOrg(op.rec))
			},
			wantCode: CodePermissionDenied,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			before := dumpState(t, h.db)
			res := h.apply1(tc.first(h))
			requireCode(t, res, tc.wantCode)
			op, err := h.r.Operator()
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantCode != "" {
				if op != "" {
					t.Fatalf("operator %q registered by a refused genesis", op)
				}
				requireSameState(t, before, dumpState(t, h.db), ignoreBooks...)
				return
			}
			if op != operatorID {
				t.Fatalf("operator %q, want %q", op, operatorID)
			}
			rec := getOrg(t, h.r, operatorID)
			if IndexOfRevision(rec.GetRevision()) != 1 || rec.GetUpdatedBy() != operatorID || rec.GetStatus() != registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE {
				t.Fatalf("operator record: revision %d, updated_by %q, status %v", rec.GetRevision(), rec.GetUpdatedBy(), rec.GetStatus())
			}
		})
	}
}

// TestGenesisOnlyOnce: after genesis, nobody can become a second operator.
func TestGenesisOnlyOnce(t *testing.T) {
	tests := []struct {
		name     string
		cmd      func(h *harness) string
		wantCode string
	}{
		{
			name: "second operator signs its own genesis",
			cmd: func(h *harness) string {
				rec := operatorRecord()
				rec.Id = "zweiter-betrieb"
				op2 := newTestOrg(t, rec)
				return h.signed(op2, mPutOrg(op2.rec))
			},
			wantCode: CodeUnknownKey,
		},
		{
			name: "operator registers a second operator",
			cmd: func(h *harness) string {
				rec := operatorRecord()
				rec.Id = "zweiter-betrieb"
				op2 := newTestOrg(t, rec)
				return h.signed(h.op, mPutOrg(op2.rec))
			},
			wantCode: CodePermissionDenied,
		},
		{
			name: "operator turns itself into a municipality",
			cmd: func(h *harness) string {
				rec := h.op.clone()
				rec.Kind = registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY
				return h.signed(h.op, mPutOrg(rec))
			},
			wantCode: CodePermissionDenied,
		},
		{
			name: "operator renames itself",
			cmd: func(h *harness) string {
				rec := h.op.clone()
				rec.Name = "Verbund Netzbetrieb GmbH"
				return h.signed(h.op, mPutOrg(rec))
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.genesis()
			before := dumpState(t, h.db)
			res := h.apply1(tc.cmd(h))
			requireCode(t, res, tc.wantCode)
			if op, _ := h.r.Operator(); op != operatorID {
				t.Fatalf("operator is %q", op)
			}
			if tc.wantCode != "" {
				requireSameState(t, before, dumpState(t, h.db), ignoreBooks...)
				if _, _, err := h.r.Organisation("zweiter-betrieb"); err == nil {
					t.Fatal("second operator registered")
				}
			}
		})
	}
}

// TestGenesisCommandWithCatalogue: the genesis command may carry more than
// the operator record; the operator's later mutations in it are judged as the
// operator's (it registers a state agency; a municipality is that agency's
// to approve, not the operator's).
func TestGenesisCommandWithCatalogue(t *testing.T) {
	h := newHarness(t)
	op := newTestOrg(t, operatorRecord())
	state := newTestOrg(t, &registryv1.Organisation{Id: "by-lfst", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY, Name: "Landesamt", StateCode: "09"})
	muni := newTestOrg(t, &registryv1.Organisation{Id: arsMuni, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: "Musterdorf", Ars: arsMuni})
	res := h.apply1(h.signed(op,
		mPutOrg(op.rec),
		mPutService(service(leikaGewerbe, "Gewerbe-Anmeldung", nil, nil)),
		mPutOrg(state.rec),
	))
	requireCode(t, res, "")
	getService(t, h.r, leikaGewerbe)
	if o := getOrg(t, h.r, "by-lfst"); o.GetStatus() != registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE {
		t.Fatalf("state agency is %v", o.GetStatus())
	}
	// The agency registers its municipality, which publishes for itself.
	h.mustApply(h.signed(state, mPutOrg(muni.rec)))
	h.mustApply(h.signed(muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))))
	if ids := providerIDs(t, h.r, leikaGewerbe, arsMuni); !slices.Equal(ids, []string{arsMuni + ":" + leikaGewerbe}) {
		t.Fatalf("providers %v", ids)
	}
}

func TestOrganisationWrites(t *testing.T) {
	tests := []struct {
		name     string
		cmd      func(w *worldT) string
		wantCode string
		check    func(t *testing.T, w *worldT, res *registryv1.CommandResult)
	}{
		{
			name: "self-update of name and endpoint",
			cmd: func(w *worldT) string {
				rec := w.muni.clone()
				rec.Name = "Markt Musterdorf"
				rec.ApiEndpoint = "https://verbund.musterdorf.de"
				return w.signed(w.muni, mPutOrg(rec))
			},
			check: func(t *testing.T, w *worldT, res *registryv1.CommandResult) {
				o := getOrg(t, w.r, arsMuni)
				if o.GetName() != "Markt Musterdorf" || o.GetApiEndpoint() != "https://verbund.musterdorf.de" {
					t.Fatalf("record not updated: %v", o)
				}
				if IndexOfRevision(o.GetRevision()) != res.GetIndex() || o.GetUpdatedBy() != arsMuni || o.GetUpdatedAtUnixMs() != w.now {
					t.Fatalf("metadata: revision %d (want %d), by %q, at %d (want %d)", o.GetRevision(), res.GetIndex(), o.GetUpdatedBy(), o.GetUpdatedAtUnixMs(), w.now)
				}
				// The name index follows the rename.
				if got := listNames(t, w.r, OrgFilter{NamePrefix: "markt muster"}); !slices.Equal(got, []string{"Markt Musterdorf"}) {
					t.Fatalf("by new name: %v", got)
				}
				if got := listNames(t, w.r, OrgFilter{NamePrefix: "musterdorf"}); len(got) != 0 {
					t.Fatalf("old name still indexed: %v", got)
				}
			},
		},
		{
			name: "self-update of kind",
			cmd: func(w *worldT) string {
				r := w.muni.clone()
				r.Kind = registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT
				return w.signed(w.muni, mPutOrg(r))
			},
			wantCode: CodePermissionDenied,
		},
		{
			name:     "self-update of ars",
			cmd:      func(w *worldT) string { r := w.muni.clone(); r.Ars = arsMuni2; return w.signed(w.muni, mPutOrg(r)) },
			wantCode: CodePermissionDenied,
		},
		{
			name:     "self-update of ags",
			cmd:      func(w *worldT) string { r := w.muni.clone(); r.Ags = "09187222"; return w.signed(w.muni, mPutOrg(r)) },
			wantCode: CodePermissionDenied,
		},
		{
			name:     "self-update of state code",
			cmd:      func(w *worldT) string { r := w.muni.clone(); r.StateCode = "08"; return w.signed(w.muni, mPutOrg(r)) },
			wantCode: CodePermissionDenied,
		},
		{
			name: "self-update of parent",
			cmd: func(w *worldT) string {
				r := w.muni.clone()
				r.ParentId = "ssc-inntal"
				return w.signed(w.muni, mPutOrg(r))
			},
			wantCode: CodePermissionDenied,
		},
		{
			name: "self-update of status",
			cmd: func(w *worldT) string {
				r := w.muni.clone()
				r.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED
				return w.signed(w.muni, mPutOrg(r))
			},
			wantCode: CodePermissionDenied,
		},
		{
			name:     "municipality changes another organisation",
			cmd:      func(w *worldT) string { r := w.muni2.clone(); r.Name = "Gekapert"; return w.signed(w.muni, mPutOrg(r)) },
			wantCode: CodePermissionDenied,
		},
		{
			name: "municipality onboards a new organisation",
			cmd: func(w *worldT) string {
				n := newTestOrg(t, &registryv1.Organisation{Id: "ssc-neu", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: "Neu"})
				return w.signed(w.muni, mPutOrg(n.rec))
			},
			wantCode: CodePermissionDenied,
		},
		{
			name: "unregistered organisation registers itself",
			cmd: func(w *worldT) string {
				n := newTestOrg(t, &registryv1.Organisation{Id: "ssc-neu", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: "Neu"})
				return w.signed(n, mPutOrg(n.rec))
			},
			wantCode: CodeUnknownKey,
		},
		{
			name: "approver changes identity, then suspends",
			cmd: func(w *worldT) string {
				r := w.muni.clone()
				r.ParentId = "091870126000"
				return w.signed(w.state, mPutOrg(r))
			},
			check: func(t *testing.T, w *worldT, _ *registryv1.CommandResult) {
				o := getOrg(t, w.r, arsMuni)
				if o.GetParentId() != "091870126000" || o.GetUpdatedBy() != "by-lfst" {
					t.Fatalf("parent %v by %q", o.GetParentId(), o.GetUpdatedBy())
				}
				w.mustApply(w.signed(w.state, mChangeStatus(arsMuni, registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED, "Prüfung", "")))
				// A suspended organisation can no longer sign.
				r := w.muni.clone()
				r.Name = "Trotzdem"
				requireCode(t, w.apply1(w.signed(w.muni, mPutOrg(r))), CodePermissionDenied)
			},
		},
		{
			name: "approver changes the status through put",
			cmd: func(w *worldT) string {
				r := w.muni.clone()
				r.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED
				return w.signed(w.state, mPutOrg(r))
			},
			wantCode: CodePreconditionFailed,
		},
		{
			name: "operator changes a municipality",
			cmd: func(w *worldT) string {
				r := w.muni.clone()
				r.Name = "Vom Betrieb umbenannt"
				return w.signed(w.op, mPutOrg(r))
			},
			wantCode: CodePermissionDenied,
		},
		{
			name: "operator onboards an organisation that then signs",
			cmd: func(w *worldT) string {
				n := newTestOrg(t, &registryv1.Organisation{Id: "ssc-neu", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: "Servicezentrum Neu"})
				w.extra = n
				return w.signed(w.op, mPutOrg(n.rec, preAbsent()))
			},
			check: func(t *testing.T, w *worldT, res *registryv1.CommandResult) {
				o := getOrg(t, w.r, "ssc-neu")
				// Registered with a signing key by its approver: ACTIVE.
				if IndexOfRevision(o.GetRevision()) != res.GetIndex() || o.GetStatus() != registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE {
					t.Fatalf("revision %d status %v", o.GetRevision(), o.GetStatus())
				}
				d := dumpState(t, w.db)
				if d[string(kidKey(w.extra.key.KeyID))] != "ssc-neu" {
					t.Fatalf("kid index: %q", d[string(kidKey(w.extra.key.KeyID))])
				}
				w.authorise(w.state, w.extra, "09187")
				w.mustApply(w.signed(w.extra, mPutOffering(offering("ssc-neu", leikaGewerbe, "09187"))))
			},
		},
		{
			name: "state agency onboards an organisation",
			cmd: func(w *worldT) string {
				return w.signed(w.state, mPutOrg(&registryv1.Organisation{Id: "by-neu", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY, Name: "Neu"}))
			},
			wantCode: CodePermissionDenied,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorldT(t)
			before := dumpState(t, w.db)
			res := w.apply1(tc.cmd(w))
			requireCode(t, res, tc.wantCode)
			if tc.wantCode != "" {
				requireSameState(t, before, dumpState(t, w.db), ignoreBooks...)
			}
			if tc.check != nil {
				tc.check(t, w, res)
			}
		})
	}
}

// worldT is a world with a slot for an extra organisation made by a case.
type worldT struct {
	*world
	extra *testOrg
}

func newWorldT(t *testing.T) *worldT { return &worldT{world: newWorld(t)} }

func listNames(t testing.TB, r *Reader, f OrgFilter) []string {
	t.Helper()
	orgs, _, _, err := r.ListOrganisations(f)
	if err != nil {
		t.Fatalf("ListOrganisations(%+v): %v", f, err)
	}
	var names []string
	for _, o := range orgs {
		names = append(names, o.GetName())
	}
	return names
}

func TestServiceWrites(t *testing.T) {
	tests := []struct {
		name     string
		issuer   func(w *world) *testOrg
		wantCode string
	}{
		{name: "operator", issuer: func(w *world) *testOrg { return w.op }},
		{name: "state agency", issuer: func(w *world) *testOrg { return w.state }},
		{name: "municipality", issuer: func(w *world) *testOrg { return w.muni }, wantCode: CodePermissionDenied},
		{name: "shared service centre", issuer: func(w *world) *testOrg { return w.ssc }, wantCode: CodePermissionDenied},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			before := dumpState(t, w.db)
			res := w.apply1(w.signed(tc.issuer(w), mPutService(service(leikaHund, "Hund anmelden", []string{"Hundesteuer"}, []string{"Hund"}))))
			requireCode(t, res, tc.wantCode)
			if tc.wantCode != "" {
				requireSameState(t, before, dumpState(t, w.db), ignoreBooks...)
				if _, _, err := w.r.Service(leikaHund); err == nil {
					t.Fatal("service created")
				}
				if ids := searchIDs(t, w.r, "hund", "", 10); len(ids) != 0 {
					t.Fatalf("search index written: %v", ids)
				}
				return
			}
			s := getService(t, w.r, leikaHund)
			if IndexOfRevision(s.GetRevision()) != res.GetIndex() || s.GetUpdatedBy() != tc.issuer(w).id() {
				t.Fatalf("revision %d by %q", s.GetRevision(), s.GetUpdatedBy())
			}
			if ids := searchIDs(t, w.r, "hundesteuer", "", 10); !slices.Equal(ids, []string{leikaHund}) {
				t.Fatalf("search: %v", ids)
			}
		})
	}
}

// TestServiceUpdateReindexes: terms and life situations of the old version
// are no longer found after an update.
func TestServiceUpdateReindexes(t *testing.T) {
	w := newWorld(t)
	w.addService(service(leikaHund, "Hund anmelden", []string{"Hundesteuer"}, []string{"Hund"}))
	w.addService(service(leikaHund, "Katze anmelden", []string{"Katzenregister"}, []string{"Haustier"}))
	if ids := searchIDs(t, w.r, "hundesteuer", "", 10); len(ids) != 0 {
		t.Fatalf("old keyword still found: %v", ids)
	}
	if ids := searchIDs(t, w.r, "", "Hund", 10); len(ids) != 0 {
		t.Fatalf("old life situation still found: %v", ids)
	}
	if ids := searchIDs(t, w.r, "katze", "Haustier", 10); !slices.Equal(ids, []string{leikaHund}) {
		t.Fatalf("new version: %v", ids)
	}
	ls, _, err := w.r.LifeSituations()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.Name == "Hund" {
			t.Fatalf("life situation Hund still listed with %d services", l.Services)
		}
	}
}

func TestOfferingWrites(t *testing.T) {
	own := arsMuni + ":" + leikaGewerbe
	tests := []struct {
		name     string
		setup    func(w *world)
		cmd      func(w *world) string
		wantCode string
		// wantProviders for (leikaGewerbe, arsMuni) after the command.
		wantProviders []string
	}{
		{
			name:          "by its organisation",
			cmd:           func(w *world) string { return w.signed(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))) },
			wantProviders: []string{own},
		},
		{
			name:     "by the operator for an organisation",
			cmd:      func(w *world) string { return w.signed(w.op, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))) },
			wantCode: CodePermissionDenied,
		},
		{
			name: "by another organisation",
			cmd: func(w *world) string {
				return w.signed(w.muni2, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))
			},
			wantCode: CodePermissionDenied,
		},
		{
			name:  "takeover of another organisation's offering id",
			setup: func(w *world) { w.addOffering(w.muni, leikaGewerbe, arsMuni) },
			cmd: func(w *world) string {
				o := offering(arsMuni2, leikaGewerbe, arsMuni)
				o.Id = own
				return w.signed(w.muni2, mPutOffering(o))
			},
			wantCode:      CodePermissionDenied,
			wantProviders: []string{own},
		},
		{
			name:     "for an unknown service",
			cmd:      func(w *world) string { return w.signed(w.muni, mPutOffering(offering(arsMuni, leikaUnknown, arsMuni))) },
			wantCode: CodeNotFound,
		},
		{
			name: "for an unknown organisation",
			cmd: func(w *world) string {
				return w.signed(w.op, mPutOffering(offering("ssc-unbekannt", leikaGewerbe, arsMuni)))
			},
			wantCode: CodePermissionDenied,
		},
		{
			name: "update moves the areas",
			setup: func(w *world) {
				w.authorise(w.muni, w.ssc, arsMuni)
				w.authorise(w.muni2, w.ssc, arsMuni2)
				w.addOffering(w.ssc, leikaGewerbe, arsMuni)
			},
			cmd: func(w *world) string {
				return w.signed(w.ssc, mPutOffering(offering("ssc-inntal", leikaGewerbe, arsMuni2)))
			},
			wantProviders: nil,
		},
		{
			name:          "delete by its organisation",
			setup:         func(w *world) { w.addOffering(w.muni, leikaGewerbe, arsMuni) },
			cmd:           func(w *world) string { return w.signed(w.muni, mDeleteOffering(own)) },
			wantProviders: nil,
		},
		{
			name:          "delete by the operator",
			setup:         func(w *world) { w.addOffering(w.muni, leikaGewerbe, arsMuni) },
			cmd:           func(w *world) string { return w.signed(w.op, mDeleteOffering(own)) },
			wantCode:      CodePermissionDenied,
			wantProviders: []string{own},
		},
		{
			name:          "delete by another organisation",
			setup:         func(w *world) { w.addOffering(w.muni, leikaGewerbe, arsMuni) },
			cmd:           func(w *world) string { return w.signed(w.muni2, mDeleteOffering(own)) },
			wantCode:      CodePermissionDenied,
			wantProviders: []string{own},
		},
		{
			name:     "delete of an unknown offering",
			cmd:      func(w *world) string { return w.signed(w.muni, mDeleteOffering(own)) },
			wantCode: CodeNotFound,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			if tc.setup != nil {
				tc.setup(w)
			}
			before := dumpState(t, w.db)
			res := w.apply1(tc.cmd(w))
			requireCode(t, res, tc.wantCode)
			after := dumpState(t, w.db)
			if tc.wantCode != "" {
				requireSameState(t, before, after, ignoreBooks...)
			}
			if got := providerIDs(t, w.r, leikaGewerbe, arsMuni); !slices.Equal(got, tc.wantProviders) {
				t.Fatalf("providers for %s: %v, want %v", arsMuni, got, tc.wantProviders)
			}
			// The provider and per-organisation indexes hold exactly the
			// stored offerings.
			checkOfferingIndexes(t, after)
		})
	}
}

// checkOfferingIndexes checks that x/pa and x/oo index exactly the stored
// offerings.
func checkOfferingIndexes(t testing.TB, d map[string]string) {
	t.Helper()
	want := map[string]bool{}
	for _, k := range keysWithPrefix(d, pOffering) {
		o := &registryv1.Offering{}
		if err := proto.Unmarshal([]byte(d[k]), o); err != nil {
			t.Fatal(err)
		}
		for _, a := range o.GetAreas() {
			want[string(providerKey(o.GetLeikaKey(), a, o.GetId()))] = true
		}
		want[string(orgOfferKey(o.GetOrganisationId(), o.GetId()))] = true
	}
	got := map[string]bool{}
	for _, k := range append(keysWithPrefix(d, pProvider), keysWithPrefix(d, pOrgOffers)...) {
		got[k] = true
	}
	for k := range want {
		if !got[k] {
			t.Errorf("index key %q missing", k)
		}
	}
	for k := range got {
		if !want[k] {
			t.Errorf("stale index key %q", k)
		}
	}
}

func TestPreconditions(t *testing.T) {
	type rev struct{ org, svc, off uint64 }
	tests := []struct {
		name     string
		mut      func(w *world, r rev) *registryv1.Mutation
		wantCode string
	}{
		{name: "absent offering, new", mut: func(w *world, r rev) *registryv1.Mutation {
			return mPutOffering(offering(arsMuni2, leikaGewerbe, arsMuni2), preAbsent())
		}},
		{name: "absent offering, exists", wantCode: CodePreconditionFailed, mut: func(w *world, r rev) *registryv1.Mutation {
			return mPutOffering(offering(arsMuni, leikaGewerbe, "09187"), preAbsent())
		}},
		{name: "offering revision matches", mut: func(w *world, r rev) *registryv1.Mutation {
			return mPutOffering(offering(arsMuni, leikaGewerbe, "09187"), preRevision(r.off))
		}},
		{name: "offering revision mismatch", wantCode: CodePreconditionFailed, mut: func(w *world, r rev) *registryv1.Mutation {
			return mPutOffering(offering(arsMuni, leikaGewerbe, "09187"), preRevision(r.off-1))
		}},
		{name: "offering revision, missing", wantCode: CodePreconditionFailed, mut: func(w *world, r rev) *registryv1.Mutation {
			return mPutOffering(offering(arsMuni2, leikaGewerbe, arsMuni2), preRevision(r.off))
		}},
		{name: "delete with matching revision", mut: func(w *world, r rev) *registryv1.Mutation {
			return mDeleteOffering(arsMuni+":"+leikaGewerbe, preRevision(r.off))
		}},
		{name: "delete with revision mismatch", wantCode: CodePreconditionFailed, mut: func(w *world, r rev) *registryv1.Mutation {
			return mDeleteOffering(arsMuni+":"+leikaGewerbe, preRevision(r.off+1))
		}},
		{name: "organisation revision matches", mut: func(w *world, r rev) *registryv1.Mutation {
			o := w.muni.clone()
			o.Population = 4711
			return mPutOrg(o, preRevision(r.org))
		}},
		{name: "organisation revision mismatch", wantCode: CodePreconditionFailed, mut: func(w *world, r rev) *registryv1.Mutation {
			o := w.muni.clone()
			o.Population = 4711
			return mPutOrg(o, preRevision(r.org+1))
		}},
		{name: "organisation absent, exists", wantCode: CodePreconditionFailed, mut: func(w *world, r rev) *registryv1.Mutation {
			return mPutOrg(w.muni.clone(), preAbsent())
		}},
		{name: "service revision matches", mut: func(w *world, r rev) *registryv1.Mutation {
			return mPutService(service(leikaGewerbe, "Gewerbeanzeige", nil, nil), preRevision(r.svc))
		}},
		{name: "service revision mismatch", wantCode: CodePreconditionFailed, mut: func(w *world, r rev) *registryv1.Mutation {
			return mPutService(service(leikaGewerbe, "Gewerbeanzeige", nil, nil), preRevision(r.svc+1))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.addOffering(w.muni, leikaGewerbe, arsMuni)
			w.authorise(w.state, w.muni, "09187") // for the district-wide versions
			r := rev{
				org: getOrg(t, w.r, arsMuni).GetRevision(),
				svc: getService(t, w.r, leikaGewerbe).GetRevision(),
				off: getOffering(t, w.r, arsMuni+":"+leikaGewerbe).GetRevision(),
			}
			before := dumpState(t, w.db)
			// Each kind of write by whom the rules let make it.
			m := tc.mut(w, r)
			signer := w.op
			switch {
			case m.GetPutOrganisation() != nil:
				signer = w.state // the municipality's approver
			case m.GetPutOffering() != nil && m.GetPutOffering().GetOrganisationId() == arsMuni2:
				signer = w.muni2
			case m.GetPutOffering() != nil || m.GetDeleteOffering() != "":
				signer = w.muni
			}
			res := w.apply1(w.signed(signer, m))
			requireCode(t, res, tc.wantCode)
			if tc.wantCode != "" {
				requireSameState(t, before, dumpState(t, w.db), ignoreBooks...)
			} else if d := diffState(without(before, ignoreBooks...), without(dumpState(t, w.db), ignoreBooks...)); d == "" {
				t.Fatal("successful conditional write changed nothing")
			}
		})
	}
}

// TestStaleCommand: a command older than the stored version of an entity
// is refused, so a delayed command cannot roll it back.
func TestStaleCommand(t *testing.T) {
	tests := []struct {
		name string
		// write builds a mutation of the same entity at version v.
		write    func(w *world, v int) (*testOrg, *registryv1.Mutation)
		wantCode string
	}{
		{name: "offering", write: func(w *world, v int) (*testOrg, *registryv1.Mutation) {
			o := offering(arsMuni, leikaGewerbe, arsMuni)
			o.Name = []string{"alt", "neu"}[v]
			return w.muni, mPutOffering(o)
		}},
		{name: "organisation", write: func(w *world, v int) (*testOrg, *registryv1.Mutation) {
			o := w.muni.clone()
			o.Population = int64(1000 + v)
			return w.muni, mPutOrg(o)
		}},
		{name: "service", write: func(w *world, v int) (*testOrg, *registryv1.Mutation) {
			return w.op, mPutService(service(leikaHund, []string{"Hund alt", "Hund neu"}[v], nil, nil))
		}},
		{name: "offering delete", write: func(w *world, v int) (*testOrg, *registryv1.Mutation) {
			if v == 0 {
				return w.muni, mDeleteOffering(arsMuni + ":" + leikaGewerbe)
			}
			o := offering(arsMuni, leikaGewerbe, arsMuni)
			o.Name = "neu"
			return w.muni, mPutOffering(o)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.addOffering(w.muni, leikaGewerbe, arsMuni)
			// The old command is signed first but arrives after the new one.
			issuer, m := tc.write(w, 0)
			old := signCmd(t, w.cmd(issuer, m), issuer.key)
			issuer, m = tc.write(w, 1)
			w.mustApply(signCmd(t, w.cmd(issuer, m), issuer.key))
			before := dumpState(t, w.db)
			requireCode(t, w.apply1(old), CodeStale)
			requireSameState(t, before, dumpState(t, w.db), ignoreBooks...)
		})
	}
}

func TestReplayWindow(t *testing.T) {
	window := testFSMConfig().ReplayWindow.Milliseconds()
	skew := testFSMConfig().MaxClockSkew.Milliseconds()
	tests := []struct {
		name     string
		issuedAt int64 // relative to proposed_at
		wantCode string
	}{
		{name: "just issued", issuedAt: 0},
		{name: "at the window's edge", issuedAt: -window},
		{name: "older than the window", issuedAt: -window - 1, wantCode: CodeStale},
		{name: "days old", issuedAt: -3 * window, wantCode: CodeStale},
		{name: "within clock skew", issuedAt: skew},
		{name: "beyond clock skew", issuedAt: skew + 1, wantCode: CodeInvalidArgument},
		{name: "far future", issuedAt: 365 * 24 * time.Hour.Milliseconds(), wantCode: CodeInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			proposedAt := w.now + window/2
			cmd := w.cmd(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))
			cmd.IssuedAtUnixMs = proposedAt + tc.issuedAt
			before := dumpState(t, w.db)
			res := w.applyLog(w.nextLogAt(proposedAt, signCmd(t, cmd, w.muni.key)))
			requireCode(t, res[0], tc.wantCode)
			if tc.wantCode != "" {
				// Refused by the window: not even a dedupe record.
				requireSameState(t, before, dumpState(t, w.db), ignoreApplied...)
			} else {
				getOffering(t, w.r, arsMuni+":"+leikaGewerbe)
			}
		})
	}
}

func TestDuplicateCommand(t *testing.T) {
	tests := []struct {
		name      string
		sameEntry bool // the duplicate travels in the same log entry
		failing   bool // the original command fails
	}{
		{name: "later entry"},
		{name: "same entry", sameEntry: true},
		{name: "failed command, later entry", failing: true},
		{name: "failed command, same entry", sameEntry: true, failing: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			leika := leikaGewerbe
			if tc.failing {
				leika = leikaUnknown
			}
			raw := w.signed(w.muni, mPutOffering(offering(arsMuni, leika, arsMuni)))
			var first, dup *registryv1.CommandResult
			var before map[string]string
			if tc.sameEntry {
				res := w.apply(raw, raw)
				first, dup = res[0], res[1]
			} else {
				first = w.apply1(raw)
				before = dumpState(t, w.db)
				dup = w.apply1(raw)
				requireSameState(t, before, dumpState(t, w.db), ignoreApplied...)
			}
			if first.GetDuplicate() || !dup.GetDuplicate() {
				t.Fatalf("duplicate flags: first %v, second %v", first.GetDuplicate(), dup.GetDuplicate())
			}
			if dup.GetIndex() != first.GetIndex() || dup.GetCommandId() != first.GetCommandId() ||
				dup.GetErrorCode() != first.GetErrorCode() || dup.GetErrorMessage() != first.GetErrorMessage() {
				t.Fatalf("duplicate result %v differs from the original %v", dup, first)
			}
			if tc.failing {
				requireCode(t, first, CodeNotFound)
				return
			}
			requireCode(t, first, "")
			if o := getOffering(t, w.r, arsMuni+":"+leika); IndexOfRevision(o.GetRevision()) != first.GetIndex() {
				t.Fatalf("offering revision %d, want %d (applied twice?)", o.GetRevision(), first.GetIndex())
			}
		})
	}
}

// TestDuplicateIDOtherIssuer: command ids are deduplicated per issuer.
func TestDuplicateIDOtherIssuer(t *testing.T) {
	w := newWorld(t)
	c1 := w.cmd(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))
	c2 := w.cmd(w.muni2, mPutOffering(offering(arsMuni2, leikaGewerbe, arsMuni2)))
	c2.Id = c1.Id
	res := w.apply(signCmd(t, c1, w.muni.key), signCmd(t, c2, w.muni2.key))
	for i, r := range res {
		requireCode(t, r, "")
		if r.GetDuplicate() {
			t.Fatalf("result %d marked duplicate", i)
		}
	}
}

func TestAllOrNothing(t *testing.T) {
	tests := []struct {
		name     string
		issuer   func(w *world) *testOrg
		muts     func(w *world) []*registryv1.Mutation
		wantCode string
		check    func(t *testing.T, w *world)
	}{
		{
			name:   "offering then offering for an unknown service",
			issuer: func(w *world) *testOrg { return w.muni },
			muts: func(w *world) []*registryv1.Mutation {
				return []*registryv1.Mutation{
					mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)),
					mPutOffering(offering(arsMuni, leikaUnknown, arsMuni)),
				}
			},
			wantCode: CodeNotFound,
			check: func(t *testing.T, w *world) {
				if ids := providerIDs(t, w.r, leikaGewerbe, arsMuni); !slices.Equal(ids, []string{"ssc-inntal:" + leikaGewerbe}) {
					t.Fatalf("providers %v", ids)
				}
				if _, _, err := w.r.Offering(arsMuni + ":" + leikaGewerbe); err == nil {
					t.Fatal("offering stored")
				}
			},
		},
		{
			name:   "service then offering of an unknown organisation",
			issuer: func(w *world) *testOrg { return w.op },
			muts: func(w *world) []*registryv1.Mutation {
				return []*registryv1.Mutation{
					mPutService(service(leikaHund, "Hund anmelden", []string{"Hundesteuer"}, []string{"Hund"})),
					mPutOffering(offering(arsMuni, leikaHund, arsMuni)),
					mPutOffering(offering("ssc-unbekannt", leikaHund, arsMuni)),
				}
			},
			wantCode: CodePermissionDenied, // not its own offering
			check: func(t *testing.T, w *world) {
				if ids := searchIDs(t, w.r, "hund", "", 10); len(ids) != 0 {
					t.Fatalf("search finds %v", ids)
				}
				if ids := searchIDs(t, w.r, "", "Hund", 10); len(ids) != 0 {
					t.Fatalf("life situation finds %v", ids)
				}
				if _, err := w.r.FindProviders(leikaHund, arsMuni, 10); err == nil {
					t.Fatal("service exists")
				}
			},
		},
		{
			name:   "delete, rename, then a failing precondition",
			issuer: func(w *world) *testOrg { return w.ssc },
			muts: func(w *world) []*registryv1.Mutation {
				r := w.ssc.clone()
				r.Name = "Umbenannt"
				return []*registryv1.Mutation{
					mDeleteOffering("ssc-inntal:" + leikaGewerbe),
					mPutOrg(r),
					mPutOffering(offering("ssc-inntal", leikaGewerbe, arsMuni), preRevision(1)),
				}
			},
			wantCode: CodePreconditionFailed,
			check: func(t *testing.T, w *world) {
				if ids := providerIDs(t, w.r, leikaGewerbe, arsMuni); !slices.Equal(ids, []string{"ssc-inntal:" + leikaGewerbe}) {
					t.Fatalf("providers %v", ids)
				}
				if got := listNames(t, w.r, OrgFilter{NamePrefix: "umbenannt"}); len(got) != 0 {
					t.Fatalf("name index %v", got)
				}
			},
		},
		{
			name:   "key rotation then a forbidden change",
			issuer: func(w *world) *testOrg { return w.muni },
			muts: func(w *world) []*registryv1.Mutation {
				r := w.muni.clone()
				_, pk := newSigningKey(t, "neu")
				r.Keys = append(r.Keys, pk)
				return []*registryv1.Mutation{mPutOrg(r), mPutOffering(offering(arsMuni2, leikaGewerbe, arsMuni))}
			},
			wantCode: CodePermissionDenied,
			check: func(t *testing.T, w *world) {
				if n := len(getOrg(t, w.r, arsMuni).GetKeys()); n != 1 {
					t.Fatalf("%d keys", n)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.authorise(w.muni, w.ssc, arsMuni)
			w.addOffering(w.ssc, leikaGewerbe, arsMuni)
			before := dumpState(t, w.db)
			res := w.apply1(w.signed(tc.issuer(w), tc.muts(w)...))
			requireCode(t, res, tc.wantCode)
			after := dumpState(t, w.db)
			requireSameState(t, before, after, ignoreBooks...)
			// The failure is recorded for retries, and nothing else.
			if _, ok := after[string(cmdKey(tc.issuer(w).id(), res.GetCommandId()))]; !ok {
				t.Fatal("no dedupe record written")
			}
			tc.check(t, w)
		})
	}
}

// TestNoOpPut: writing a record with unchanged content succeeds but does not
// bump its revision or metadata.
func TestNoOpPut(t *testing.T) {
	tests := []struct {
		name string
		put  func(w *world) (*testOrg, *registryv1.Mutation)
		rev  func(t *testing.T, w *world) (uint64, int64)
	}{
		{
			name: "organisation",
			put:  func(w *world) (*testOrg, *registryv1.Mutation) { return w.muni, mPutOrg(w.muni.clone()) },
			rev: func(t *testing.T, w *world) (uint64, int64) {
				o := getOrg(t, w.r, arsMuni)
				return o.GetRevision(), o.GetUpdatedAtUnixMs()
			},
		},
		{
			name: "organisation onboarded without a status, re-sent by its approver",
			put:  func(w *world) (*testOrg, *registryv1.Mutation) { return w.state, mPutOrg(w.ssc.clone()) },
			rev: func(t *testing.T, w *world) (uint64, int64) {
				o := getOrg(t, w.r, w.ssc.id())
				return o.GetRevision(), o.GetUpdatedAtUnixMs()
			},
		},
		{
			name: "organisation onboarded without a status, re-sent by itself",
			put:  func(w *world) (*testOrg, *registryv1.Mutation) { return w.ssc, mPutOrg(w.ssc.clone()) },
			rev: func(t *testing.T, w *world) (uint64, int64) {
				o := getOrg(t, w.r, w.ssc.id())
				return o.GetRevision(), o.GetUpdatedAtUnixMs()
			},
		},
		{
			name: "service",
			put: func(w *world) (*testOrg, *registryv1.Mutation) {
				return w.state, mPutService(service(leikaGewerbe, "Gewerbe-Anmeldung", []string{"Gewerbe anmelden"}, []string{"Unternehmensgründung"}))
			},
			rev: func(t *testing.T, w *world) (uint64, int64) {
				s := getService(t, w.r, leikaGewerbe)
				return s.GetRevision(), s.GetUpdatedAtUnixMs()
			},
		},
		{
			name: "offering",
			put: func(w *world) (*testOrg, *registryv1.Mutation) {
				return w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))
			},
			rev: func(t *testing.T, w *world) (uint64, int64) {
				o := getOffering(t, w.r, arsMuni+":"+leikaGewerbe)
				return o.GetRevision(), o.GetUpdatedAtUnixMs()
			},
		},
		{
			name: "offering with metadata set by the client",
			put: func(w *world) (*testOrg, *registryv1.Mutation) {
				o := offering(arsMuni, leikaGewerbe, arsMuni)
				o.Revision, o.UpdatedAtUnixMs, o.UpdatedBy = 999, 1, "jemand"
				return w.muni, mPutOffering(o)
			},
			rev: func(t *testing.T, w *world) (uint64, int64) {
				o := getOffering(t, w.r, arsMuni+":"+leikaGewerbe)
				return o.GetRevision(), o.GetUpdatedAtUnixMs()
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.addOffering(w.muni, leikaGewerbe, arsMuni)
			rev, at := tc.rev(t, w)
			before := dumpState(t, w.db)
			issuer, m := tc.put(w)
			w.mustApply(w.signed(issuer, m))
			rev2, at2 := tc.rev(t, w)
			if rev2 != rev || at2 != at {
				t.Fatalf("revision %d -> %d, updated_at %d -> %d", rev, rev2, at, at2)
			}
			requireSameState(t, before, dumpState(t, w.db), ignoreBooks...)
		})
	}
}

func TestAuditHead(t *testing.T) {
	hash := func(c byte) string {
		b := make([]byte, 64)
		for i := range b {
			b[i] = c
		}
		return string(b)
	}
	tests := []struct {
		name     string
		issuer   func(w *world) *testOrg
		head     *registryv1.AuditHead
		wantCode string
	}{
		{name: "next sequence", issuer: func(w *world) *testOrg { return w.muni }, head: &registryv1.AuditHead{OrganisationId: arsMuni, Sequence: 11, Hash: hash('b')}},
		{name: "same head again", issuer: func(w *world) *testOrg { return w.muni }, head: &registryv1.AuditHead{OrganisationId: arsMuni, Sequence: 10, Hash: hash('a')}},
		{name: "by another organisation", issuer: func(w *world) *testOrg { return w.muni2 }, head: &registryv1.AuditHead{OrganisationId: arsMuni, Sequence: 11, Hash: hash('b')}, wantCode: CodePermissionDenied},
		{name: "by the operator", issuer: func(w *world) *testOrg { return w.op }, head: &registryv1.AuditHead{OrganisationId: arsMuni, Sequence: 11, Hash: hash('b')}, wantCode: CodePermissionDenied},
		{name: "sequence behind", issuer: func(w *world) *testOrg { return w.muni }, head: &registryv1.AuditHead{OrganisationId: arsMuni, Sequence: 9, Hash: hash('b')}, wantCode: CodeStale},
		{name: "fork at the same sequence", issuer: func(w *world) *testOrg { return w.muni }, head: &registryv1.AuditHead{OrganisationId: arsMuni, Sequence: 10, Hash: hash('c')}, wantCode: CodePreconditionFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.mustApply(w.signed(w.muni, mPutAuditHead(&registryv1.AuditHead{OrganisationId: arsMuni, Sequence: 10, Hash: hash('a')})))
			before := dumpState(t, w.db)
			requireCode(t, w.apply1(w.signed(tc.issuer(w), mPutAuditHead(tc.head))), tc.wantCode)
			got, _, err := w.r.AuditHead(arsMuni)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantCode != "" {
				requireSameState(t, before, dumpState(t, w.db), ignoreBooks...)
				if got.GetSequence() != 10 {
					t.Fatalf("head moved to %d", got.GetSequence())
				}
			} else if !proto.Equal(got, tc.head) {
				t.Fatalf("head %v, want %v", got, tc.head)
			}
		})
	}
}

// TestChangeFeedReportsChanges: the change feed (what Watch streams and
// members apply) reports the entities changed by successful commands, at
// their index, and nothing for refused ones; a delete is reported deleted.
func TestChangeFeedReportsChanges(t *testing.T) {
	w := newWorld(t)
	r := NewReader(w.db)
	feedChanges := func(after uint64) []*registryv1.Change {
		t.Helper()
		entries, _, ok, err := r.FeedAfter(after, 100)
		if err != nil || !ok {
			t.Fatalf("feed after %d: ok %v, %v", after, ok, err)
		}
		var out []*registryv1.Change
		for _, e := range entries {
			out = append(out, Changes(e.GetIndex(), e.GetWrites(), true)...)
		}
		return out
	}
	before := w.fsm.AppliedIndex()
	ok := w.signed(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))
	bad := w.signed(w.muni, mPutOffering(offering(arsMuni, leikaUnknown, arsMuni)))
	res := w.apply(ok, bad)
	got := feedChanges(before)
	if len(got) != 1 || got[0].GetIndex() != res[0].GetIndex() || got[0].GetKind() != registryv1.ChangeKind_CHANGE_KIND_OFFERING ||
		got[0].GetId() != arsMuni+":"+leikaGewerbe || got[0].GetOffering().GetLeikaKey() != leikaGewerbe {
		t.Fatalf("changes %v, want one offering change at index %d", got, res[0].GetIndex())
	}
	before = w.fsm.AppliedIndex()
	w.mustApply(w.signed(w.muni, mDeleteOffering(arsMuni+":"+leikaGewerbe)))
	got = feedChanges(before)
	if len(got) != 1 || !got[0].GetDeleted() || got[0].GetId() != arsMuni+":"+leikaGewerbe {
		t.Fatalf("changes after delete: %v", got)
	}
}

// TestNonCommandLogs: raft's own entries (configuration, noop) and
// undecodable data advance the applied index without results.
func TestNonCommandLogs(t *testing.T) {
	w := newWorld(t)
	before := dumpState(t, w.db)
	w.index++
	cfg := &raft.Log{Index: w.index, Term: 1, Type: raft.LogConfiguration, Data: []byte("x")}
	w.index++
	junk := &raft.Log{Index: w.index, Term: 1, Type: raft.LogCommand, Data: []byte{0xff, 0xff, 0xff}}
	out := w.fsm.ApplyBatch([]*raft.Log{cfg, junk})
	for i, o := range out {
		if o != nil {
			t.Fatalf("result %d: %#v, want nil", i, o)
		}
	}
	if w.fsm.AppliedIndex() != w.index {
		t.Fatalf("applied %d, want %d", w.fsm.AppliedIndex(), w.index)
	}
	requireSameState(t, before, dumpState(t, w.db), ignoreApplied...)
}
