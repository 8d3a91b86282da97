package sampledata

import (
	"bytes"
	_ "embed"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/verbund/verbund/sampledata/internal/dldb"
)

var (
	//go:embed data/gemeinden_ags_coords.csv
	gemeindenCSV []byte
	//go:embed data/munich_services_de.slim.json
	munichServicesJSON []byte
	//go:embed data/munich_locations_de.slim.json
	munichLocationsJSON []byte
)

// gemeinde is one row of gemeinden_ags_coords.csv.
type gemeinde struct {
	ags, ars, name  string
	land, landName  string
	kreisAGS, kreis string
	verband, plz    string
	lat, lon        float64
	hasLocation     bool
	population      int64
}

var gemeindeColumns = []string{"ags", "ars", "name", "land_code", "land", "kreis_ags", "kreis", "verband", "plz", "lat", "lon", "population", "area_km2"}

// loadGemeinden parses the embedded CSV once; callers must not modify it.
var loadGemeinden = sync.OnceValues(func() ([]gemeinde, error) { return parseGemeinden(gemeindenCSV) })

func parseGemeinden(b []byte) ([]gemeinde, error) {
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))))
	r.ReuseRecord = true
	head, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("gemeinden: header: %w", err)
	}
	col := map[string]int{}
	for i, h := range head {
		col[h] = i
	}
	for _, c := range gemeindeColumns {
		if _, ok := col[c]; !ok {
			return nil, fmt.Errorf("gemeinden: column %q missing", c)
		}
	}
	out := make([]gemeinde, 0, 11100)
	for line := 2; ; line++ {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("gemeinden: line %d: %w", line, err)
		}
		get := func(c string) string { return strings.TrimSpace(rec[col[c]]) }
		g := gemeinde{
			ags: get("ags"), ars: get("ars"), name: get("name"),
			land: get("land_code"), landName: get("land"),
			kreisAGS: get("kreis_ags"), kreis: get("kreis"),
			verband: get("verband"), plz: get("plz"),
		}
		if len(g.ars) != 12 || len(g.ags) != 8 || !strings.HasPrefix(g.ars, g.land) || g.ars[:5] != g.kreisAGS {
			return nil, fmt.Errorf("gemeinden: line %d: inconsistent keys ags=%q ars=%q land=%q kreis=%q", line, g.ags, g.ars, g.land, g.kreisAGS)
		}
		if p := get("population"); p != "" {
			if g.population, err = strconv.ParseInt(p, 10, 64); err != nil {
				return nil, fmt.Errorf("gemeinden: line %d: population: %w", line, err)
			}
		}
		// Two rows have no coordinates and one has 0/0 (the
		// German-Luxembourg condominium); all three mean "unknown".
		if la, lo := get("lat"), get("lon"); la != "" && lo != "" {
			lat, err1 := strconv.ParseFloat(la, 64)
			lon, err2 := strconv.ParseFloat(lo, 64)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("gemeinden: line %d: bad coordinates %q,%q", line, la, lo)
			}
			if lat != 0 || lon != 0 {
				g.lat, g.lon, g.hasLocation = lat, lon, true
			}
		}
		out = append(out, g)
	}
	return out, nil
}

// munichData is the decoded DLDB export.
type munichData struct {
	services  []dldb.Service
	locations map[string]*dldb.Location
}

var loadMunich = sync.OnceValues(func() (*munichData, error) {
	return parseMunich(munichServicesJSON, munichLocationsJSON)
})

func parseMunich(servicesJSON, locationsJSON []byte) (*munichData, error) {
	var sf dldb.ServicesFile
	if err := json.Unmarshal(servicesJSON, &sf); err != nil {
		return nil, fmt.Errorf("munich services: %w", err)
	}
	var lf dldb.LocationsFile
	if err := json.Unmarshal(locationsJSON, &lf); err != nil {
		return nil, fmt.Errorf("munich locations: %w", err)
	}
	d := &munichData{services: sf.Data, locations: make(map[string]*dldb.Location, len(lf.Data))}
	for i := range lf.Data {
		d.locations[lf.Data[i].ID] = &lf.Data[i]
	}
	return d, nil
}
