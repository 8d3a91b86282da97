package sampledata

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/verbund/verbund/sampledata/internal/dldb"
)

// sharedData is the read-only original data next to the repository.
const sharedData = "../../shared/data"

// TestEmbeddedDataCurrent checks that the embedded files are the originals
// (the CSV) or derived from them by internal/slim (go generate), when the
// originals are available.
func TestEmbeddedDataCurrent(t *testing.T) {
	if _, err := os.Stat(sharedData); err != nil {
		t.Skipf("original data not available: %v", err)
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(filepath.Join(sharedData, p))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(read("municipalities/gemeinden_ags_coords.csv"), gemeindenCSV) {
		t.Error("data/gemeinden_ags_coords.csv differs from the original")
	}
	for _, c := range []struct {
		src      string
		embedded []byte
		slim     func([]byte) ([]byte, error)
	}{
		{"munich-dldb/services_de.json", munichServicesJSON, dldb.SlimServices},
		{"munich-dldb/locations_de.json", munichLocationsJSON, dldb.SlimLocations},
	} {
		want, err := c.slim(read(c.src))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(want, c.embedded) {
			t.Errorf("slimmed %s is out of date: run go generate ./sampledata", c.src)
		}
	}
	// The slimmed export decodes to the same records as the original.
	orig, err := parseMunich(read("munich-dldb/services_de.json"), read("munich-dldb/locations_de.json"))
	if err != nil {
		t.Fatal(err)
	}
	slim, err := loadMunich()
	if err != nil {
		t.Fatal(err)
	}
	if len(orig.services) != len(slim.services) || len(orig.locations) != len(slim.locations) {
		t.Fatalf("original %d/%d, slim %d/%d services/locations", len(orig.services), len(orig.locations), len(slim.services), len(slim.locations))
	}
	for i := range orig.services {
		o, s := orig.services[i], slim.services[i]
		if o.ID != s.ID || o.Leika != s.Leika || o.Description != s.Description || o.Fees != s.Fees || o.Meta != s.Meta ||
			len(o.Forms) != len(s.Forms) || len(o.Locations) != len(s.Locations) {
			t.Errorf("service %s differs after slimming", o.ID)
		}
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := parseGemeinden([]byte("ags,ars\n1,2\n")); err == nil {
		t.Error("missing columns accepted")
	}
	bad := "ags,ars,name,land_code,land,kreis_ags,kreis,verband,plz,lat,lon,population,area_km2\n" +
		"09162000,091620000000,München,09,Bayern,09163,x,x,80331,48,11,1,1\n"
	if _, err := parseGemeinden([]byte(bad)); err == nil {
		t.Error("inconsistent keys accepted")
	}
	if _, err := parseMunich([]byte("{"), []byte("{}")); err == nil {
		t.Error("broken JSON accepted")
	}
}

// BenchmarkConvertAll converts everything from the embedded bytes,
// including parsing (which Municipalities etc. otherwise do once).
func BenchmarkConvertAll(b *testing.B) {
	for b.Loop() {
		rows, err := parseGemeinden(gemeindenCSV)
		if err != nil {
			b.Fatal(err)
		}
		d, err := parseMunich(munichServicesJSON, munichLocationsJSON)
		if err != nil {
			b.Fatal(err)
		}
		r := newRegions(rows)
		n := len(r.states()) + len(r.districts()) + len(r.associations()) + len(r.municipalities())
		if n != 16+294+1210+11004 {
			b.Fatalf("%d organisations", n)
		}
		if _, _, err := munichServices(d); err != nil {
			b.Fatal(err)
		}
	}
}
