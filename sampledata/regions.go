package sampledata

import (
	"sort"
	"sync"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// StateID returns the organisation id of a state's agency ("land-09").
func StateID(stateCode string) string { return "land-" + stateCode }

// districtID is the id a Kreis gets: its 5-digit key padded to an ARS.
func districtID(kreisAGS string) string { return kreisAGS + "0000000" }

// associationID is the id of a municipal association: the 9-digit
// Verbandsschlüssel padded to an ARS.
func associationID(ars9 string) string { return ars9 + "000" }

// regions indexes the municipality rows.
type regions struct {
	rows []gemeinde
	// byARS: every municipality ARS.
	byARS map[string]bool
}

func newRegions(rows []gemeinde) *regions {
	r := &regions{rows: rows, byARS: make(map[string]bool, len(rows))}
	for _, g := range rows {
		r.byARS[g.ars] = true
	}
	return r
}

var loadRegions = sync.OnceValues(func() (*regions, error) {
	rows, err := loadGemeinden()
	if err != nil {
		return nil, err
	}
	return newRegions(rows), nil
})

// hasDistrict reports whether g's Kreis is a separate DISTRICT organisation:
// it has a name (the two pseudo-Kreise 07000 and 13000 of unincorporated
// areas have none) and is not a kreisfreie Stadt, whose district id is the
// city's own ARS.
func (r *regions) hasDistrict(g *gemeinde) bool {
	return g.kreis != "" && !r.byARS[districtID(g.kreisAGS)]
}

// parentOf is the organisation a municipality or association belongs to:
// its district, or its state where there is no separate district.
func (r *regions) parentOf(g *gemeinde) string {
	if r.hasDistrict(g) {
		return districtID(g.kreisAGS)
	}
	return StateID(g.land)
}

// Municipalities returns all 11,004 municipalities of the register (including
// the 208 unincorporated areas that have an AGS), sorted by ARS. Three have
// no location: two have no coordinates and one is recorded at 0/0. The
// parent is the district, or for kreisfreie Städte and the two areas outside
// any Kreis the state ([StateID]).
func Municipalities() ([]*registryv1.Organisation, error) {
	r, err := loadRegions()
	if err != nil {
		return nil, err
	}
	return r.municipalities(), nil
}

func (r *regions) municipalities() []*registryv1.Organisation {
	out := make([]*registryv1.Organisation, 0, len(r.rows))
	for i := range r.rows {
		g := &r.rows[i]
		o := &registryv1.Organisation{
			Id:         g.ars,
			Kind:       registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY,
			Name:       g.name,
			StateCode:  g.land,
			Ars:        g.ars,
			Ags:        g.ags,
			Status:     registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED,
			ParentId:   r.parentOf(g),
			PostalCode: g.plz,
			Population: g.population,
		}
		if g.hasLocation {
			o.Location = &registryv1.GeoPoint{Lat: g.lat, Lon: g.lon}
		}
		out = append(out, o)
	}
	return out
}

// group aggregates municipalities into a larger area.
type group struct {
	first   *gemeinde
	members int
	pop     int64
	// population-weighted and plain coordinate sums of located members
	wLat, wLon, w    float64
	sLat, sLon, nLoc float64
}

func (gr *group) add(g *gemeinde) {
	if gr.first == nil {
		gr.first = g
	}
	gr.members++
	gr.pop += g.population
	if g.hasLocation {
		p := float64(g.population)
		gr.wLat += p * g.lat
		gr.wLon += p * g.lon
		gr.w += p
		gr.sLat += g.lat
		gr.sLon += g.lon
		gr.nLoc++
	}
}

// centroid is the population-weighted centroid of the located members, or
// their plain mean if none has inhabitants; nil if none is located.
func (gr *group) centroid() *registryv1.GeoPoint {
	switch {
	case gr.w > 0:
		return &registryv1.GeoPoint{Lat: gr.wLat / gr.w, Lon: gr.wLon / gr.w}
	case gr.nLoc > 0:
		return &registryv1.GeoPoint{Lat: gr.sLat / gr.nLoc, Lon: gr.sLon / gr.nLoc}
	}
	return nil
}

func groupBy(rows []gemeinde, key func(*gemeinde) (string, bool)) (map[string]*group, []string) {
	m := map[string]*group{}
	var keys []string
	for i := range rows {
		g := &rows[i]
		k, ok := key(g)
		if !ok {
			continue
		}
		gr := m[k]
		if gr == nil {
			gr = &group{}
			m[k] = gr
			keys = append(keys, k)
		}
		gr.add(g)
	}
	sort.Strings(keys)
	return m, keys
}

// Districts returns the 294 Kreise that are not kreisfreie Städte (of the
// 401 Kreise and kreisfreie Städte in the register; see the package
// documentation), sorted by id. Id and ARS are kreis_ags + "0000000"; the
// location is the population-weighted centroid of the municipalities, the
// population their sum, the parent the state.
func Districts() ([]*registryv1.Organisation, error) {
	r, err := loadRegions()
	if err != nil {
		return nil, err
	}
	return r.districts(), nil
}

func (r *regions) districts() []*registryv1.Organisation {
	groups, keys := groupBy(r.rows, func(g *gemeinde) (string, bool) { return g.kreisAGS, r.hasDistrict(g) })
	out := make([]*registryv1.Organisation, 0, len(keys))
	for _, k := range keys {
		gr := groups[k]
		id := districtID(k)
		out = append(out, &registryv1.Organisation{
			Id:         id,
			Kind:       registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT,
			Name:       gr.first.kreis,
			StateCode:  gr.first.land,
			Ars:        id,
			Location:   gr.centroid(),
			Status:     registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED,
			ParentId:   StateID(gr.first.land),
			Population: gr.pop,
		})
	}
	return out
}

// Associations returns the 1,210 municipal associations (Ämter,
// Verwaltungsgemeinschaften, Verbandsgemeinden, Samtgemeinden, ...) with
// more than one member, sorted by id. Members are grouped by the first 9
// digits of their ARS (the Verbandsschlüssel), which in the data always map
// to a single `verband` name; grouping by (Kreis, verband name) instead
// would wrongly merge three municipalities with unincorporated areas of the
// same name. Id and ARS are the 9 digits + "000", the parent is the district.
func Associations() ([]*registryv1.Organisation, error) {
	r, err := loadRegions()
	if err != nil {
		return nil, err
	}
	return r.associations(), nil
}

func (r *regions) associations() []*registryv1.Organisation {
	groups, keys := groupBy(r.rows, func(g *gemeinde) (string, bool) { return g.ars[:9], true })
	var out []*registryv1.Organisation
	for _, k := range keys {
		gr := groups[k]
		if gr.members < 2 {
			continue
		}
		id := associationID(k)
		out = append(out, &registryv1.Organisation{
			Id:         id,
			Kind:       registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPAL_ASSOCIATION,
			Name:       gr.first.verband,
			StateCode:  gr.first.land,
			Ars:        id,
			Location:   gr.centroid(),
			Status:     registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED,
			ParentId:   r.parentOf(gr.first),
			Population: gr.pop,
		})
	}
	return out
}

// States returns the 16 states as STATE_AGENCY organisations with ids
// "land-01" … "land-16" ([StateID]), ARS = state code + ten zeros, the
// population sum and the population-weighted centroid.
func States() ([]*registryv1.Organisation, error) {
	r, err := loadRegions()
	if err != nil {
		return nil, err
	}
	return r.states(), nil
}

func (r *regions) states() []*registryv1.Organisation {
	groups, keys := groupBy(r.rows, func(g *gemeinde) (string, bool) { return g.land, true })
	out := make([]*registryv1.Organisation, 0, len(keys))
	for _, k := range keys {
		gr := groups[k]
		out = append(out, &registryv1.Organisation{
			Id:         StateID(k),
			Kind:       registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY,
			Name:       gr.first.landName,
			StateCode:  k,
			Ars:        k + "0000000000",
			Location:   gr.centroid(),
			Status:     registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED,
			Population: gr.pop,
		})
	}
	return out
}
