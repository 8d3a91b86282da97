package catalogue

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

const muc = "091620000000"

func readFiles(t *testing.T, names ...string) []File {
	t.Helper()
	var out []File
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, File{Name: n, Data: b})
	}
	return out
}

func byRef(recs []Record) map[string]Record {
	m := map[string]Record{}
	for _, r := range recs {
		key := r.Ref
		if r.Offering != nil {
			key = r.Offering.GetId()
		}
		m[key] = r
	}
	return m
}

// TestParseDLDBTypeVariants reads another city's DLDB export whose fields
// come as numbers, booleans, null, objects instead of lists and texts
// instead of lists (the variants that broke decoding: address.city as
// false, ids and LeiKa keys as numbers), with records that carry no LeiKa
// key and one that does not decode: every record is reported.
func TestParseDLDBTypeVariants(t *testing.T) {
	recs, err := Parse(readFiles(t, "musterstadt_services_de.json", "musterstadt_locations_de.json"), ParseOptions{Org: muc})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 7 {
		for _, r := range recs {
			t.Logf("%s %s %v", r.Source, r.Ref, r.Problem)
		}
		t.Fatalf("%d records, want 7 (4 offerings, 2 without LeiKa key, 1 malformed)", len(recs))
	}
	var noLeika, bad int
	for _, r := range recs {
		switch {
		case errors.Is(r.Problem, ErrNoLeiKa):
			noLeika++
			if !strings.Contains(r.Problem.Error(), "9000003") && !strings.Contains(r.Problem.Error(), "9000004") {
				t.Errorf("no-LeiKa refusal names no record: %v", r.Problem)
			}
		case errors.Is(r.Problem, ErrMalformed):
			bad++
			if r.Ref != "9000005" || !strings.Contains(r.Source, "#5") {
				t.Errorf("malformed record %s at %s: %v", r.Ref, r.Source, r.Problem)
			}
		case r.Problem != nil:
			t.Errorf("%s: unexpected problem %v", r.Source, r.Problem)
		}
	}
	if noLeika != 2 || bad != 1 {
		t.Errorf("%d without LeiKa key, %d malformed; want 2 and 1", noLeika, bad)
	}
	m := byRef(recs)
	first, branch, multi := m[muc+":99050012104000"], m[muc+":99050012104000:9000002"], m[muc+":99050012071000"]
	if first.Offering == nil || branch.Offering == nil || multi.Offering == nil || m[muc+":99050012104000:9000006"].Offering == nil {
		t.Fatalf("offering ids: %v", func() (ids []string) {
			for k := range m {
				ids = append(ids, k)
			}
			return
		}())
	}
	o := branch.Offering
	if len(o.GetForms()) != 1 || o.GetForms()[0].GetUrl() != "https://musterstadt.example/formulare/gewa1.pdf" {
		t.Errorf("forms (an object, not a list): %v", o.GetForms())
	}
	if len(o.GetPrerequisites()) != 1 || o.GetPrerequisites()[0] != "Sie betreiben ein stehendes Gewerbe." {
		t.Errorf("prerequisites (a text, not a list): %q", o.GetPrerequisites())
	}
	if len(o.GetLegalBasis()) != 1 || o.GetLegalBasis()[0].GetName() != "§ 14 GewO" || o.GetLegalBasis()[0].GetUrl() == "" {
		t.Errorf("legal basis: %v", o.GetLegalBasis())
	}
	if len(o.GetDeadlines()) != 1 || len(o.GetDocuments()) != 1 || !o.GetDocuments()[0].GetRequired() {
		t.Errorf("deadlines %q, documents %v", o.GetDeadlines(), o.GetDocuments())
	}
	var inPerson *registryv1.Channel
	for _, c := range o.GetChannels() {
		if c.GetKind() == registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON {
			inPerson = c
		}
	}
	a := inPerson.GetAddress()
	if a.GetHouseNumber() != "1" || a.GetStreet() != "Marktplatz 1" || a.GetPostalCode() != "12345" || a.GetCity() != "" || a.GetLocation().GetLat() != 48.1 {
		t.Errorf("address with number fields and city false: %v", a)
	}
	if o.GetInfoUrl() != "https://musterstadt.example/dienstleistung/9000002" || o.GetProcessingTime().GetAppointmentMinutes() != 20 {
		t.Errorf("info url %q, processing %v", o.GetInfoUrl(), o.GetProcessingTime())
	}
	if len(branch.Warnings) == 0 || !strings.Contains(strings.Join(branch.Warnings, ";"), "javascript") {
		t.Errorf("the javascript link is left out without a note: %q", branch.Warnings)
	}
	if w := strings.Join(m[muc+":99050012104000:9000006"].Warnings, ";"); !strings.Contains(w, "ca. 20 Minuten") || !strings.Contains(w, "location 999") {
		t.Errorf("notes of 9000006: %q", w)
	}
	if a := first.Offering.GetChannels(); len(a) != 1 || a[0].GetAddress().GetHouseNumber() != "7a" || a[0].GetAddress().GetCity() != "Musterstadt" {
		t.Errorf("9000001 channels: %v", a)
	}
	if branch.Service == nil || branch.Service.GetLeikaKey() != "99050012104000" || len(branch.Service.GetKeywords()) != 2 {
		t.Errorf("catalogue entry: %v", branch.Service)
	}
}

