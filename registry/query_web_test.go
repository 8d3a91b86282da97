package registry

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// The queries behind the web pages (issue 10) on small fixtures; the
// sampledata package runs them on the full sample data.

func placeWorld(t *testing.T) *world {
	t.Helper()
	w := newWorld(t)
	add := func(id string, kind registryv1.OrganisationKind, name, postcode string, pop int64) {
		rec := &registryv1.Organisation{Id: id, Kind: kind, Name: name, StateCode: id[:2], Ars: id, PostalCode: postcode, Population: pop,
			Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED}
		if kind == kindMunicipality {
			rec.Ags = id[:5] + id[9:]
		}
		w.onboard(rec)
	}
	add("091620000000", kindMunicipality, "München, Landeshauptstadt", "80313", 1484226)
	add("091840000000", kindDistrict, "München", "", 350473)
	add("091840119119", kindMunicipality, "Garching b.München, St", "85748", 17760)
	add("097610000000", kindMunicipality, "Augsburg", "86150", 296582)
	add("097720000000", kindDistrict, "Augsburg", "", 253468)
	add("097720125125", kindMunicipality, "Gersthofen, St", "86368", 22000)
	add("091730112112", kindMunicipality, "Bad Tölz, St", "83646", 19155)
	add("064360001001", kindMunicipality, "Bad Soden am Taunus, Stadt", "65812", 22855)
	add("081110000000", kindMunicipality, "Stuttgart, Landeshauptstadt", "70173", 635911)
	// Below level 2 there is no place index; the entry that raises the
	// level builds it for the organisations stored so far.
	if _, _, err := w.r.SearchPlaces("Augsburg", OrgFilter{}); !errors.Is(err, ErrFeatureLevel) {
		t.Fatalf("place search at level 1: %v, want ErrFeatureLevel", err)
	}
	if n := len(keysWithPrefix(dumpState(t, w.db), pPlaceWord)); n != 0 {
		t.Fatalf("%d place index keys at level 1", n)
	}
	w.applyLog(raiseLog(t, w.harness, PlaceIndexLevel))
	return w
}

func TestSearchPlaces(t *testing.T) {
	w := placeWorld(t)
	tests := []struct {
		name, query string
		filter      OrgFilter
		want        []string // the first ids, in order
		exactly     bool
		wantErr     error
	}{
		{name: "exact name, municipality before district", query: "Augsburg", want: []string{"097610000000", "097720000000"}, exactly: true},
		{name: "umlaut", query: "München", want: []string{"091620000000", "091840000000", "091840119119"}, exactly: true},
		{name: "transliterated", query: "muenchen", want: []string{"091620000000", "091840000000", "091840119119"}, exactly: true},
		{name: "plain", query: "MUNCHEN", want: []string{"091620000000", "091840000000", "091840119119"}, exactly: true},
		{name: "prefix: municipalities first", query: "münch", want: []string{"091620000000", "091840119119", "091840000000"}, exactly: true},
		{name: "every word must match", query: "bad t", want: []string{"064360001001", "091730112112"}, exactly: true},
		{name: "word order free", query: "tolz bad", want: []string{"091730112112"}, exactly: true},
		{name: "a word must start a name word", query: "unchen", want: nil, exactly: true},
		{name: "population ranks prefix matches", query: "g", want: []string{"097720125125", "091840119119"}, exactly: true},
		{name: "postcode prefix", query: "80", want: []string{"091620000000"}, exactly: true},
		{name: "postcode prefix ranks by population", query: "8", want: []string{"091620000000", "097610000000", "097720125125", "091730112112", "091840119119"}, exactly: true},
		{name: "kind filter", query: "augsburg", filter: OrgFilter{Kind: kindDistrict}, want: []string{"097720000000"}, exactly: true},
		{name: "state filter", query: "landeshauptstadt", filter: OrgFilter{StateCode: "08"}, want: []string{"081110000000"}, exactly: true},
		{name: "ARS prefix filter", query: "m", filter: OrgFilter{ARSPrefix: "09184"}, want: []string{"091840119119", "091840000000"}, exactly: true},
		{name: "page size", query: "m", filter: OrgFilter{PageSize: 1}, want: []string{"091620000000"}, exactly: true},
		{name: "no letters", query: " ,; ", wantErr: ErrInvalidArgument},
		{name: "too long", query: strings.Repeat("a", 301), wantErr: ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, idx, err := w.r.SearchPlaces(tc.query, tc.filter)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || idx != w.fsm.AppliedIndex() {
				t.Fatalf("SearchPlaces: %v (index %d)", err, idx)
			}
			var ids []string
			for _, o := range got {
				ids = append(ids, o.GetId())
			}
			if tc.exactly && !slices.Equal(ids, tc.want) || !tc.exactly && (len(ids) < len(tc.want) || !slices.Equal(ids[:len(tc.want)], tc.want)) {
				t.Fatalf("got %v, want %v", ids, tc.want)
			}
		})
	}
}

