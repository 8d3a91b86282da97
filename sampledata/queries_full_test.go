package sampledata

import (
	"slices"
	"testing"
	"time"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// TestPlaceSearchFullData: choosing a municipality among the 11,004 by
// name or postcode, as an autocomplete types it; the p50 of the typed
// prefixes is logged (go test -v) and must stay within a few ms.
func TestPlaceSearchFullData(t *testing.T) {
	r := fullRegistry(t)
	first := func(q string) *registryv1.Organisation {
		t.Helper()
		os, _, err := r.SearchPlaces(q, registry.OrgFilter{PageSize: 10})
		if err != nil {
			t.Fatalf("SearchPlaces(%q): %v", q, err)
		}
		if len(os) == 0 {
			t.Fatalf("SearchPlaces(%q): nothing", q)
		}
		return os[0]
	}
	for q, want := range map[string]string{
		"Augsburg": "097610000000", "augsburg": "097610000000",
		"München": MunichARS, "muenchen": MunichARS, "Munchen": MunichARS, "MÜNCHEN": MunichARS,
		"Frankfurt am Main": "064120000000", "frankfurt main": "064120000000",
		"Unterhaching": DelegatedARS,
		"80313":        MunichARS, // the postcode the register holds for Munich
		"86150":        "097610000000",
	} {
		if got := first(q); got.GetId() != want {
			t.Errorf("SearchPlaces(%q) first = %s %q, want %s", q, got.GetId(), got.GetName(), want)
		}
	}
	// Every word must match: "Bad T" is no "Bad Soden" without a T-word.
	os, _, err := r.SearchPlaces("bad tol", registry.OrgFilter{})
	if err != nil || len(os) != 2 || os[0].GetName() != "Bad Tölz, St" || os[1].GetName() != "Bad Tölz-Wolfratshausen" {
		t.Fatalf("bad tol: %v, %v", ids(os), err)
	}
	// Municipalities only (the citizen portal's filter).
	os, _, err = r.SearchPlaces("Augsburg", registry.OrgFilter{Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY})
	if err != nil || slices.Contains(ids(os), "097720000000") {
		t.Fatalf("municipalities named Augsburg: %v, %v", ids(os), err)
	}

	var queries []string
	for _, word := range []string{"Augsburg", "München", "Neustadt", "Bad Tölz", "Frankfurt", "Zwiesel", "80331"} {
		for i := 1; i <= len([]rune(word)); i++ {
			queries = append(queries, string([]rune(word)[:i]))
		}
	}
	d := p50(3*len(queries), func() func() {
		i := 0
		return func() {
			q := queries[i%len(queries)]
			i++
			if _, _, err := r.SearchPlaces(q, registry.OrgFilter{PageSize: 10, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY}); err != nil && q != " " {
				t.Fatalf("SearchPlaces(%q): %v", q, err)
			}
		}
	}())
	t.Logf("place search p50 over %d autocomplete prefixes: %v", len(queries), d)
	if d > 25*time.Millisecond {
		t.Errorf("place search p50 %v, want a few ms", d)
	}
}

// TestSearchFullData: the catalogue search on Munich's services plus the
// additions, as the README and the web pages use it.
func TestSearchFullData(t *testing.T) {
	r := fullRegistry(t)
	keys := func(text, life string) []string {
		t.Helper()
		res, err := r.Search(text, life, 50)
		if err != nil {
			t.Fatalf("Search(%q, %q): %v", text, life, err)
		}
		var out []string
		for _, h := range res.Hits {
			out = append(out, h.Service.GetLeikaKey())
		}
		return out
	}
	kfz := keys("Kfz zulassen", "")
	if len(kfz) == 0 || slices.Contains(kfz, "99115005070000") || slices.Contains(kfz, "99114028000000") {
		t.Errorf("Kfz zulassen: %v (must not hold Wohnsitz abmelden or Auskunft zur Rente)", kfz)
	}
	if got := keys("hund", ""); len(got) == 0 || got[0] != HundesteuerLeiKa {
		t.Errorf("hund: %v", got)
	}
	for _, ls := range []string{"Hund", "hund"} {
		if got := keys("", ls); !slices.Contains(got, HundesteuerLeiKa) {
			t.Errorf("life situation %q: %v", ls, got)
		}
	}
	if got := keys("Gewerbe anmelden", ""); len(got) == 0 || got[0] != "99050012104000" {
		t.Errorf("Gewerbe anmelden: %v", got)
	}
	if got := keys("", "Unternehmensgründung"); !slices.Contains(got, "99050012104000") {
		t.Errorf("life situation Unternehmensgründung: %v", got)
	}
	res, err := r.Search("", "Hochzeit", 20)
	if err != nil || len(res.Hits) != 0 || len(res.ValidLifeSituations) < 10 {
		t.Errorf("unknown life situation: %d hits, valid %v, %v", len(res.Hits), res.ValidLifeSituations, err)
	}
	// Hits that share a name are told apart.
	res, err = r.Search("Fahrzeug Ausland", "", 50)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string][]string{}
	for _, h := range res.Hits {
		byName[h.Service.GetName()] = append(byName[h.Service.GetName()], h.Distinction)
	}
	shared := 0
	for name, ds := range byName {
		if len(ds) < 2 {
			continue
		}
		shared++
		slices.Sort(ds)
		if ds[0] == "" || len(slices.Compact(ds)) != len(ds) {
			t.Errorf("%q: distinctions %q", name, ds)
		}
	}
	if shared == 0 {
		t.Errorf("no shared names in %v", byName)
	}
}