func TestParseCSV(t *testing.T) {
	csv := "\ufeffid;leika_key;name;areas;street;house_number;postal_code;city;fee_cents;prerequisites;legal_basis;forms;deadlines\n" +
		"muc:hund;99018004000000;Hundehaltung anmelden;;Rathausplatz;2;80331;München;7500;Hund älter als 3 Monate|Wohnsitz in München;§ 1 HStS <https://example.org/hsts>;Anmeldung <https://example.org/a.pdf>;binnen 2 Wochen\n" +
		";;Ohne Schlüssel;;;;;;;;;;\n" +
		"m-x;99018004000000;Falsche Gebühr;;;;;;zehn;;;;\n" +
		"m-y;99018004000000;Zu wenig Felder\n" +
		"m-z;99018004000000;Fremdes Gebiet;05315;;;;;;;;;\n"
	recs, err := Parse([]File{{Name: "offers.csv", Data: []byte(csv)}}, ParseOptions{Org: muc})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 5 {
		t.Fatalf("%d records, want 5", len(recs))
	}
	o := recs[0].Offering
	if recs[0].Problem != nil || o.GetAreas()[0] != muc || o.GetFees()[0].GetAmountCents() != 7500 || len(o.GetPrerequisites()) != 2 ||
		o.GetLegalBasis()[0].GetUrl() != "https://example.org/hsts" || o.GetForms()[0].GetName() != "Anmeldung" ||
		o.GetChannels()[0].GetAddress().GetHouseNumber() != "2" || o.GetDeadlines()[0] != "binnen 2 Wochen" {
		t.Errorf("record 1: %v %v", recs[0].Problem, o)
	}
	for i, want := range []error{ErrNoLeiKa, ErrMalformed, ErrMalformed} {
		if !errors.Is(recs[i+1].Problem, want) {
			t.Errorf("record %d (%s): %v, want %v", i+2, recs[i+1].Source, recs[i+1].Problem, want)
		}
	}
	if recs[2].Source != "offers.csv:4" || recs[3].Source != "offers.csv:5" {
		t.Errorf("sources %s, %s", recs[2].Source, recs[3].Source)
	}
	if recs[4].Problem != nil || recs[4].Offering.GetAreas()[0] != "05315" {
		t.Errorf("record 5 parses (its area is checked by the plan): %v", recs[4].Problem)
	}
	if _, err := Parse([]File{{Name: "x.csv", Data: []byte("leika_key,name,colour\n")}}, ParseOptions{Org: muc}); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Errorf("unknown column: %v", err)
	}
}

// fakeRegistry is the registry as MakePlan reads it.
type fakeRegistry struct {
	orgs      map[string]*registryv1.Organisation
	services  map[string]*registryv1.Service
	offerings map[string]*registryv1.Offering
	auths     []*registryv1.Authorisation
	rev       uint64
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{
		orgs: map[string]*registryv1.Organisation{
			muc:            {Id: muc, Ars: muc, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE},
			"091840148148": {Id: "091840148148", Ars: "091840148148", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY},
		},
		services: map[string]*registryv1.Service{
			"99050012104000": {LeikaKey: "99050012104000", Name: "Gewerbe anmelden"},
			"99050012071000": {LeikaKey: "99050012071000", Name: "Gewerbe ummelden"},
			"99018004000000": {LeikaKey: "99018004000000", Name: "Hund anmelden"},
		},
		offerings: map[string]*registryv1.Offering{},
	}
}