// TestSearchPlacesFollowsChanges: a rename and a new postcode move the
// index entries (the old ones are gone).
func TestSearchPlacesFollowsChanges(t *testing.T) {
	w := placeWorld(t)
	rec := getOrg(t, w.r, "097720125125")
	rec = proto.Clone(rec).(*registryv1.Organisation)
	rec.Name, rec.PostalCode = "Neusäß, St", "86356"
	w.mustApply(w.signed(w.stateAgency("09"), mPutOrg(rec)))
	w.onboard(&registryv1.Organisation{Id: "097720130130", Kind: kindMunicipality, Name: "Gessertshausen", StateCode: "09", Ars: "097720130130", Ags: "09772130", PostalCode: "86459", Population: 4200})
	for q, want := range map[string]int{"gersthofen": 0, "neusass": 1, "86368": 0, "86356": 1, "gessert": 1, "86459": 1} {
		got, _, err := w.r.SearchPlaces(q, OrgFilter{})
		if err != nil || len(got) != want {
			t.Errorf("SearchPlaces(%q) = %d results, %v; want %d", q, len(got), err, want)
		}
	}
	// Replicas that applied the same log (the backfill included) agree,
	// and so does one restored from a snapshot.
	w.fork()
	dst := newHarness(t)
	if err := dst.fsm.Restore(io.NopCloser(bytes.NewReader(takeSnapshot(t, w.fsm)))); err != nil {
		t.Fatal(err)
	}
	if got, _, err := dst.r.SearchPlaces("neusass", OrgFilter{}); err != nil || len(got) != 1 {
		t.Fatalf("after restore: %v, %v", got, err)
	}
}

func TestSearchNarrowsDistinguishesAndListsLifeSituations(t *testing.T) {
	w := newSearchWorld(t)
	// Two catalogue entries with one name (one DLDB service under several
	// LeiKa keys): told apart by their own keywords, else the key.
	w.addService(service("99036008007003", "Aus dem Ausland eingeführtes Fahrzeug anmelden", []string{"Importfahrzeug", "Wohnmobil"}, nil))
	w.addService(service("99036008007004", "Aus dem Ausland eingeführtes Fahrzeug anmelden", []string{"Importfahrzeug"}, nil))
	w.addService(service("99036008007006", "Aus dem Ausland eingeführtes Fahrzeug anmelden", []string{"Importfahrzeug"}, nil))
	w.addService(&registryv1.Service{LeikaKey: "99115005070000", Name: "Wohnsitz abmelden", Keywords: []string{"Abmeldung"},
		Description: "Melden Sie den Wechsel auch der Kfz-Zulassungsbehörde."})
	w.addService(service("99036020001000", "Kfz zulassen", []string{"Zulassung"}, nil))

	res, err := w.r.Search("Fahrzeug Ausland", "", 20)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, h := range res.Hits {
		got[h.Service.GetLeikaKey()] = h.Distinction
	}
	want := map[string]string{
		"99036008007003": "Stichworte: Wohnmobil",
		"99036008007004": "LeiKa-Schlüssel 99036008007004",
		"99036008007006": "LeiKa-Schlüssel 99036008007006",
	}
	if len(got) != len(want) {
		t.Fatalf("hits %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("distinction of %s = %q, want %q", k, got[k], v)
		}
	}
	// A unique name gets no distinction.
	if res, _ := w.r.Search("Gewerbe", "", 20); len(res.Hits) != 1 || res.Hits[0].Distinction != "" {
		t.Fatalf("Gewerbe: %+v", res.Hits)
	}
	// Several words: every one must match, and not only in the description.
	res, err = w.r.Search("Kfz zulassen", "", 20)
	if err != nil || len(res.Hits) != 1 || res.Hits[0].Service.GetLeikaKey() != "99036020001000" {
		t.Fatalf("Kfz zulassen: %+v, %v", res.Hits, err)
	}
	// One word may match the description alone.
	if res, _ := w.r.Search("Zulassungsbehörde", "", 20); len(res.Hits) != 1 || res.Hits[0].Service.GetLeikaKey() != "99115005070000" {
		t.Fatalf("Zulassungsbehörde: %+v", res.Hits)
	}
	// Life situations: case-insensitive; an unknown one lists the valid ones.
	for _, ls := range []string{"Hund", "hund", "HUND"} {
		res, err := w.r.Search("", ls, 20)
		if err != nil || len(res.Hits) != 1 || res.Hits[0].Service.GetLeikaKey() != leikaHund || res.ValidLifeSituations != nil {
			t.Fatalf("life situation %q: %+v, %v", ls, res, err)
		}
	}
	res, err = w.r.Search("anmelden", "Quatsch", 20)
	if err != nil || len(res.Hits) != 0 {
		t.Fatalf("unknown life situation: %+v, %v", res, err)
	}
	var names []string
	for _, l := range res.ValidLifeSituations {
		names = append(names, l.Name)
	}
	if !slices.Equal(names, []string{"Hund", "Mobilität", "Umzug", "Unternehmensgründung"}) {
		t.Fatalf("valid life situations %v", names)
	}
}

