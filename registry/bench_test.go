package registry

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// applyChunked lets the operator apply mutations in commands of at most
// MaxMutations.
func (h *harness) applyChunked(muts []*registryv1.Mutation) {
	h.t.Helper()
	for len(muts) > 0 {
		n := min(len(muts), MaxMutations)
		h.mustApply(h.signed(h.op, muts[:n]...))
		muts = muts[n:]
	}
}

var benchWords = []string{
	"Anmeldung", "Gewerbe", "Hund", "Wohnsitz", "Führerschein", "Bau", "Genehmigung", "Steuer",
	"Antrag", "Bescheinigung", "Umzug", "Geburt", "Ehe", "Kita", "Parkausweis", "Personalausweis",
	"Reisepass", "Fischerei", "Sondernutzung", "Wasser", "Abfall", "Grundsteuer", "Wohngeld", "Elterngeld",
}

var benchLife = []string{"Umzug", "Geburt", "Hund", "Unternehmensgründung", "Bauen", "Mobilität", "Heirat", "Ruhestand"}

// bigRegistry: 16 states with a state agency, 5 districts each and 40
// municipalities per district (3296 organisations), 300 services, and
// offerings at every level (about 17 000).
func bigRegistry(b *testing.B) (*harness, []string, []string) {
	b.Helper()
	h := newHarness(b)
	h.genesis()
	var services []string
	var muts []*registryv1.Mutation
	for i := 0; i < 300; i++ {
		leika := fmt.Sprintf("99%012d", 100000+i)
		services = append(services, leika)
		w1, w2 := benchWords[i%len(benchWords)], benchWords[(i/len(benchWords)+i)%len(benchWords)]
		muts = append(muts, mPutService(&registryv1.Service{
			LeikaKey: leika, Name: fmt.Sprintf("%s-%s %d", w1, w2, i),
			Keywords:       []string{w2 + " beantragen", fmt.Sprintf("Leistung %d", i)},
			LifeSituations: []string{benchLife[i%len(benchLife)]},
			Description:    fmt.Sprintf("Die Leistung %s %s wird bei der zuständigen Stelle beantragt.", w1, w2),
		}))
	}
	h.applyChunked(muts)
	muts = nil
	var munis []string
	for s := 1; s <= 16; s++ {
		state := fmt.Sprintf("%02d", s)
		agency := fmt.Sprintf("land-%02d", s)
		muts = append(muts, mPutOrg(&registryv1.Organisation{Id: agency, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY, Name: "Landesamt " + state, StateCode: state}))
		for d := 1; d <= 5; d++ {
			district := fmt.Sprintf("%s%d%02d", state, d%10, d)
			muts = append(muts, mPutOrg(&registryv1.Organisation{
				Id: district + "0000000", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT, Name: "Landkreis " + district,
				StateCode: state, Ars: district + "0000000", Location: &registryv1.GeoPoint{Lat: 47 + float64(s)/3, Lon: 7 + float64(d)},
			}))
			for m := 1; m <= 40; m++ {
				ars := fmt.Sprintf("%s%04d%03d", district, m/4, m)
				munis = append(munis, ars)
				muts = append(muts, mPutOrg(&registryv1.Organisation{
					Id: ars, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: fmt.Sprintf("Gemeinde %s %d", benchWords[m%len(benchWords)], m),
					StateCode: state, Ars: ars, Ags: ars[:5] + ars[9:],
					Location: &registryv1.GeoPoint{Lat: 47 + float64(s)/3 + float64(m)/100, Lon: 7 + float64(d) + float64(m)/100},
				}))
			}
		}
	}
	h.applyChunked(muts)
	muts = nil
	for i, ars := range munis {
		for j := 0; j < 4; j++ {
			leika := services[(i+j*7)%len(services)]
			muts = append(muts, mPutOffering(offering(ars, leika, ars)))
		}
		// Every fourth municipality delivers for its association.
		if i%4 == 0 {
			o := offering(ars, services[i%len(services)], ars[:9])
			o.Id += ":vg"
			muts = append(muts, mPutOffering(o))
		}
	}
	for s := 1; s <= 16; s++ {
		for d := 1; d <= 5; d++ {
			district := fmt.Sprintf("%02d%d%02d", s, d%10, d)
			for j := 0; j < 20; j++ {
				muts = append(muts, mPutOffering(offering(district+"0000000", services[(s*d+j)%len(services)], district)))
			}
		}
		for j := 0; j < 60; j++ {
			muts = append(muts, mPutOffering(offering(fmt.Sprintf("land-%02d", s), services[(s+j*5)%len(services)], fmt.Sprintf("%02d", s))))
		}
	}
	h.applyChunked(muts)
	return h, munis, services
}

func BenchmarkFindProviders(b *testing.B) {
	h, munis, services := bigRegistry(b)
	matches, i := 0, 0
	for ; b.Loop(); i++ {
		// A service the municipality itself offers (plus whatever the
		// association, district and state add).
		m := (i * 7919) % len(munis)
		p, err := h.r.FindProviders(services[(m+(i%4)*7)%len(services)], munis[m], 10)
		if err != nil {
			b.Fatal(err)
		}
		matches += len(p.Matches)
	}
	b.ReportMetric(float64(matches)/float64(i), "matches/op")
}

func BenchmarkSearchServices(b *testing.B) {
	h, _, _ := bigRegistry(b)
	queries := []struct{ text, life string }{
		{"anmelden", ""}, {"Führerschein beantragen", ""}, {"hund", ""}, {"umzug", ""},
		{"steuer", "Hund"}, {"", "Umzug"}, {"bau genehmigung", ""}, {"leistung 42", ""},
	}
	hits, i := 0, 0
	for ; b.Loop(); i++ {
		q := queries[i%len(queries)]
		res, _, err := h.r.SearchServices(q.text, q.life, 20)
		if err != nil {
			b.Fatal(err)
		}
		hits += len(res)
	}
	b.ReportMetric(float64(hits)/float64(i), "hits/op")
}

// BenchmarkApplyBatch: one ApplyBatch of 10 log entries with 100 signed
// offering commands each, from 1000 different municipalities: parallel
// signature verification, apply and one badger commit.
func BenchmarkApplyBatch(b *testing.B) {
	const orgs, perEntry = 1000, 100
	h := newHarness(b)
	h.genesis()
	h.addService(service(leikaGewerbe, "Gewerbe-Anmeldung", nil, nil))
	var munis []*testOrg
	var muts []*registryv1.Mutation
	for i := 0; i < orgs; i++ {
		ars := fmt.Sprintf("09187%07d", i)
		o := newTestOrg(b, &registryv1.Organisation{Id: ars, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: "Gemeinde " + ars, Ars: ars})
		munis = append(munis, o)
		muts = append(muts, mPutOrg(o.rec))
	}
	h.applyChunked(muts)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		var logs []*raft.Log
		var raws []string
		for j, o := range munis {
			off := offering(o.id(), leikaGewerbe, o.id())
			off.Id = fmt.Sprintf("%s:%d", off.Id, i)
			raws = append(raws, h.signed(o, mPutOffering(off)))
			if (j+1)%perEntry == 0 {
				logs = append(logs, h.nextLog(raws...))
				raws = nil
			}
		}
		b.StartTimer()
		out := h.fsm.ApplyBatch(logs)
		b.StopTimer()
		for _, o := range out {
			for _, r := range o.(*LogResult).Results {
				if r.GetErrorCode() != "" {
					b.Fatalf("%s: %s", r.GetErrorCode(), r.GetErrorMessage())
				}
			}
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(orgs*b.N)/b.Elapsed().Seconds(), "cmds/s")
}
