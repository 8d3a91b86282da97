package sampledata

import (
	"regexp"
	"strings"
	"testing"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

func mustMunich(t testing.TB) ([]*registryv1.Service, []*registryv1.Offering) {
	t.Helper()
	s, o, err := MunichServices()
	if err != nil {
		t.Fatal(err)
	}
	return s, o
}

func channels(o *registryv1.Offering, k registryv1.ChannelKind) []*registryv1.Channel {
	var out []*registryv1.Channel
	for _, c := range o.GetChannels() {
		if c.GetKind() == k {
			out = append(out, c)
		}
	}
	return out
}

func TestMunichServices(t *testing.T) {
	services, offerings := mustMunich(t)
	// 132 DLDB services carry a LeiKa field; one lists four keys, so there
	// are 135 (service, key) pairs over 111 distinct keys.
	if len(services) != 111 || len(offerings) != 135 {
		t.Fatalf("%d services, %d offerings; want 111, 135", len(services), len(offerings))
	}
	reTag := regexp.MustCompile(`<[a-zA-Z/][^>]*>|&[a-z]+;|&#\d+;`)
	byKey := map[string]*registryv1.Service{}
	for _, s := range services {
		if err := registry.ValidateService(s); err != nil {
			t.Errorf("%s: %v", s.GetLeikaKey(), err)
		}
		if byKey[s.GetLeikaKey()] != nil {
			t.Errorf("duplicate service %s", s.GetLeikaKey())
		}
		byKey[s.GetLeikaKey()] = s
		if reTag.MatchString(s.GetDescription()) || reTag.MatchString(s.GetName()) || len(s.GetDescription()) > maxDescription ||
			strings.Contains(s.GetDescription(), "  ") || strings.Contains(s.GetDescription(), "\u200b") {
			t.Errorf("%s: description not plain text: %q", s.GetLeikaKey(), s.GetDescription())
		}
		seen := map[string]bool{}
		for _, k := range s.GetKeywords() {
			if k == "" || k != strings.TrimSpace(k) || seen[fold(k)] {
				t.Errorf("%s: keyword %q empty, untrimmed or duplicate", s.GetLeikaKey(), k)
			}
			seen[fold(k)] = true
		}
	}
	for _, k := range []string{"99036008007003", "99036008007004", "99036008007006", "99036008007007"} {
		if s := byKey[k]; s == nil || s.GetName() != "Aus dem Ausland eingeführtes Fahrzeug anmelden" {
			t.Errorf("split LeiKa key %s: %v", k, s)
		}
	}
	g := byKey["99050012104000"]
	if g == nil || g.GetName() != "Gewerbe-Anmeldung" || !strings.HasPrefix(g.GetDescription(), "Sie haben eine gewerbliche Niederlassung") ||
		len(g.GetKeywords()) != 12 || g.GetKeywords()[0] != "Gewerbebehörde" {
		t.Errorf("Gewerbe-Anmeldung: %v", g)
	}

	byID := map[string]*registryv1.Offering{}
	for _, o := range offerings {
		if err := registry.ValidateOffering(o); err != nil {
			t.Errorf("%s: %v", o.GetId(), err)
		}
		if byID[o.GetId()] != nil {
			t.Errorf("duplicate offering %s", o.GetId())
		}
		byID[o.GetId()] = o
		if byKey[o.GetLeikaKey()] == nil || !strings.HasPrefix(o.GetId(), MunichARS+":"+o.GetLeikaKey()) ||
			o.GetOrganisationId() != MunichARS || !equalStrings(o.GetAreas(), []string{MunichARS}) ||
			!equalStrings(o.GetLanguages(), []string{"de"}) || o.GetName() == "" {
			t.Errorf("%s: %v", o.GetId(), o)
		}
		if n := len(channels(o, registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON)); n > maxOfferingPlaces {
			t.Errorf("%s: %d in-person channels", o.GetId(), n)
		}
		for _, c := range channels(o, registryv1.ChannelKind_CHANNEL_KIND_ONLINE) {
			if !c.GetAvailable_24_7() || c.GetUrl() == "" {
				t.Errorf("%s: online channel %v", o.GetId(), c)
			}
		}
		for _, c := range channels(o, registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON) {
			a := c.GetAddress()
			if a.GetName() == "" || a.GetStreet() == "" || a.GetPostalCode() == "" || a.GetCity() == "" || a.GetLocation() == nil {
				t.Errorf("%s: address %v", o.GetId(), a)
			}
		}
	}
	// Several DLDB services under one key: the lowest DLDB id gets the plain
	// id, the others a suffix.
	for _, id := range []string{
		"091620000000:99014002035000", "091620000000:99014002035000:10225181", "091620000000:99014002035000:10225189",
		"091620000000:99115003000000", "091620000000:99115003000000:1080843",
	} {
		if byID[id] == nil {
			t.Errorf("no offering %s", id)
		}
	}

	// Gewerbe-Anmeldung: one location with booking, 20 minutes, 50–60 €.
	o := byID["091620000000:99050012104000"]
	if o.GetName() != "Gewerbe-Anmeldung" || o.GetProcessingTime().GetAppointmentMinutes() != 20 ||
		o.GetInfoUrl() != "https://stadt.muenchen.de/en/buergerservice/terminvereinbarung.html/#/services/1063423" {
		t.Errorf("Gewerbe-Anmeldung: %v", o)
	}
	if f := o.GetFees(); len(f) != 1 || f[0].GetAmountCents() != 5000 || f[0].GetMaxAmountCents() != 6000 || f[0].GetCurrency() != "EUR" ||
		f[0].GetText() != "50 bis 60 Euro (abhängig von der Rechtsform)" {
		t.Errorf("Gewerbe-Anmeldung fees: %v", f)
	}
	ap := channels(o, registryv1.ChannelKind_CHANNEL_KIND_APPOINTMENT)
	ip := channels(o, registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON)
	ph := channels(o, registryv1.ChannelKind_CHANNEL_KIND_PHONE)
	if len(ap) != 1 || ap[0].GetUrl() != "https://stadt.muenchen.de/en/buergerservice/terminvereinbarung.html/#/services/1063423" ||
		len(ip) != 1 || ip[0].GetAddress().GetStreet() != "Implerstraße 11" || ip[0].GetAddress().GetPostalCode() != "81371" ||
		len(ph) != 1 || ph[0].GetPhone() != "089 233-45141" {
		t.Errorf("Gewerbe-Anmeldung channels: %v", o.GetChannels())
	}
	if f := byID["091620000000:99050012071000"].GetFees(); len(f) != 1 || f[0].GetAmountCents() != 4000 || f[0].GetMaxAmountCents() != 0 {
		t.Errorf("Gewerbe-Ummeldung fees: %v", f)
	}
	if f := byID["091620000000:99036020001000"].GetFees(); len(f) != 5 || f[0].GetAmountCents() != 2050 ||
		!strings.HasPrefix(f[0].GetDescription(), "Online-Gebühr") {
		t.Errorf("Anmeldung fabrikneues Fahrzeug fees: %v", f)
	}
	if f := byID["091620000000:99115005070000"].GetFees(); len(f) != 1 || !f[0].GetFree() {
		t.Errorf("Wohnsitz abmelden fees: %v", f)
	}
	// Führungszeugnis is offered at 12 places: capped to 10; online via the
	// Federal Office of Justice.
	fz := byID["091620000000:99049001000000"]
	if n := len(channels(fz, registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON)); n != 10 {
		t.Errorf("Führungszeugnis: %d places", n)
	}
	for id, host := range map[string]string{
		"091620000000:99022001000000":         "www.bafoeg-digital.de",        // BAföG
		"091620000000:99115004000000":         "www.buergerservice-portal.de", // Melderegisterauskunft
		"091620000000:99036011011000":         "www.buergerservice-portal.de", // Adressänderung Fahrzeugpapiere
		"091620000000:99049001000000":         "www.bundesjustizamt.de",       // Führungszeugnis
		"091620000000:99010003001000":         "service.muenchen.de",          // Niederlassungserlaubnis
		"091620000000:99036008003000:1064305": "stadt.muenchen.de",            // Fahrzeug abmelden
	} {
		on := channels(byID[id], registryv1.ChannelKind_CHANNEL_KIND_ONLINE)
		if len(on) != 1 || !strings.Contains(on[0].GetUrl(), "://"+host+"/") && !strings.HasSuffix(on[0].GetUrl(), "://"+host) {
			t.Errorf("%s: online channels %v, want one on %s", id, on, host)
		}
	}
	// Not online: information material, contact forms, plate reservation.
	for _, id := range []string{"091620000000:99008001000000", "091620000000:99036008003000", "091620000000:99010005000000"} {
		if on := channels(byID[id], registryv1.ChannelKind_CHANNEL_KIND_ONLINE); len(on) != 0 {
			t.Errorf("%s: unexpected online channels %v", id, on)
		}
	}
	// Documents are the downloadable forms.
	var docs []string
	for _, d := range byID["091620000000:99115005000000"].GetDocuments() {
		docs = append(docs, d.GetName())
	}
	if !strings.Contains(strings.Join(docs, "|"), "Wohnungsgeberbestätigung") {
		t.Errorf("Wohnsitzanmeldung documents: %v", docs)
	}
}

// TestMunichStats logs the numbers of the report (go test -v -run Stats).
func TestMunichStats(t *testing.T) {
	_, offerings := mustMunich(t)
	var online, withFees, parsed, unparsed, noFee, feeLines, feeParsedLines, docs, appt int
	for _, o := range offerings {
		if len(channels(o, registryv1.ChannelKind_CHANNEL_KIND_ONLINE)) > 0 {
			online++
		}
		if len(channels(o, registryv1.ChannelKind_CHANNEL_KIND_APPOINTMENT)) > 0 {
			appt++
		}
		if len(o.GetDocuments()) > 0 {
			docs++
		}
		if len(o.GetFees()) == 0 {
			noFee++
			continue
		}
		withFees++
		any := false
		for _, f := range o.GetFees() {
			feeLines++
			if feeParsed(f) {
				feeParsedLines++
				any = true
			}
		}
		if any {
			parsed++
		} else {
			unparsed++
		}
	}
	t.Logf("offerings %d: online %d, without online %d, appointment %d, with documents %d",
		len(offerings), online, len(offerings)-online, appt, docs)
	t.Logf("fees: %d offerings with fee text (%d with a parsed amount or free, %d unparsed), %d without; %d fee lines, %d parsed",
		withFees, parsed, unparsed, noFee, feeLines, feeParsedLines)
	if online < 15 || parsed < 100 {
		t.Errorf("online %d, parsed %d: rules broke", online, parsed)
	}
}
