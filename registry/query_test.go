package registry

import (
	"errors"
	"slices"
	"strings"
	"testing"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// providerWorld: every level of provider for the Gewerbe-Anmeldung of
// Musterdorf (ARS 091870126111, AGS 09187111).
type providerWorld struct {
	*world
	assoc, district, regob, blocked, online *testOrg
}

func newProviderWorld(t *testing.T) *providerWorld {
	w := &providerWorld{world: newWorld(t)}
	loc := func(lat, lon float64) *registryv1.GeoPoint { return &registryv1.GeoPoint{Lat: lat, Lon: lon} }
	// Give the SSC a location (its approver may change anything).
	ssc := w.ssc.clone()
	ssc.Location = loc(47.67, 12.18) // ≈ 20 km south
	w.mustApply(w.signed(w.state, mPutOrg(ssc)))
	w.ssc.rec = ssc
	w.state.rec.Location = loc(48.1374, 11.5755) // München
	w.mustApply(w.signed(w.op, mPutOrg(w.state.rec)))
	w.assoc = w.onboard(&registryv1.Organisation{
		Id: "091870126000", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPAL_ASSOCIATION,
		Name: "Verwaltungsgemeinschaft Musterland", StateCode: "09", Ars: "091870126000", Location: loc(47.86, 12.14),
	})
	w.district = w.onboard(&registryv1.Organisation{
		Id: "091870000000", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT,
		Name: "Landkreis Rosenheim", StateCode: "09", Ars: "091870000000", Location: loc(47.8561, 12.1289),
	})
	w.regob = w.onboard(&registryv1.Organisation{
		Id: "by-reg-obb", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY,
		Name: "Regierung von Oberbayern", StateCode: "09", Location: loc(48.14, 11.58),
	})
	w.blocked = w.onboard(&registryv1.Organisation{
		Id: "ssc-gesperrt", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE,
		Name: "Gesperrtes Servicezentrum", StateCode: "09",
	})
	w.addOffering(w.muni, leikaGewerbe, arsMuni)
	w.addOffering(w.muni2, leikaGewerbe, arsMuni2)
	w.addOffering(w.ssc, leikaGewerbe, arsMuni, arsMuni2)
	w.addOffering(w.assoc, leikaGewerbe, "091870126")
	w.addOffering(w.district, leikaGewerbe, "09187")
	w.addOffering(w.regob, leikaGewerbe, "091")
	w.addOffering(w.state, leikaGewerbe, "09")
	w.addOffering(w.blocked, leikaGewerbe, arsMuni)
	// An offering elsewhere in Bayern and one of another state.
	muc := offering("by-lfst", leikaGewerbe, "09162")
	muc.Id += ":muc"
	w.mustApply(w.signed(w.state, mPutOffering(muc)))
	w.mustApply(w.signed(w.state, mChangeStatus(w.blocked.id(), registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED, "gesperrt", "")))
	return w
}

func TestFindProvidersRanking(t *testing.T) {
	w := newProviderWorld(t)
	type want struct {
		org   string
		match registryv1.MatchKind
		area  string
	}
	ranking := []want{
		{arsMuni, registryv1.MatchKind_MATCH_KIND_OWN_MUNICIPALITY, arsMuni},
		{"ssc-inntal", registryv1.MatchKind_MATCH_KIND_DELEGATED, arsMuni},
		{"091870126000", registryv1.MatchKind_MATCH_KIND_DELEGATED, "091870126"},
		{"091870000000", registryv1.MatchKind_MATCH_KIND_DISTRICT, "09187"},
		{"by-reg-obb", registryv1.MatchKind_MATCH_KIND_STATE, "091"},
		{"by-lfst", registryv1.MatchKind_MATCH_KIND_STATE, "09"},
	}
	tests := []struct {
		name     string
		area     string
		limit    int
		want     []want
		wantHome string
	}{
		{name: "by ARS", area: arsMuni, want: ranking, wantHome: arsMuni},
		{name: "by AGS", area: "09187111", want: ranking, wantHome: arsMuni},
		{name: "limited", area: arsMuni, limit: 2, want: ranking[:2], wantHome: arsMuni},
		{
			name: "neighbour municipality", area: arsMuni2, wantHome: arsMuni2,
			want: append([]want{
				{arsMuni2, registryv1.MatchKind_MATCH_KIND_OWN_MUNICIPALITY, arsMuni2},
				{"ssc-inntal", registryv1.MatchKind_MATCH_KIND_DELEGATED, arsMuni2},
			}, ranking[2:]...),
		},
		{name: "unregistered municipality in the association", area: "091870126999", want: ranking[2:]},
		{
			name: "other district", area: "091620000000",
			// Matches are classified by level: a state agency serving a
			// district is a district-level provider.
			want: []want{
				{"by-lfst", registryv1.MatchKind_MATCH_KIND_DISTRICT, "09162"},
				{"by-reg-obb", registryv1.MatchKind_MATCH_KIND_STATE, "091"},
				{"by-lfst", registryv1.MatchKind_MATCH_KIND_STATE, "09"},
			},
		},
		{name: "other state", area: "055150000000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := w.r.FindProviders(leikaGewerbe, tc.area, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if p.ReadFrom != w.fsm.AppliedIndex() || p.Service.GetLeikaKey() != leikaGewerbe {
				t.Fatalf("read from %d (applied %d), service %v", p.ReadFrom, w.fsm.AppliedIndex(), p.Service)
			}
			if p.Area.GetId() != tc.wantHome {
				t.Fatalf("area organisation %q, want %q", p.Area.GetId(), tc.wantHome)
			}
			if len(tc.area) == 12 && p.AreaARS != tc.area || len(tc.area) == 8 && p.AreaARS != arsMuni {
				t.Fatalf("area ARS %q", p.AreaARS)
			}
			var got []want
			for i, m := range p.Matches {
				got = append(got, want{m.GetOrganisation().GetId(), m.GetMatch(), m.GetMatchedArea()})
				if m.GetRank() != uint32(i+1) {
					t.Errorf("match %d has rank %d", i, m.GetRank())
				}
				if m.GetOffering().GetOrganisationId() != m.GetOrganisation().GetId() {
					t.Errorf("offering %s with organisation %s", m.GetOffering().GetId(), m.GetOrganisation().GetId())
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("providers:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestFindProvidersDistance(t *testing.T) {
	w := newProviderWorld(t)
	p, err := w.r.FindProviders(leikaGewerbe, arsMuni, 100)
	if err != nil {
		t.Fatal(err)
	}
	dist := map[string]float64{}
	for _, m := range p.Matches {
		dist[m.GetOrganisation().GetId()] = m.GetDistanceKm()
	}
	tests := []struct {
		name   string
		org    string
		lo, hi float64
	}{
		{name: "own municipality", org: arsMuni, lo: 0, hi: 0},
		{name: "district seat", org: "091870000000", lo: 0.5, hi: 1.5},
		{name: "association", org: "091870126000", lo: 1.5, hi: 2.5},
		{name: "shared service centre", org: "ssc-inntal", lo: 19, hi: 21},
		{name: "state agency in München", org: "by-lfst", lo: 48, hi: 56},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := dist[tc.org]
			if !ok {
				t.Fatalf("%s not among the providers", tc.org)
			}
			if d < tc.lo || d > tc.hi {
				t.Fatalf("distance %.1f km, want %.1f..%.1f", d, tc.lo, tc.hi)
			}
		})
	}
}

// TestFindProvidersTiebreak: within a level and area length, a 24/7 online
// channel wins, then the shorter distance, then the offering id.
func TestFindProvidersTiebreak(t *testing.T) {
	w := newWorld(t)
	mk := func(id string, lat float64) *testOrg {
		return w.onboard(&registryv1.Organisation{
			Id: id, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: id,
			Location: &registryv1.GeoPoint{Lat: lat, Lon: 12.12},
		})
	}
	far, near, online, twin := mk("ssc-fern", 48.5), mk("ssc-nah", 47.9), mk("ssc-online", 49.5), mk("ssc-zwilling", 47.9)
	for _, o := range []*testOrg{far, near, twin} {
		w.addOffering(o, leikaGewerbe, arsMuni)
	}
	w.authorise(w.muni, online, arsMuni)
	off := offering(online.id(), leikaGewerbe, arsMuni)
	off.Channels = []*registryv1.Channel{{Kind: registryv1.ChannelKind_CHANNEL_KIND_ONLINE, Url: "https://online.example/gewerbe", Available_24_7: true}}
	w.mustApply(w.signed(online, mPutOffering(off)))
	ids := providerIDs(t, w.r, leikaGewerbe, arsMuni)
	want := []string{"ssc-online:" + leikaGewerbe, "ssc-nah:" + leikaGewerbe, "ssc-zwilling:" + leikaGewerbe, "ssc-fern:" + leikaGewerbe}
	if !slices.Equal(ids, want) {
		t.Fatalf("order %v, want %v", ids, want)
	}
}

func TestFindProvidersErrors(t *testing.T) {
	w := newProviderWorld(t)
	// An organisation with an AGS but a slug id, and one with neither an
	// ARS id nor an ARS.
	w.onboard(&registryv1.Organisation{
		Id: "ssc-mit-ags", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: "Mit AGS",
		Ags: "09187333", Ars: "091870126333",
	})
	w.onboard(&registryv1.Organisation{
		Id: "ssc-ohne-ars", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: "Ohne ARS",
		Ags: "09187444",
	})
	tests := []struct {
		name  string
		leika string
		area  string
		limit int
		want  error
	}{
		{name: "invalid LeiKa", leika: "12345", area: arsMuni, want: ErrInvalidArgument},
		{name: "LeiKa not starting with 99", leika: "11050012104000", area: arsMuni, want: ErrInvalidArgument},
		{name: "area of 9 digits", leika: leikaGewerbe, area: "091870126", want: ErrInvalidArgument},
		{name: "area of 5 digits", leika: leikaGewerbe, area: "09187", want: ErrInvalidArgument},
		{name: "area with letters", leika: leikaGewerbe, area: "09187011a111", want: ErrInvalidArgument},
		{name: "empty area", leika: leikaGewerbe, area: "", want: ErrInvalidArgument},
		{name: "limit too large", leika: leikaGewerbe, area: arsMuni, limit: 101, want: ErrInvalidArgument},
		{name: "unknown service", leika: leikaUnknown, area: arsMuni, want: ErrNotFound},
		{name: "unknown AGS", leika: leikaGewerbe, area: "09187999", want: ErrNotFound},
		{name: "AGS of an organisation with a slug id", leika: leikaGewerbe, area: "09187333"},
		{name: "AGS of an organisation without ARS", leika: leikaGewerbe, area: "09187444", want: ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := w.r.FindProviders(tc.leika, tc.area, tc.limit)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if p.AreaARS != "091870126333" || len(p.Matches) == 0 || p.Matches[0].GetOrganisation().GetId() != "091870126000" {
					t.Fatalf("resolved to %q with %d matches", p.AreaARS, len(p.Matches))
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// searchWorld holds a small catalogue.
func newSearchWorld(t *testing.T) *world {
	w := newWorld(t)
	w.addService(service(leikaUmmelden, "Wohnsitz ummelden", []string{"Ummeldung"}, []string{"Umzug"}))
	w.addService(service(leikaNachsende, "Nachsendeauftrag", []string{"Umzug", "Post"}, nil))
	w.addService(service(leikaHund, "Hund anmelden", []string{"Hundesteuer"}, []string{"Hund"}))
	w.addService(&registryv1.Service{
		LeikaKey: leikaFuehrer, Name: "Führerschein beantragen", Keywords: []string{"Fahrerlaubnis"},
		LifeSituations: []string{"Mobilität"}, Description: "Die Fahrerlaubnis wird bei der Führerscheinstelle beantragt.",
	})
	return w
}

func TestSearchServices(t *testing.T) {
	w := newSearchWorld(t)
	tests := []struct {
		name  string
		text  string
		life  string
		limit int
		// want is the exact result; contains only requires these hits.
		want     []string
		contains []string
		wantErr  error
	}{
		{name: "anmelden finds Gewerbe-Anmeldung", text: "anmelden", contains: []string{leikaGewerbe, leikaHund}},
		{name: "several words narrow the result (every word must match)", text: "Gewerbe anmelden", want: []string{leikaGewerbe}},
		{name: "hyphenated and closed spelling", text: "Gewerbeanmeldung", want: []string{leikaGewerbe}},
		{name: "umzug by keyword and life situation", text: "umzug", want: []string{leikaNachsende, leikaUmmelden}},
		{name: "life situation filter", life: "Umzug", want: []string{leikaUmmelden}},
		{name: "life situation filter, folded", life: "UMZUG", want: []string{leikaUmmelden}},
		{name: "text and life situation", text: "umzug", life: "umzug", want: []string{leikaUmmelden}},
		{name: "text outside the life situation", text: "hund", life: "Umzug", want: nil},
		{name: "umlaut transliterated", text: "fuehrerschein", want: []string{leikaFuehrer}},
		{name: "umlaut", text: "FÜHRERSCHEIN", want: []string{leikaFuehrer}},
		{name: "umlaut dropped", text: "fuhrerschein", want: []string{leikaFuehrer}},
		{name: "prefix of a compound", text: "hund", want: []string{leikaHund}},
		{name: "description", text: "Führerscheinstelle", want: []string{leikaFuehrer}},
		{name: "no match", text: "Baugenehmigung", want: nil},
		{name: "limit", text: "anmelden", limit: 1, want: []string{leikaGewerbe}},
		{name: "empty query", wantErr: ErrInvalidArgument},
		{name: "only stop words", text: "der die und", wantErr: ErrInvalidArgument},
		{name: "limit too large", text: "hund", limit: 201, wantErr: ErrInvalidArgument},
		{name: "text too long", text: strings.Repeat("hund ", 201), wantErr: ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hits, idx, err := w.r.SearchServices(tc.text, tc.life, tc.limit)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if idx != w.fsm.AppliedIndex() {
				t.Fatalf("index %d, applied %d", idx, w.fsm.AppliedIndex())
			}
			var got []string
			for i, h := range hits {
				got = append(got, h.Service.GetLeikaKey())
				if h.Service.GetName() == "" || h.Service.GetRevision() == 0 {
					t.Errorf("hit %d is not the full record: %v", i, h.Service)
				}
				if h.Score <= 0 || i > 0 && h.Score > hits[i-1].Score {
					t.Errorf("hit %d score %v after %v", i, h.Score, hits[max(i-1, 0)].Score)
				}
			}
			if tc.contains != nil {
				for _, c := range tc.contains {
					if !slices.Contains(got, c) {
						t.Fatalf("hits %v lack %s", got, c)
					}
				}
				return
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("hits %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLifeSituations(t *testing.T) {
	w := newSearchWorld(t)
	ls, _, err := w.r.LifeSituations()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, l := range ls {
		got[l.Name] = l.Services
	}
	want := map[string]int{"Umzug": 1, "Hund": 1, "Mobilität": 1, "Unternehmensgründung": 1}
	if len(got) != len(want) {
		t.Fatalf("life situations %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("life situations %v, want %v", got, want)
		}
	}
}

// orgWorld adds municipalities with similar names in two states.
func newOrgWorld(t *testing.T) *world {
	w := newWorld(t)
	w.addMunicipality("091620000000", "München", 48.14, 11.58)
	w.addMunicipality("094750000000", "MÜNCHBERG", 50.19, 11.79)
	w.addMunicipality("055150000000", "Münster", 51.96, 7.63)
	w.addMunicipality("091830000000", "Mühldorf a. Inn", 48.25, 12.52)
	return w
}

func TestListOrganisations(t *testing.T) {
	w := newOrgWorld(t)
	municipalities := []string{"055150000000", "091620000000", "091830000000", arsMuni, arsMuni2, "094750000000"}
	tests := []struct {
		name    string
		filter  OrgFilter
		want    []string // ids, in order
		wantErr error
	}{
		{name: "all", want: []string{"055150000000", "091620000000", "091830000000", arsMuni, arsMuni2, "094750000000", "by-lfst", "land-05", "ssc-inntal", operatorID}},
		{name: "kind", filter: OrgFilter{Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY}, want: municipalities},
		{name: "state", filter: OrgFilter{StateCode: "05"}, want: []string{"055150000000", "land-05"}}, // Münster and its approver
		{name: "name prefix with umlaut", filter: OrgFilter{NamePrefix: "mün"}, want: []string{"094750000000", "091620000000", "055150000000"}},
		{name: "name prefix upper case", filter: OrgFilter{NamePrefix: "MÜN"}, want: []string{"094750000000", "091620000000", "055150000000"}},
		{name: "name prefix transliterated", filter: OrgFilter{NamePrefix: "Muenc"}, want: []string{"094750000000", "091620000000"}},
		{name: "name prefix full name", filter: OrgFilter{NamePrefix: "münchen"}, want: []string{"091620000000"}},
		{name: "name prefix and state", filter: OrgFilter{NamePrefix: "mün", StateCode: "09"}, want: []string{"094750000000", "091620000000"}},
		{name: "name prefix, nothing", filter: OrgFilter{NamePrefix: "Zwiesel"}, want: nil},
		{name: "ARS prefix", filter: OrgFilter{ARSPrefix: "0918"}, want: []string{"091830000000", arsMuni, arsMuni2, "ssc-inntal"}},
		{name: "ARS prefix and kind", filter: OrgFilter{ARSPrefix: "09187", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY}, want: []string{arsMuni, arsMuni2}},
		{name: "page size too large", filter: OrgFilter{PageSize: 1001}, wantErr: ErrInvalidArgument},
		{name: "bad state", filter: OrgFilter{StateCode: "9"}, wantErr: ErrInvalidArgument},
		{name: "bad ARS prefix", filter: OrgFilter{ARSPrefix: "09a"}, wantErr: ErrInvalidArgument},
		{name: "ARS prefix too long", filter: OrgFilter{ARSPrefix: "0918701261110"}, wantErr: ErrInvalidArgument},
		{name: "token not base64", filter: OrgFilter{PageToken: "!!!"}, wantErr: ErrInvalidArgument},
		{name: "token of another query", filter: OrgFilter{NamePrefix: "mün", PageToken: b64([]byte("o/091620000000"))}, wantErr: ErrInvalidArgument},
		{name: "token outside the organisations", filter: OrgFilter{PageToken: b64([]byte("s/" + leikaGewerbe))}, wantErr: ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orgs, next, idx, err := w.r.ListOrganisations(tc.filter)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if next != "" || idx != w.fsm.AppliedIndex() {
				t.Fatalf("next %q, index %d", next, idx)
			}
			var ids []string
			for _, o := range orgs {
				ids = append(ids, o.GetId())
			}
			if !slices.Equal(ids, tc.want) {
				t.Fatalf("ids %v, want %v", ids, tc.want)
			}
		})
	}
}

func TestListOrganisationsPaging(t *testing.T) {
	w := newOrgWorld(t)
	tests := []struct {
		name   string
		filter OrgFilter
	}{
		{name: "all, pages of 1", filter: OrgFilter{PageSize: 1}},
		{name: "all, pages of 2", filter: OrgFilter{PageSize: 2}},
		{name: "all, pages of 4", filter: OrgFilter{PageSize: 4}},
		{name: "kind, pages of 2", filter: OrgFilter{Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, PageSize: 2}},
		{name: "sparse filter, pages of 1", filter: OrgFilter{StateCode: "05", PageSize: 1}},
		{name: "name prefix, pages of 1", filter: OrgFilter{NamePrefix: "mü", PageSize: 1}},
		{name: "name prefix and ARS, pages of 2", filter: OrgFilter{NamePrefix: "m", ARSPrefix: "09", PageSize: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			all := tc.filter
			all.PageSize = 1000
			want, next, _, err := w.r.ListOrganisations(all)
			if err != nil || next != "" {
				t.Fatalf("unpaged: %v, next %q", err, next)
			}
			if len(want) == 0 {
				t.Fatal("filter matches nothing")
			}
			var got []string
			seen := map[string]bool{}
			f := tc.filter
			for pages := 0; ; pages++ {
				if pages > 50 {
					t.Fatal("paging does not end")
				}
				orgs, next, _, err := w.r.ListOrganisations(f)
				if err != nil {
					t.Fatalf("page %d: %v", pages, err)
				}
				if len(orgs) > f.PageSize {
					t.Fatalf("page of %d, size %d", len(orgs), f.PageSize)
				}
				for _, o := range orgs {
					if seen[o.GetId()] {
						t.Fatalf("%s listed twice", o.GetId())
					}
					seen[o.GetId()] = true
					got = append(got, o.GetId())
				}
				if next == "" {
					break
				}
				f.PageToken = next
			}
			var wantIDs []string
			for _, o := range want {
				wantIDs = append(wantIDs, o.GetId())
			}
			if !slices.Equal(got, wantIDs) {
				t.Fatalf("paged %v, want %v", got, wantIDs)
			}
		})
	}
}

// TestPagingAcrossWrites: a page token stays valid while organisations are
// added, and the listing neither repeats nor skips the ones it had not
// reached.
func TestPagingAcrossWrites(t *testing.T) {
	w := newOrgWorld(t)
	// The approvers of the municipalities added below (land-01 and land-16
	// sort after the token).
	w.stateAgency("01")
	w.stateAgency("16")
	page1, next, _, err := w.r.ListOrganisations(OrgFilter{PageSize: 3})
	if err != nil || next == "" {
		t.Fatalf("%v, next %q", err, next)
	}
	w.addMunicipality("010010000000", "Flensburg", 54.78, 9.43) // sorts before the token
	w.addMunicipality("160010000000", "Erfurt", 50.98, 11.03)   // sorts after it
	seen := map[string]bool{}
	for _, o := range page1 {
		seen[o.GetId()] = true
	}
	for f := (OrgFilter{PageSize: 3, PageToken: next}); ; {
		orgs, next, _, err := w.r.ListOrganisations(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range orgs {
			if seen[o.GetId()] {
				t.Fatalf("%s listed twice", o.GetId())
			}
			seen[o.GetId()] = true
		}
		if next == "" {
			break
		}
		f.PageToken = next
	}
	if !seen["160010000000"] || seen["010010000000"] || len(seen) != 13 {
		t.Fatalf("listed %v", seen)
	}
}

func TestGetters(t *testing.T) {
	w := newWorld(t)
	w.addOffering(w.muni, leikaGewerbe, arsMuni)
	tests := []struct {
		name string
		get  func() error
		want error
	}{
		{name: "organisation", get: func() error { _, _, err := w.r.Organisation(arsMuni); return err }},
		{name: "organisation, bad id", get: func() error { _, _, err := w.r.Organisation("A"); return err }, want: ErrInvalidArgument},
		{name: "organisation, unknown", get: func() error { _, _, err := w.r.Organisation("ssc-nirgends"); return err }, want: ErrNotFound},
		{name: "service", get: func() error { _, _, err := w.r.Service(leikaGewerbe); return err }},
		{name: "service, bad key", get: func() error { _, _, err := w.r.Service("99"); return err }, want: ErrInvalidArgument},
		{name: "service, unknown", get: func() error { _, _, err := w.r.Service(leikaUnknown); return err }, want: ErrNotFound},
		{name: "offering", get: func() error { _, _, err := w.r.Offering(arsMuni + ":" + leikaGewerbe); return err }},
		{name: "offering, bad id", get: func() error { _, _, err := w.r.Offering("/x"); return err }, want: ErrInvalidArgument},
		{name: "offering, unknown", get: func() error { _, _, err := w.r.Offering("nix:da"); return err }, want: ErrNotFound},
		{name: "audit head, unknown", get: func() error { _, _, err := w.r.AuditHead(arsMuni); return err }, want: ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.get()
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

func TestErrorCodes(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code string
	}{
		{name: "nil", err: nil, code: ""},
		{name: "invalid", err: invalid("x"), code: CodeInvalidArgument},
		{name: "wrapped not found", err: errors.Join(errors.New("ctx"), ErrNotFound), code: CodeNotFound},
		{name: "stale", err: ErrStale, code: CodeStale},
		{name: "other", err: errors.New("boom"), code: CodeInternal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ErrorCode(tc.err); got != tc.code {
				t.Fatalf("code %q, want %q", got, tc.code)
			}
			back := ErrorFromCode(tc.code, "msg")
			if tc.code == "" {
				if back != nil {
					t.Fatalf("ErrorFromCode(\"\") = %v", back)
				}
				return
			}
			if tc.code != CodeInternal && ErrorCode(back) != tc.code {
				t.Fatalf("round trip: %q -> %v", tc.code, back)
			}
		})
	}
}
