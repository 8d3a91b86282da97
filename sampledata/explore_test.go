package sampledata

import (
	"testing"

	"github.com/verbund/verbund/registry"
)

func TestExplore(t *testing.T) {
	r := fullRegistry(t)
	for _, q := range []string{"Augsburg", "muenchen", "Munchen", "münchen", "bad t", "8033", "frankfurt", "a", "Neustadt"} {
		os, _, err := r.SearchPlaces(q, registry.OrgFilter{PageSize: 5})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range os {
			t.Logf("%q: %s %s %s %s %d", q, o.GetId(), o.GetKind(), o.GetName(), o.GetPostalCode(), o.GetPopulation())
		}
	}
	for _, q := range [][2]string{{"Kfz zulassen", ""}, {"hund", ""}, {"", "Hund"}, {"", "hund"}, {"Gewerbe anmelden", ""}, {"", "Unternehmensgründung"}, {"Fahrzeug Ausland", ""}, {"", "Quatsch"}} {
		res, err := r.Search(q[0], q[1], 20)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range res.Hits {
			t.Logf("%q: %s %s %.3f [%s]", q, h.Service.GetLeikaKey(), h.Service.GetName(), h.Score, h.Distinction)
		}
		t.Logf("%q valid: %v", q, res.ValidLifeSituations)
	}
}