// TestCoverageFullData: every Bavarian municipality with its best
// provider; the p50 is logged (go test -v), the web page's target is 150 ms.
func TestCoverageFullData(t *testing.T) {
	r := fullRegistry(t)
	c, err := r.Coverage("99050012104000", "09")
	if err != nil {
		t.Fatal(err)
	}
	// 2,230 entries of the register in Bayern, 174 of them uninhabited
	// unincorporated areas.
	if len(c.Rows) != 2056 || c.Covered < 1 {
		t.Fatalf("Bayern: %d municipalities, %d covered", len(c.Rows), c.Covered)
	}
	for _, row := range c.Rows {
		if row.Municipality.GetId() == MunichARS && (row.Best == nil || row.Best.GetMatch() != registryv1.MatchKind_MATCH_KIND_OWN_MUNICIPALITY) {
			t.Errorf("Munich: %v", row.Best)
		}
	}
	d, err := r.Coverage(DelegatedLeiKa, "09")
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range d.Rows {
		if row.Municipality.GetId() == DelegatedARS && (row.Best == nil || row.Best.GetOrganisation().GetId() != SSCID ||
			row.Best.GetMatch() != registryv1.MatchKind_MATCH_KIND_DELEGATED) {
			t.Errorf("%s: %v", DelegatedARS, row.Best)
		}
	}
	if d.Online < 1 {
		t.Errorf("no online provider for %s: %+v", DelegatedLeiKa, d.Online)
	}
	dur := p50(9, func() {
		if _, err := r.Coverage("99050012104000", "09"); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("coverage of Bayern (%d municipalities, %d covered, %d online) p50: %v", len(c.Rows), c.Covered, c.Online, dur)
	if dur > 750*time.Millisecond {
		t.Errorf("coverage p50 %v, target 150 ms", dur)
	}
}

// TestDefaultNextStepsFullData: the default relations are in the registry
// and every service they name is in the catalogue.
func TestDefaultNextStepsFullData(t *testing.T) {
	r := fullRegistry(t)
	for _, n := range DefaultNextSteps() {
		got, _, err := r.ListNextSteps(n.GetTriggerLeikaKey(), n.GetLifeSituation(), MunichARS)
		if err != nil || len(got) != 1 || got[0].GetId() != n.GetId() || got[0].GetUpdatedBy() != testOperator {
			t.Errorf("%s: %v, %v", n.GetId(), got, err)
		}
		for _, k := range append([]string{n.GetTriggerLeikaKey()}, n.GetNextLeikaKeys()...) {
			if _, _, err := r.Service(k); err != nil {
				t.Errorf("%s: %s: %v", n.GetId(), k, err)
			}
		}
	}
	got, _, err := r.ListNextSteps("99050012104000", "Unternehmensgründung", "")
	if err != nil || len(got) != 1 {
		t.Fatalf("after Gewerbe-Anmeldung: %v, %v", got, err)
	}
}
