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
// offerings at every level (about 17 000), loaded under the governance
// rules: the operator registers the state agencies, each agency its
// districts and municipalities (with keys), every organisation signs its
// own offerings, and every fourth municipality delivers for its
// association by its district's authorisation.
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
	var munis []string
	var raws []string
	flush := func() {
		for len(raws) > 0 {
			n := min(len(raws), 200)
			h.mustApply(raws[:n]...)
			raws = raws[n:]
		}
	}
	type district struct {
		org   *testOrg
		munis []*testOrg
	}
	var districts []district
	for s := 1; s <= 16; s++ {
		state := fmt.Sprintf("%02d", s)
		agency := h.stateAgency(state)
		var recs []*registryv1.Mutation
		for d := 1; d <= 5; d++ {
			code := fmt.Sprintf("%s%d%02d", state, d%10, d)
			dist := district{org: newTestOrg(b, &registryv1.Organisation{
				Id: code + "0000000", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT, Name: "Landkreis " + code,
				StateCode: state, Ars: code + "0000000", Location: &registryv1.GeoPoint{Lat: 47 + float64(s)/3, Lon: 7 + float64(d)},
			})}
			recs = append(recs, mPutOrg(dist.org.rec))
			for m := 1; m <= 40; m++ {
				ars := fmt.Sprintf("%s%04d%03d", code, m/4, m)
				munis = append(munis, ars)
				o := newTestOrg(b, &registryv1.Organisation{
					Id: ars, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: fmt.Sprintf("Gemeinde %s %d", benchWords[m%len(benchWords)], m),
					StateCode: state, Ars: ars, Ags: ars[:5] + ars[9:],
					Location: &registryv1.GeoPoint{Lat: 47 + float64(s)/3 + float64(m)/100, Lon: 7 + float64(d) + float64(m)/100},
				})
				dist.munis = append(dist.munis, o)
				recs = append(recs, mPutOrg(o.rec))
			}
			districts = append(districts, dist)
		}
		raws = append(raws, h.signed(agency, recs...))
	}
	flush()
	i := 0
	for _, dist := range districts {
		var grants []*registryv1.Mutation
		for _, o := range dist.munis {
			ars := o.id()
			var offs []*registryv1.Mutation
			for j := 0; j < 4; j++ {
				offs = append(offs, mPutOffering(offering(ars, services[(i+j*7)%len(services)], ars)))
			}
			// Every fourth municipality delivers for its association.
			if i%4 == 0 {
				a := authorisation(dist.org.id(), ars, ars[:9])
				grants = append(grants, mPutAuth(a))
				off := offering(ars, services[i%len(services)], ars[:9])
				off.Id += ":vg"
				offs = append(offs, mPutOffering(off))
			}
			raws = append(raws, h.signed(o, offs...))
			i++
		}
		// The district's grants go before its municipalities' offerings.
		raws = append([]string{h.signed(dist.org, grants...)}, raws...)
		flush()
		var own []*registryv1.Mutation
		code := dist.org.id()[:5]
		for j := 0; j < 20; j++ {
			own = append(own, mPutOffering(offering(dist.org.id(), services[(j*4+int(code[4]))%len(services)], code)))
		}
		raws = append(raws, h.signed(dist.org, own...))
	}
	flush()
	for s := 1; s <= 16; s++ {
		var own []*registryv1.Mutation
		for j := 0; j < 60; j++ {
			own = append(own, mPutOffering(offering(fmt.Sprintf("land-%02d", s), services[(s+j*5)%len(services)], fmt.Sprintf("%02d", s))))
		}
		raws = append(raws, h.signed(h.stateAgency(fmt.Sprintf("%02d", s)), own...))
	}
	flush()
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
	// Bavaria's agency registers them (the operator approves no
	// organisation of a state).
	agency := h.stateAgency("09")
	for len(muts) > 0 {
		n := min(len(muts), MaxMutations)
		h.mustApply(h.signed(agency, muts[:n]...))
		muts = muts[n:]
	}
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