func (f *fakeRegistry) Organisation(_ context.Context, id string) (*registryv1.Organisation, error) {
	return f.orgs[id], nil
}
func (f *fakeRegistry) Service(_ context.Context, l string) (*registryv1.Service, error) {
	return f.services[l], nil
}
func (f *fakeRegistry) Offerings(_ context.Context, org string) ([]*registryv1.Offering, uint64, error) {
	var out []*registryv1.Offering
	for _, o := range f.offerings {
		if o.GetOrganisationId() == org {
			out = append(out, o)
		}
	}
	return out, f.rev, nil
}
func (f *fakeRegistry) Authorisations(context.Context, string) ([]*registryv1.Authorisation, error) {
	return f.auths, nil
}

// TestPlanRefusals: the plan refuses what the registry would refuse, each
// record with its reason.
func TestPlanRefusals(t *testing.T) {
	reg := newFakeRegistry()
	mk := func(id, leika string, areas ...string) Record {
		return Record{Source: id, Ref: id, Offering: &registryv1.Offering{Id: id, OrganisationId: muc, LeikaKey: leika, Areas: areas, Name: id}}
	}
	other := mk("other", "99050012104000", muc)
	other.Offering.OrganisationId = "091840148148"
	recs := []Record{
		mk(muc+":a", "99050012104000", muc),
		mk(muc+":b", "99999999999999", muc),            // not in the catalogue
		mk(muc+":c", "99050012104000", "091629999999"), // no such municipality
		mk(muc+":d", "99050012104000", "091840148148"), // not Munich's area
		other,
	}
	p, err := MakePlan(context.Background(), reg, muc, recs, PlanOptions{Delete: []string{muc + ":gone"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		act Action
		err error
		msg string
	}{{ActionNew, nil, ""}, {ActionRefused, ErrNotEntitled, "not in the service catalogue"}, {ActionRefused, ErrUnknownArea, "091629999999"},
		{ActionRefused, ErrNotEntitled, "area-responsibility"}, {ActionRefused, ErrNotEntitled, "own-offerings"}, {ActionRefused, ErrNotEntitled, "no offering"}}
	if len(p.Entries) != len(want) {
		t.Fatalf("%d entries, want %d", len(p.Entries), len(want))
	}
	for i, w := range want {
		e := p.Entries[i]
		if e.Action != w.act || (w.err != nil && (!errors.Is(e.Reason, w.err) || !strings.Contains(e.Reason.Error(), w.msg))) {
			t.Errorf("entry %d (%s): %s %v; want %s %v %q", i, e.ID, e.Action, e.Reason, w.act, w.err, w.msg)
		}
	}
	// An authorisation by Unterhaching covers d.
	reg.auths = []*registryv1.Authorisation{{Id: "a1", GrantorId: "091840148148", GranteeId: muc, Areas: []string{"091840148148"}}}
	p, _ = MakePlan(context.Background(), reg, muc, recs[3:4], PlanOptions{})
	if p.Entries[0].Action != ActionNew {
		t.Errorf("authorised area: %s %v", p.Entries[0].Action, p.Entries[0].Reason)
	}
}

// applyingPublisher applies put_offering and delete_offering to the fake
// registry (checking preconditions) and fails every call after failAfter
// calls (0: never).
type applyingPublisher struct {
	reg       *fakeRegistry
	seen      map[string]bool
	calls     int
	failAfter int
	commands  int
}

func (a *applyingPublisher) Publish(_ context.Context, signed []string) (*registryv1.PublishResponse, error) {
	a.calls++
	if a.failAfter > 0 && a.calls > a.failAfter {
		return nil, errors.New("connection reset by peer")
	}
	res := &registryv1.PublishResponse{}
	for _, s := range signed {
		cmd := parseUnverified(s)
		a.commands++
		if a.seen[cmd.GetId()] {
			res.Results = append(res.Results, &registryv1.CommandResult{CommandId: cmd.GetId(), Duplicate: true, Index: 1})
			continue
		}
		a.seen[cmd.GetId()] = true
		m := cmd.GetMutations()[0]
		a.reg.rev++
		switch op := m.GetOp().(type) {
		case *registryv1.Mutation_PutOffering:
			n := proto.Clone(op.PutOffering).(*registryv1.Offering)
			n.Revision = a.reg.rev
			a.reg.offerings[n.GetId()] = n
		case *registryv1.Mutation_DeleteOffering:
			delete(a.reg.offerings, op.DeleteOffering)
		}
		res.Results = append(res.Results, &registryv1.CommandResult{CommandId: cmd.GetId(), Index: a.reg.rev})
	}
	return res, nil
}

// TestApplyInterruptedResumes: an import cut off after its first Publish
// call leaves only whole changes behind; running the same import again
// sends only what is missing, and ends with every record once.
func TestApplyInterruptedResumes(t *testing.T) {
	reg := newFakeRegistry()
	var recs []Record
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		recs = append(recs, Record{Source: id, Offering: &registryv1.Offering{Id: muc + ":" + id, OrganisationId: muc, LeikaKey: "99050012104000", Areas: []string{muc}, Name: id}})
	}
	key := testKey(t)
	pub := &applyingPublisher{reg: reg, seen: map[string]bool{}, failAfter: 1}
	p, err := MakePlan(context.Background(), reg, muc, recs, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := p.Apply(context.Background(), pub, ApplyOptions{Issuer: muc, Key: key, PerRequest: 2})
	if err == nil || rep.Applied != 2 || rep.NotSent != 3 {
		t.Fatalf("interrupted apply: %+v, %v; want 2 applied, 3 not sent and the error", rep, err)
	}
	if len(reg.offerings) != 2 {
		t.Fatalf("%d offerings after the interruption, want 2", len(reg.offerings))
	}
	pub.failAfter = 0
	p, _ = MakePlan(context.Background(), reg, muc, recs, PlanOptions{})
	if p.Count(ActionUnchanged) != 2 || p.Count(ActionNew) != 3 {
		t.Errorf("re-run plan: %d unchanged, %d new", p.Count(ActionUnchanged), p.Count(ActionNew))
	}
	before := pub.commands
	rep, err = p.Apply(context.Background(), pub, ApplyOptions{Issuer: muc, Key: key, PerRequest: 2})
	if err != nil || rep.Applied != 3 || pub.commands-before != 3 {
		t.Fatalf("resumed apply: %+v, %v, %d commands sent", rep, err, pub.commands-before)
	}
	if len(reg.offerings) != 5 {
		t.Errorf("%d offerings, want 5", len(reg.offerings))
	}
	// The same change of the same revision has the same command id: a
	// retried call is answered as a duplicate.
	p, _ = MakePlan(context.Background(), reg, muc, recs, PlanOptions{Delete: []string{muc + ":a"}})
	id1, _ := CommandID(muc, p.Index, p.Entries[len(p.Entries)-1].mutation)
	p2, _ := MakePlan(context.Background(), reg, muc, recs, PlanOptions{Delete: []string{muc + ":a"}})
	id2, _ := CommandID(muc, p2.Index, p2.Entries[len(p2.Entries)-1].mutation)
	if id1 != id2 || p.Entries[len(p.Entries)-1].Action != ActionRefused {
		// a is in the files: deleting it is refused, ids still stable
		t.Errorf("ids %s %s, action %s", id1, id2, p.Entries[len(p.Entries)-1].Action)
	}
}

// TestXZuFiRoundTrip: what Export writes, Parse reads back unchanged.
func TestXZuFiRoundTrip(t *testing.T) {
	recs, err := Parse(readFiles(t, "musterstadt_services_de.json", "musterstadt_locations_de.json"), ParseOptions{Org: muc})
	if err != nil {
		t.Fatal(err)
	}
	var offs []*registryv1.Offering
	svcs := map[string]*registryv1.Service{}
	for _, r := range recs {
		if r.Problem == nil {
			offs = append(offs, r.Offering)
			svcs[r.Offering.GetLeikaKey()] = r.Service
		}
	}
	doc, err := Export("test", offs, svcs)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(doc)
	back, err := Parse([]File{{Name: "export.json", Data: b}}, ParseOptions{Org: muc})
	if err != nil {
		t.Fatal(err)
	}
	got := byRef(back)
	for _, o := range offs {
		r := got[o.GetId()]
		if r.Problem != nil || !proto.Equal(r.Offering, o) {
			t.Errorf("%s: %v\n got %v\nwant %v", o.GetId(), r.Problem, r.Offering, o)
		}
	}
	if len(back) != len(offs) {
		t.Errorf("%d records back, %d exported", len(back), len(offs))
	}
}

func testKey(t *testing.T) jose.JSONWebKey {
	t.Helper()
	k, err := keys.GenerateSigning("muc-sig")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func parseUnverified(s string) *registryv1.Command {
	sc, err := registry.ParseCommand(s)
	if err != nil {
		panic(err)
	}
	return sc.Command
}

// TestParseMunichExport reads Munich's real DLDB export (../shared/data,
// beside the repository; skipped where it is not): 132 services with a
// LeiKa key become offerings, each of the 155 without one is reported.
func TestParseMunichExport(t *testing.T) {
	var dir string
	for _, d := range []string{"../../../shared/data/munich-dldb", "../../../../shared/data/munich-dldb"} {
		if _, err := os.Stat(filepath.Join(d, "services_de.json")); err == nil {
			dir = d
		}
	}
	if dir == "" {
		t.Skip("no shared/data/munich-dldb beside the repository")
	}
	var files []File
	for _, n := range []string{"services_de.json", "locations_de.json"} {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, File{Name: n, Data: b})
	}
	recs, err := Parse(files, ParseOptions{Org: muc})
	if err != nil {
		t.Fatal(err)
	}
	var ok, noLeika, other int
	withForms, withHouse := 0, 0
	for _, r := range recs {
		switch {
		case r.Problem == nil:
			ok++
			if len(r.Offering.GetForms()) > 0 {
				withForms++
			}
			for _, c := range r.Offering.GetChannels() {
				if c.GetAddress().GetHouseNumber() != "" {
					withHouse++
					break
				}
			}
		case errors.Is(r.Problem, ErrNoLeiKa):
			noLeika++
		default:
			other++
			t.Errorf("%s: %v", r.Source, r.Problem)
		}
	}
	t.Logf("Munich's export: %d offerings (%d with forms, %d with house numbers), %d services without LeiKa key reported", ok, withForms, withHouse, noLeika)
	if noLeika != 155 || ok < 132 {
		t.Errorf("%d offerings, %d without LeiKa key; want ≥ 132 and 155", ok, noLeika)
	}
}

// TestPlanCatalogueEditor: a state agency's import adds a missing
// catalogue entry before the offering that needs it; a municipality's is
// refused for the same record.
func TestPlanCatalogueEditor(t *testing.T) {
	reg := newFakeRegistry()
	reg.orgs["land-09"] = &registryv1.Organisation{Id: "land-09", StateCode: "09", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY,
		Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE}
	rec := func(org string) Record {
		return Record{Source: "x#1", Ref: org + ":neu", Offering: &registryv1.Offering{Id: org + ":neu", OrganisationId: org, LeikaKey: "99123456789012", Areas: []string{"09"}, Name: "Neu"},
			Service: &registryv1.Service{LeikaKey: "99123456789012", Name: "Neue Leistung"}}
	}
	p, err := MakePlan(context.Background(), reg, "land-09", []Record{rec("land-09")}, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Entries) != 2 || p.Entries[0].Kind != "service" || p.Entries[0].Action != ActionNew || p.Entries[1].Action != ActionNew {
		t.Fatalf("state agency's plan: %+v", p.Entries)
	}
	r := rec(muc)
	r.Offering.Areas = []string{muc}
	p, _ = MakePlan(context.Background(), reg, muc, []Record{r}, PlanOptions{})
	if len(p.Entries) != 1 || p.Entries[0].Action != ActionRefused || !strings.Contains(p.Entries[0].Reason.Error(), "rule catalogue") || len(p.Notes) != 1 {
		t.Fatalf("municipality's plan: %+v %q", p.Entries, p.Notes)
	}
}
