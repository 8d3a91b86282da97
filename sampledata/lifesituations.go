package sampledata

import (
	"strings"
	"unicode"
)

// Life situations ("Lebenslagen") are assigned by a small rule table. A rule
// matches a service if its LeiKa key starts with one of LeiKa (and with
// none of NotLeiKa), or if a word of its folded name starts with one of
// Words (a pattern of several words must match consecutive words, the last
// one as a prefix). Folding lower-cases and spells out umlauts, so the
// patterns are written "fuehrerschein", "eheschliess".
//
// LeiKa keys are grouped by their leading digits (99036… vehicle
// registration, 99115… residents' registration, 99050… trade law), but the
// groups are not always homogeneous (99089017… lost property sits among
// weapons law), so prefixes are kept narrow and names fill the gaps. Every
// rule is covered by TestLifeSituationRules against real Munich services.
type lifeSituationRule struct {
	Situation string
	LeiKa     []string
	NotLeiKa  []string
	Words     []string
}

var lifeSituationRules = []lifeSituationRule{
	{
		// Registration of residence, moving in and out, registration
		// certificates, vehicle re-registration and address changes in
		// vehicle papers. (Munich files "Fahrzeug abmelden" under the same
		// key as "Umschreibung Fahrzeug – innerhalb Münchens", 99036008003…,
		// so that one goes by name.)
		Situation: "Umzug",
		LeiKa:     []string{"99115005", "99115003", "99036008071", "99036011011"},
		NotLeiKa:  []string{"99050"}, // Gewerbe-Ummeldung is a business matter
		Words:     []string{"wohnsitz", "umzug", "ummeld", "meldebescheinigung", "umschreibung fahrzeug", "aenderung der adresse"},
	},
	{
		Situation: "Geburt",
		LeiKa:     []string{"99133001"}, // Vaterschaftsanerkennung
		Words:     []string{"geburt", "vaterschaft", "neugeboren", "elterngeld", "kindergeld"},
	},
	{
		Situation: "Eheschließung",
		LeiKa:     []string{"99059"},
		Words:     []string{"eheschliess", "heirat", "trauung", "lebenspartnerschaft"},
	},
	{
		Situation: "Todesfall",
		LeiKa:     []string{"99101004"}, // Sterbeurkunde
		Words:     []string{"sterbe", "tod", "hinterbliebenen", "bestattung", "nachlass", "witwe"},
	},
	{
		// Dog tax and dog registration; Munich's export has no such
		// LeiKa service, only a veterinary certificate for travelling pets
		// (without a key): the sample catalogue adds "Hundesteuer
		// Anmeldung" (CatalogueAdditions), which this rule tags.
		Situation: "Hund",
		Words:     []string{"hund"},
	},
	{
		Situation: "Haustier",
		Words:     []string{"hund", "katze", "haustier", "tierhalt"},
	},
	{
		// Registering a trade and the permits and register extracts a new
		// business needs; not Gewerbe-Abmeldung.
		Situation: "Unternehmensgründung",
		LeiKa:     []string{"99050", "99052002", "99055", "99084010", "99084012"},
		NotLeiKa:  []string{"99050012070"},
		Words:     []string{"gewerbe anmeld", "gewerbeanmeld", "existenzgruend", "unternehmensgruend"},
	},
	{
		Situation: "Auto und Verkehr",
		LeiKa:     []string{"99036", "99108", "99023", "99029", "99018", "99075002", "99084011", "99085005000"},
		Words:     []string{"fahrzeug", "kfz", "kennzeichen", "fuehrerschein", "fahrerlaubnis", "parkausweis", "zulassung"},
	},
	{
		Situation: "Ausweis und Pass",
		LeiKa:     []string{"99008", "99085001", "99085005012"},
		Words:     []string{"personalausweis", "reisepass", "kinderreisepass", "zweitpass", "reiseausweis"},
	},
	{
		Situation: "Bauen und Wohnen",
		LeiKa:     []string{"99012", "99116"},
		Words:     []string{"baurecht", "bauantrag", "baugenehmigung", "bauakte", "bauberatung", "bauvorhaben", "mietspiegel", "miete", "wohngeld", "wohnraum", "wohnung"},
	},
	{
		// Residence and work permits, asylum, naturalisation.
		Situation: "Arbeit und Ausländerrecht",
		LeiKa:     []string{"99010", "99011", "99030", "99125", "99099", "99085005012"},
		Words:     []string{"aufenthalt", "niederlassungserlaubnis", "einbuergerung", "asyl", "visum", "arbeitserlaubnis", "einreise", "auslaender"},
	},
	{
		Situation: "Rente und Versicherung",
		LeiKa:     []string{"99114"},
		Words:     []string{"rente", "altersrente", "lebensbescheinigung", "versicherung"},
	},
	{
		Situation: "Familie und Kinder",
		LeiKa:     []string{"99041", "99133", "99072"},
		Words:     []string{"kind", "eltern", "kita", "vaterschaft", "sorgerecht", "unterhalt", "haushaltsbescheinigung"},
	},
	{
		Situation: "Schule und Ausbildung",
		LeiKa:     []string{"99022"},
		Words:     []string{"bafoeg", "ausbildung", "studium", "schule", "weiterbildung"},
	},
	{
		Situation: "Verlust und Diebstahl",
		LeiKa:     []string{"99089017"}, // Fundsachen
		Words:     []string{"verlust", "diebstahl", "fundsache"},
	},
	{
		Situation: "Jagd, Fischerei und Waffen",
		LeiKa:     []string{"99042", "99067", "99089004", "99089010", "99089018", "99089034", "99089045"},
		Words:     []string{"waffe", "munition", "jagd", "fischerei", "jugendfischerei", "feuerwerk", "sprengstoff", "wildtier", "feuerwaffe"},
	},
	{
		Situation: "Behinderung",
		LeiKa:     []string{"99108009"},
		Words:     []string{"behindert", "schwerbehindert"},
	},
}

// LifeSituations returns the life situations of a service, in rule order,
// from its LeiKa key (may be empty) and its names (all names a provider
// uses for it).
func LifeSituations(leikaKey string, names ...string) []string {
	folded := make([]string, len(names))
	for i, n := range names {
		folded[i] = " " + fold(n) + " "
	}
	var out []string
	for _, r := range lifeSituationRules {
		if r.matches(leikaKey, folded) {
			out = append(out, r.Situation)
		}
	}
	return out
}

func (r *lifeSituationRule) matches(leika string, foldedNames []string) bool {
	if leika != "" {
		for _, p := range r.NotLeiKa {
			if strings.HasPrefix(leika, p) {
				return false
			}
		}
		for _, p := range r.LeiKa {
			if strings.HasPrefix(leika, p) {
				return true
			}
		}
	}
	for _, n := range foldedNames {
		for _, w := range r.Words {
			if strings.Contains(n, " "+w) {
				return true
			}
		}
	}
	return false
}

// fold lower-cases s, spells out umlauts and ß, and turns everything that
// is not a letter or digit into single spaces.
func fold(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	space := true
	for _, r := range strings.ToLower(s) {
		switch r {
		case 'ä':
			b.WriteString("ae")
		case 'ö':
			b.WriteString("oe")
		case 'ü':
			b.WriteString("ue")
		case 'ß':
			b.WriteString("ss")
		default:
			if unicode.IsLetter(r) || unicode.IsDigit(r) {
				b.WriteRune(r)
			} else {
				if !space {
					b.WriteByte(' ')
				}
				space = true
				continue
			}
		}
		space = false
	}
	return strings.TrimRight(b.String(), " ")
}