// TestCoverage: every municipality of the state with the provider
// FindProviders ranks first, its channels, and the counts.
func TestCoverage(t *testing.T) {
	w := newWorld(t)
	w.addMunicipality("091870126333", "Drittdorf", 47.95, 12.25)
	w.addMunicipality("081110000000", "Stuttgart", 48.78, 9.18) // another state
	// An uninhabited unincorporated area (gemeindefreies Gebiet) is left
	// out; an inhabited one stays.
	w.addMunicipality("091879101101", "Musterforst", 47.9, 12.1)
	inhabited := w.addMunicipality("091879102102", "Musterbezirk, gemfr. Bezirk", 47.9, 12.1).clone()
	inhabited.Population = 764
	w.mustApply(w.signed(w.stateAgency("09"), mPutOrg(inhabited)))
	own := w.addOffering(w.muni, leikaGewerbe, arsMuni)
	w.addOffering(w.ssc, leikaGewerbe, arsMuni, arsMuni2)
	c, err := w.r.Coverage(leikaGewerbe, "09")
	if err != nil {
		t.Fatal(err)
	}
	if c.Service.GetLeikaKey() != leikaGewerbe || c.Index != w.fsm.AppliedIndex() {
		t.Fatalf("coverage of %v at %d", c.Service, c.Index)
	}
	var rows []string
	for _, r := range c.Rows {
		s := r.Municipality.GetId() + ":"
		if r.Best != nil {
			s += r.Best.GetOffering().GetId()
			want, err := w.r.FindProviders(leikaGewerbe, r.Municipality.GetId(), 1)
			if err != nil || want.Matches[0].GetOffering().GetId() != r.Best.GetOffering().GetId() || want.Matches[0].GetMatch() != r.Best.GetMatch() {
				t.Errorf("%s: coverage %v, FindProviders %v (%v)", r.Municipality.GetId(), r.Best, want, err)
			}
		}
		rows = append(rows, s)
	}
	sscOff := w.ssc.id() + ":" + leikaGewerbe
	if want := []string{arsMuni + ":" + own.GetId(), "091870126222:" + sscOff, "091870126333:", "091879102102:"}; !slices.Equal(rows, want) {
		t.Fatalf("rows %v, want %v", rows, want)
	}
	if c.Covered != 2 || len(c.Rows) != 4 {
		t.Fatalf("covered %d of %d", c.Covered, len(c.Rows))
	}
	if _, err := w.r.Coverage(leikaGewerbe, "9"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad state: %v", err)
	}
	if _, err := w.r.Coverage(leikaUnknown, "09"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown service: %v", err)
	}
}
