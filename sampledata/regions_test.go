package sampledata

import (
	"testing"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

func mustOrgs(t testing.TB, f func() ([]*registryv1.Organisation, error)) []*registryv1.Organisation {
	t.Helper()
	os, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return os
}

// allOrgs returns every organisation the package produces, by id.
func allOrgs(t testing.TB) map[string]*registryv1.Organisation {
	t.Helper()
	byID := map[string]*registryv1.Organisation{}
	for _, f := range []func() ([]*registryv1.Organisation, error){States, Districts, Associations, Municipalities} {
		for _, o := range mustOrgs(t, f) {
			if prev := byID[o.GetId()]; prev != nil {
				t.Fatalf("id %s used by %s %q and %s %q", o.GetId(), prev.GetKind(), prev.GetName(), o.GetKind(), o.GetName())
			}
			byID[o.GetId()] = o
		}
	}
	return byID
}

func TestOrganisationsValidAndUnique(t *testing.T) {
	all := allOrgs(t)
	if got, want := len(all), 16+294+1210+11004; got != want {
		t.Fatalf("%d organisations, want %d", got, want)
	}
	for id, o := range all {
		if err := registry.ValidateOrganisation(o); err != nil {
			t.Errorf("%s: %v", id, err)
		}
		if o.GetStatus() != registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED {
			t.Errorf("%s: status %v", id, o.GetStatus())
		}
		if o.GetKind() == registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY {
			continue
		}
		p := all[o.GetParentId()]
		if p == nil {
			t.Errorf("%s: parent %q does not exist", id, o.GetParentId())
			continue
		}
		if p.GetStateCode() != o.GetStateCode() {
			t.Errorf("%s: parent %s is in state %s", id, p.GetId(), p.GetStateCode())
		}
	}
}

func TestMunicipalities(t *testing.T) {
	ms := mustOrgs(t, Municipalities)
	if len(ms) != 11004 {
		t.Fatalf("%d municipalities, want 11004", len(ms))
	}
	var noLoc []string
	var pop int64
	byID := map[string]*registryv1.Organisation{}
	for _, m := range ms {
		byID[m.GetId()] = m
		pop += m.GetPopulation()
		if m.GetKind() != registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY || m.GetArs() != m.GetId() ||
			m.GetAgs() != m.GetArs()[:5]+m.GetArs()[9:] || m.GetStateCode() != m.GetArs()[:2] {
			t.Errorf("%s: inconsistent keys %v", m.GetId(), m)
		}
		if m.GetLocation() == nil {
			noLoc = append(noLoc, m.GetId())
		}
	}
	// Two rows have no coordinates, one (the German-Luxembourg condominium
	// on the Moselle) has 0/0.
	if want := []string{"070009999999", "100429999999", "130009999999"}; !equalStrings(noLoc, want) {
		t.Errorf("without location: %v, want %v", noLoc, want)
	}
	if pop < 83_000_000 || pop > 83_300_000 {
		t.Errorf("population %d, want Germany's 83.1 million (2019)", pop)
	}
	m := byID[MunichARS]
	if m == nil {
		t.Fatal("no Munich")
	}
	if m.GetName() != "München, Landeshauptstadt" || m.GetAgs() != "09162000" || m.GetParentId() != "land-09" ||
		m.GetPopulation() != 1484226 || m.GetPostalCode() != "80313" || m.GetLocation().GetLat() < 48.1 || m.GetLocation().GetLat() > 48.2 {
		t.Errorf("Munich: %v", m)
	}
	// A municipality in a Landkreis has its district as parent.
	if g := byID["091840137137"]; g == nil || g.GetParentId() != "091840000000" {
		t.Errorf("Unterhaching: %v", g)
	}
}

func TestDistricts(t *testing.T) {
	ds := mustOrgs(t, Districts)
	if len(ds) != 294 {
		t.Fatalf("%d districts, want 294", len(ds))
	}
	rows, err := loadGemeinden()
	if err != nil {
		t.Fatal(err)
	}
	// The register has 401 Kreise and kreisfreie Städte; the 107 others are
	// cities whose district id is their own ARS, each alone in its Kreis.
	members := map[string][]gemeinde{}
	named := map[string]bool{}
	for _, g := range rows {
		members[g.kreisAGS] = append(members[g.kreisAGS], g)
		if g.kreis != "" {
			named[g.kreisAGS] = true
		}
	}
	if len(named) != 401 {
		t.Errorf("%d named Kreise in the data, want 401", len(named))
	}
	isDistrict := map[string]bool{}
	for _, d := range ds {
		isDistrict[d.GetId()[:5]] = true
		if d.GetKind() != registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT || d.GetArs() != d.GetId() || d.GetParentId() != StateID(d.GetStateCode()) {
			t.Errorf("%s: %v", d.GetId(), d)
		}
		var pop int64
		minLat, maxLat, minLon, maxLon := 90.0, -90.0, 180.0, -180.0
		for _, g := range members[d.GetId()[:5]] {
			pop += g.population
			if g.hasLocation {
				minLat, maxLat = min(minLat, g.lat), max(maxLat, g.lat)
				minLon, maxLon = min(minLon, g.lon), max(maxLon, g.lon)
			}
		}
		if pop != d.GetPopulation() {
			t.Errorf("%s: population %d, members sum to %d", d.GetId(), d.GetPopulation(), pop)
		}
		l := d.GetLocation()
		if l == nil || l.GetLat() < minLat || l.GetLat() > maxLat || l.GetLon() < minLon || l.GetLon() > maxLon {
			t.Errorf("%s: centroid %v outside its municipalities", d.GetId(), l)
		}
	}
	kreisfrei := 0
	for k := range named {
		if isDistrict[k] {
			continue
		}
		kreisfrei++
		if len(members[k]) != 1 || members[k][0].ars != k+"0000000" {
			t.Errorf("Kreis %s is not a district but has members %v", k, members[k])
		}
	}
	if kreisfrei != 107 {
		t.Errorf("%d kreisfreie Städte, want 107", kreisfrei)
	}
	if d := ds[0]; d.GetId() != "010510000000" || d.GetName() != "Dithmarschen" {
		t.Errorf("first district %v", d)
	}
}

func TestAssociations(t *testing.T) {
	as := mustOrgs(t, Associations)
	if len(as) != 1210 {
		t.Fatalf("%d associations, want 1210", len(as))
	}
	rows, err := loadGemeinden()
	if err != nil {
		t.Fatal(err)
	}
	// Members of a verband share the first 9 ARS digits: every 9-digit
	// prefix maps to one verband name and one Kreis.
	name := map[string]string{}
	count := map[string]int{}
	for _, g := range rows {
		p := g.ars[:9]
		if n, ok := name[p]; ok && n != g.verband {
			t.Errorf("prefix %s: verband %q and %q", p, n, g.verband)
		}
		name[p] = g.verband
		count[p]++
	}
	// The converse fails three times: an unincorporated area (ARS digits
	// 6-9 "94xx") shares its name with the municipality next to it.
	byName := map[[2]string]map[string]bool{}
	for _, g := range rows {
		k := [2]string{g.kreisAGS, g.verband}
		if byName[k] == nil {
			byName[k] = map[string]bool{}
		}
		byName[k][g.ars[:9]] = true
	}
	var clash []string
	for k, ps := range byName {
		if len(ps) > 1 {
			clash = append(clash, k[0]+" "+k[1])
			for p := range ps {
				if count[p] != 1 {
					t.Errorf("verband %v: prefix %s has %d members", k, p, count[p])
				}
			}
		}
	}
	if len(clash) != 3 {
		t.Errorf("verband names on several prefixes: %v, want Fichtelberg, Leinburg, Winkelhaid", clash)
	}
	districts := map[string]bool{}
	for _, d := range mustOrgs(t, Districts) {
		districts[d.GetId()] = true
	}
	for _, a := range as {
		p := a.GetId()[:9]
		if a.GetKind() != registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPAL_ASSOCIATION || a.GetArs() != a.GetId() ||
			a.GetId()[9:] != "000" || count[p] < 2 || a.GetName() != name[p] {
			t.Errorf("%s: %v", a.GetId(), a)
		}
		if !districts[a.GetParentId()] || a.GetParentId()[:5] != p[:5] {
			t.Errorf("%s: parent %s is not its district", a.GetId(), a.GetParentId())
		}
	}
}

func TestStates(t *testing.T) {
	ss := mustOrgs(t, States)
	if len(ss) != 16 {
		t.Fatalf("%d states", len(ss))
	}
	if s := ss[8]; s.GetId() != "land-09" || s.GetName() != "Bayern" || s.GetStateCode() != "09" || s.GetArs() != "090000000000" ||
		s.GetKind() != registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY || s.GetPopulation() < 13_000_000 {
		t.Errorf("Bayern: %v", s)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
