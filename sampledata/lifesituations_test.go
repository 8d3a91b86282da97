package sampledata

import (
	"slices"
	"testing"

	"github.com/verbund/verbund/sampledata/internal/dldb"
)

func munichService(t *testing.T, id string) *dldb.Service {
	t.Helper()
	d, err := loadMunich()
	if err != nil {
		t.Fatal(err)
	}
	for i := range d.services {
		if d.services[i].ID == id {
			return &d.services[i]
		}
	}
	t.Fatalf("no DLDB service %s", id)
	return nil
}

// TestLifeSituationRules checks every rule against real services of
// Munich's export (by DLDB id; those without LeiKa key are noted).
func TestLifeSituationRules(t *testing.T) {
	cases := map[string][]struct {
		id, name string
	}{
		"Umzug": {
			{"1063475", "Wohnsitzanmeldung"},
			{"1063486", "Wohnsitz abmelden"},
			{"1063576", "Meldebescheinigung"},
			{"1064314", "Umschreibung Fahrzeug – von außerhalb nach München"},
			{"1064121", "Änderung der Adresse in Fahrzeugpapieren"},
			{"10224132", "Wohnsitzanmeldung – Familie"}, // no LeiKa key
		},
		"Geburt": {
			{"1075163", "Vaterschaftsanerkennung ohne Sorgerechtserklärung vor Geburt/Geburtsbeurkundung des Kindes"},
			{"10435454", "Geburt im Bundesgebiet"}, // no LeiKa key
		},
		"Eheschließung": {
			{"1063648", "Anmeldung einer Eheschließung ohne Auslandsbezug"},
			{"10396802", "Anmeldung einer Eheschließung mit Auslandsbezug"}, // no LeiKa key
		},
		"Todesfall": {
			{"1063655", "Sterbeurkunde"},
			{"1080494", "Hinterbliebenenrente (Vor-Ort-Termin)"},
		},
		// Munich's export has no dog tax; the only pet service (no LeiKa key):
		"Hund":     {{"10308316", "Gesundheitszeugnis (Hund, Katze, Frettchen, Vögel)"}},
		"Haustier": {{"10308316", "Gesundheitszeugnis (Hund, Katze, Frettchen, Vögel)"}},
		"Unternehmensgründung": {
			{"1063423", "Gewerbe-Anmeldung"},
			{"1063525", "Reisegewerbe-Erlaubnis beantragen"},
			{"1064033", "Auskunft aus dem Gewerbezentralregister – Natürliche Person"},
			{"1063718", "Taxigenehmigung – Erstantrag oder erneuter Antrag"},
		},
		"Auto und Verkehr": {
			{"1063425", "Anmeldung fabrikneues Fahrzeug oder Tageszulassung"},
			{"1064305", "Fahrzeug abmelden"},
			{"1071944", "Umschreibung EU/EWR-Führerschein"},
			{"1072043", "Bewohnerparkausweis"},
		},
		"Ausweis und Pass": {
			{"1063441", "Personalausweis"},
			{"1063453", "Reisepass"},
			{"1078323", "Zweitpass, weitere Reisepässe"},
			{"1064173", "Reiseausweis für Ausländer"},
		},
		"Bauen und Wohnen": {
			{"1073805", "Beratung zum Baurecht"},
			{"1073941", "Mietspiegel – Überprüfung von Mieterhöhungen"},
		},
		"Arbeit und Ausländerrecht": {
			{"1064101", "Niederlassungserlaubnis"},
			{"1086574", "Aufenthalts- und Arbeitserlaubnis – Nicht-EU-Bürger"},
			{"1071907", "Einbürgerung"},
			{"1080721", "Asyl beantragen"},
		},
		"Rente und Versicherung": {
			{"1080479", "Altersrente (Vor-Ort-Termin)"},
			{"10297413", "Lebensbescheinigung"},
		},
		"Familie und Kinder": {
			{"10113239", "Elternberatung zur Kinderbetreuung"},
			{"1075967", "Beurkundung von Unterhaltsansprüchen"},
			{"1080843", "Haushaltsbescheinigung"},
		},
		"Schule und Ausbildung": {
			{"1074970", "BAföG – Antrag Ausbildungsförderung"},
			{"1089337", "Aufenthaltserlaubnis – Studium"},
		},
		"Verlust und Diebstahl": {
			{"1076889", "Verlust oder Diebstahl Personalausweis"},
			{"1063519", "Fundsache abholen"},
		},
		"Jagd, Fischerei und Waffen": {
			{"1073738", "Jagdschein beantragen"},
			{"1073758", "Fischereischein beantragen"},
			{"1072647", "Waffenbesitzkarte beantragen"},
			{"1063755", "Feuerwerk (Pyrotechnik) anmelden"},
		},
		"Behinderung": {{"1072009", "Bundesweiter Parkausweis für Behinderte"}},
	}
	// Services that must not get a situation.
	not := map[string][]string{
		"1063435": {"Unternehmensgründung", "Umzug"}, // Gewerbe-Abmeldung
		"1063422": {"Umzug"},                         // Gewerbe-Ummeldung
		"1072043": {"Ausweis und Pass"},              // Bewohnerparkausweis
		"1063519": {"Jagd, Fischerei und Waffen"},    // Fundsache abholen (99089017…)
		"1064305": {"Umzug"},                         // Fahrzeug abmelden
		"1073805": {"Umzug"},                         // Beratung zum Baurecht
	}
	for _, r := range lifeSituationRules {
		if len(cases[r.Situation]) == 0 {
			t.Errorf("rule %q has no test case", r.Situation)
		}
	}
	for sit, svcs := range cases {
		for _, c := range svcs {
			s := munichService(t, c.id)
			if s.Name != c.name {
				t.Errorf("DLDB %s is %q, want %q", c.id, s.Name, c.name)
			}
			leika := ""
			if ks := leikaKeys(s.Leika); len(ks) > 0 {
				leika = ks[0]
			}
			if got := LifeSituations(leika, s.Name); !slices.Contains(got, sit) {
				t.Errorf("%s %q (LeiKa %s): %v, want %q", c.id, s.Name, leika, got, sit)
			}
		}
	}
	for id, sits := range not {
		s := munichService(t, id)
		got := LifeSituations(leikaKeys(s.Leika)[0], s.Name)
		for _, sit := range sits {
			if slices.Contains(got, sit) {
				t.Errorf("%s %q: %v, must not contain %q", id, s.Name, got, sit)
			}
		}
	}
	// The example of the brief, through the converter.
	services, _, err := MunichServices()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range services {
		if s.GetLeikaKey() == "99050012104000" && (s.GetName() != "Gewerbe-Anmeldung" || !slices.Contains(s.GetLifeSituations(), "Unternehmensgründung")) {
			t.Errorf("Gewerbe-Anmeldung: %v", s)
		}
	}
	if got := LifeSituations("", "Hundesteuer – Anmeldung eines Hundes"); !slices.Contains(got, "Hund") || !slices.Contains(got, "Haustier") {
		t.Errorf("Hundesteuer: %v", got)
	}
}

func TestFold(t *testing.T) {
	for in, want := range map[string]string{
		"Gewerbe-Anmeldung":          "gewerbe anmeldung",
		"  Änderung der Adresse ":    "aenderung der adresse",
		"Führerschein/Straße, Größe": "fuehrerschein strasse groesse",
		"BAföG – Antrag":             "bafoeg antrag",
	} {
		if got := fold(in); got != want {
			t.Errorf("fold(%q) = %q, want %q", in, got, want)
		}
	}
}
