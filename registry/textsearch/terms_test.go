package textsearch

import (
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// finds reports whether every query term of query is a prefix of some index
// term of text, i.e. whether the registry would find text for query.
func finds(query, text string) bool {
	qs := QueryTerms(query)
	if len(qs) == 0 {
		return false
	}
	ts := Terms(text)
	for _, q := range qs {
		if !slices.ContainsFunc(ts, func(t string) bool { return strings.HasPrefix(t, q) }) {
			return false
		}
	}
	return true
}

func TestFinds(t *testing.T) {
	tests := []struct {
		name, query, text string
		want              bool
	}{
		{name: "anmelden finds Anmeldung", query: "anmelden", text: "Anmeldung", want: true},
		{name: "anmelden finds Gewerbe-Anmeldung", query: "anmelden", text: "Gewerbe-Anmeldung", want: true},
		{name: "anmelden finds Gewerbeanmeldung via joined query", query: "Gewerbe", text: "Gewerbeanmeldung", want: true},
		{name: "ummelden finds Ummeldung", query: "ummelden", text: "Ummeldung", want: true},
		{name: "Umzug finds umzug", query: "Umzug", text: "umzug", want: true},
		{name: "UMZUG finds Umzug", query: "UMZUG", text: "Umzug", want: true},
		{name: "fuehrerschein finds Führerschein", query: "fuehrerschein", text: "Führerschein beantragen", want: true},
		{name: "Führerschein finds Führerschein", query: "Führerschein", text: "Führerschein beantragen", want: true},
		{name: "fuhrerschein finds Führerschein", query: "fuhrerschein", text: "Führerschein beantragen", want: true},
		{name: "Führerschein finds FUEHRERSCHEIN", query: "Führerschein", text: "FUEHRERSCHEIN", want: true},
		{name: "strasse finds Straße", query: "strasse", text: "Straße", want: true},
		{name: "Straße finds Strassenreinigung", query: "Straße", text: "Strassenreinigung", want: true},
		{name: "hund finds Hundesteuer", query: "hund", text: "Hundesteuer", want: true},
		{name: "Hunde finds Hundesteuer", query: "Hunde", text: "Hundesteuer", want: true},
		{name: "Steuern finds Steuer", query: "Steuern", text: "Steuer", want: true},
		{name: "Steuer finds Steuern", query: "Steuer", text: "Steuern", want: true},
		{name: "beantragen finds Antrag? no: different stem", query: "beantragen", text: "Antrag", want: false},
		{name: "Anträge finds Antrag", query: "Anträge", text: "Antrag stellen", want: true},
		{name: "Ärzte finds Aerztekammer", query: "Ärzte", text: "Aerztekammer", want: true},
		{name: "half typed word", query: "Anmeldu", text: "Anmeldung", want: true},
		{name: "half typed transliteration", query: "Fue", text: "Führerschein", want: true},
		{name: "two words", query: "Wohnung anmelden", text: "Anmeldung einer Wohnung", want: true},
		{name: "hyphenated query finds parts", query: "Wohnungs-Anmeldung", text: "Anmeldung einer Wohnung", want: true},
		{name: "hyphenated query finds hyphenated", query: "Gewerbe-Anmeldung", text: "Gewerbe-Anmeldung", want: true},
		{name: "joined form finds hyphenated", query: "Gewerbeanmeldung", text: "Gewerbe-Anmeldung", want: true},
		{name: "html description", query: "gewerbe", text: "<p>Sie haben&nbsp;eine <strong>Gewerbe</strong></p>", want: true},
		{name: "entity umlaut", query: "Uebersicht", text: "&Uuml;bersicht", want: true},
		{name: "number", query: "2024", text: "Frist bis 31.12.2024", want: true},
		{name: "whole date", query: "31.12.2024", text: "Frist bis 31.12.2024", want: true},
		{name: "mixed token", query: "b96", text: "Ausbau der B96", want: true},
		{name: "unrelated", query: "hund", text: "Umzug", want: false},
		{name: "compound tail not found", query: "Steuer", text: "Hundesteuer", want: false},
		{name: "stop word query finds nothing", query: "der die das", text: "der die das", want: false},
		{name: "stop word not indexed", query: "einer", text: "Anmeldung einer Wohnung", want: false},
		{name: "empty query", query: "", text: "Anmeldung", want: false},
		{name: "punctuation query", query: "?!-", text: "Anmeldung", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := finds(tt.query, tt.text); got != tt.want {
				t.Errorf("finds(%q, %q) = %v, want %v (query terms %q, index terms %q)",
					tt.query, tt.text, got, tt.want, QueryTerms(tt.query), Terms(tt.text))
			}
		})
	}
}

func TestTerms(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{name: "empty", in: "", want: nil},
		{name: "only punctuation", in: " ...,;!? -- / & <> ", want: nil},
		{name: "stem and word", in: "Anmeldung", want: []string{"anmeld", "anmeldung"}},
		{name: "stem equals word", in: "Umzug", want: []string{"umzug"}},
		{name: "stop words dropped", in: "Anmeldung einer Wohnung", want: []string{"anmeld", "anmeldung", "wohnung"}},
		{name: "folded stop words", in: "für Fuer FUR über und", want: nil},
		{name: "one letter dropped", in: "a b c 1 2 x-y", want: []string{"xy"}},
		{name: "duplicates dropped", in: "Anmeldung anmelden ANMELDUNG", want: []string{"anmeld", "anmeldung", "anmelden"}},
		{name: "hyphenated", in: "Gewerbe-Anmeldung", want: []string{"gewerb", "gewerbe", "anmeld", "anmeldung", "gewerbeanmeld", "gewerbeanmeldung"}},
		{name: "hyphen chain", in: "Kfz-Haftpflicht-Versicherung", want: []string{"kfz", "haftpflicht", "versicher", "versicherung", "kfzhaftpflichtversicher", "kfzhaftpflichtversicherung"}},
		{name: "dangling hyphens", in: "-Gewerbe- An--meldung", want: []string{"gewerb", "gewerbe", "meldung"}}, // "an" is a stop word
		{name: "html", in: "<p>Sie haben&nbsp;eine <strong>Gewerbe</strong></p>", want: []string{"gewerb", "gewerbe"}},
		{name: "numbers", in: "§ 14 GewO, 1.000 Euro, 12,50 EUR", want: []string{"14", "gewo", "000", "1000", "euro", "12", "50", "1250", "eur"}},
		{name: "date", in: "bis 31.12.2024.", want: []string{"31", "12", "2024", "31122024"}},
		{name: "umlauts", in: "Führerschein für Ärzte", want: []string{"fuhrerschein", "arzt", "arzte"}},
		{name: "invalid utf8 splits", in: "Hund\xffSteuer", want: []string{"hund", "steu", "steuer"}},
		{name: "non latin", in: "Ελληνικά Привет", want: []string{"ελληνικά", "привет"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Terms(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("Terms(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestQueryTerms(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{name: "empty", in: "", want: nil},
		{name: "stem only", in: "Anmeldung", want: []string{"anmeld"}},
		{name: "stop words dropped", in: "Wie melde ich einen Hund an?", want: []string{"meld", "hund"}},
		{name: "hyphenated yields parts", in: "Gewerbe-Anmeldung", want: []string{"gewerb", "anmeld"}},
		{name: "numbers joined", in: "1.000", want: []string{"1000"}},
		{name: "all parts dropped falls back to joined", in: "A-1", want: []string{"a1"}},
		{name: "transliteration", in: "FUEHRERSCHEIN", want: []string{"fuhrerschein"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := QueryTerms(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("QueryTerms(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestStopWordsNotIndexed(t *testing.T) {
	for _, w := range strings.Fields(stopWordList) {
		if got := Terms(w); len(got) != 0 {
			t.Errorf("Terms(%q) = %q, want none", w, got)
		}
		if !IsStopWord(strings.ToUpper(w)) {
			t.Errorf("IsStopWord(%q) = false", strings.ToUpper(w))
		}
	}
	for _, w := range []string{"Ware", "Waren", "Hund", "Umzug", "Steuer"} {
		if IsStopWord(w) {
			t.Errorf("IsStopWord(%q) = true", w)
		}
	}
}

// Folding ae/oe/ue must not break ordinary words: each must find itself,
// its inflections, and the compounds it starts.
func TestOrdinaryWordsMatchThemselves(t *testing.T) {
	tests := []struct {
		name  string
		forms []string // the first form must find all forms
	}{
		{name: "steuer", forms: []string{"Steuer", "Steuern", "STEUER", "Steuererklärung"}},
		{name: "feuer", forms: []string{"Feuer", "Feuerwehr", "Feuers"}},
		{name: "bauer", forms: []string{"Bauer", "Bauern"}},
		{name: "neue", forms: []string{"neue", "neuen", "neuer", "Neues"}},
		{name: "frauen", forms: []string{"Frau", "Frauen", "Frauenhaus"}},
		{name: "aktuell", forms: []string{"aktuell", "aktuelle", "Aktuelles"}},
		{name: "michael", forms: []string{"Michael", "MICHAEL"}},
		{name: "poesie", forms: []string{"Poesie"}},
		{name: "idee", forms: []string{"Idee", "Ideen"}},
		{name: "kaffee", forms: []string{"Kaffee"}},
		{name: "museum", forms: []string{"Museum", "Museumsbesuch"}},
		{name: "zoo", forms: []string{"Zoo", "Zoos"}},
		{name: "gebäude", forms: []string{"Gebäude", "Gebaeude", "Gebäudeversicherung"}},
		{name: "wohnung", forms: []string{"Wohnung", "Wohnungen", "Wohnungsgeberbestätigung"}},
		{name: "ausweis", forms: []string{"Personalausweis", "Personalausweise", "Personalausweises"}},
		{name: "kind", forms: []string{"Kind", "Kinder", "Kindergeld", "Kindes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, f := range tt.forms {
				if !finds(tt.forms[0], f) {
					t.Errorf("%q does not find %q (query %q, index %q)", tt.forms[0], f, QueryTerms(tt.forms[0]), Terms(f))
				}
				if !finds(f, f) {
					t.Errorf("%q does not find itself (query %q, index %q)", f, QueryTerms(f), Terms(f))
				}
			}
		})
	}
}

func TestTermsInvariants(t *testing.T) {
	for _, s := range []string{
		"", "\xff\xfe\xfd", "\xc3", "Hund\x00steuer", strings.Repeat("ä", 100),
		strings.Repeat("Donaudampfschifffahrtsgesellschaftskapitän", 5),
		strings.Repeat("a-", 200), strings.Repeat("1.", 200), "<" + strings.Repeat("x", 70) + ">",
	} {
		checkTerms(t, s)
	}
}

// checkTerms asserts the guarantees of Terms and QueryTerms for s.
func checkTerms(t *testing.T, s string) {
	t.Helper()
	ts := Terms(s)
	seen := map[string]bool{}
	for _, term := range ts {
		switch {
		case term == "":
			t.Fatalf("Terms(%q): empty term", s)
		case len(term) > MaxTermLen:
			t.Fatalf("Terms(%q): term %q longer than %d bytes", s, term, MaxTermLen)
		case !utf8.ValidString(term):
			t.Fatalf("Terms(%q): invalid UTF-8 term %q", s, term)
		case strings.ContainsAny(term, "/\x00 "):
			t.Fatalf("Terms(%q): term %q contains a separator", s, term)
		case seen[term]:
			t.Fatalf("Terms(%q): duplicate term %q", s, term)
		}
		seen[term] = true
	}
	for _, q := range QueryTerms(s) {
		if !seen[q] {
			t.Fatalf("QueryTerms(%q) = %q: %q not in Terms = %q", s, QueryTerms(s), q, ts)
		}
	}
}

func TestTermsLinear(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	const size = 1 << 20
	shapes := []struct {
		name string
		unit string
	}{
		{name: "prose", unit: "Die Anmeldung einer Wohnung ist innerhalb von zwei Wochen nach dem Einzug erforderlich. "},
		{name: "one word", unit: "a"},
		{name: "vowels", unit: "aua"}, // the stemmer rewrites u between vowels
		{name: "longest stemmed words", unit: strings.Repeat("aua", maxStemLen/3) + "en "},
		{name: "hyphen chain", unit: "ab-"},
		{name: "number chain", unit: "12."},
		{name: "unclosed tags", unit: "<a"},
		{name: "tags", unit: "<b>x</b>"},
		{name: "entities", unit: "&uuml;&"},
		{name: "invalid utf8", unit: "\xff\xc3a"},
		{name: "scripts", unit: "<script>"},
	}
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			small := strings.Repeat(sh.unit, size/8/len(sh.unit))
			big := strings.Repeat(sh.unit, size/len(sh.unit))
			ts, tb := minTime(func() { Terms(small) }), minTime(func() { Terms(big) })
			// 8x the input: linear is ~8x, quadratic ~64x.
			if tb > 10*time.Second || (tb > 20*time.Millisecond && tb > 24*ts) {
				t.Errorf("1 MB took %v, 128 KB took %v: not linear", tb, ts)
			}
		})
	}
}

func minTime(f func()) time.Duration {
	best := time.Duration(1<<63 - 1)
	for range 3 {
		start := time.Now()
		f()
		best = min(best, time.Since(start))
	}
	return best
}

// description is a realistic ~2 KB service description from a municipal
// catalogue, with the light HTML such texts carry.
const description = `<p>Wenn Sie ein Gewerbe beginnen, müssen Sie dies der zuständigen Behörde gleichzeitig anzeigen. Die Gewerbeanmeldung (Gewerbe-Anzeige nach § 14 GewO) ist bei der Gemeinde bzw. Stadt vorzunehmen, in deren Bezirk der Betrieb oder die Zweigniederlassung liegt.</p>
<p>Die Anzeigepflicht gilt auch für den Betrieb einer Zweigniederlassung oder einer unselbständigen Zweigstelle sowie für die Verlegung des Betriebes in einen anderen Meldebezirk, den Wechsel oder die Ausdehnung des Gegenstandes des Gewerbes und die Aufgabe des Betriebes.</p>
<h3>Voraussetzungen</h3>
<ul><li>Sie sind volljährig bzw. haben die Genehmigung des Familiengerichts.</li>
<li>Für erlaubnispflichtige Gewerbe (z.&nbsp;B. Gaststätten, Bewachungsgewerbe, Makler) liegt die Erlaubnis vor.</li>
<li>Ausländische Staatsangehörige aus Nicht-EU-Staaten benötigen eine Aufenthaltserlaubnis, die die selbständige Erwerbstätigkeit gestattet.</li></ul>
<h3>Erforderliche Unterlagen</h3>
<ul><li>gültiger Personalausweis oder Reisepass mit Meldebestätigung</li>
<li>bei juristischen Personen: Auszug aus dem Handelsregister</li>
<li>bei erlaubnispflichtigen Tätigkeiten: Erlaubnis bzw. Handwerkskarte</li></ul>
<h3>Gebühren</h3>
<p>Die Gebühr für die Gewerbeanmeldung beträgt 26,00&nbsp;Euro, für die Ummeldung 20,00&nbsp;Euro und für die Abmeldung 15,00&nbsp;Euro. Die Online-Anmeldung über das Serviceportal ist günstiger.</p>
<h3>Fristen</h3>
<p>Die Anzeige muss gleichzeitig mit dem Beginn der Tätigkeit erfolgen. Verstöße gegen die Anzeigepflicht können mit einem Bußgeld geahndet werden. Nach der Anmeldung erhalten Sie eine Empfangsbestätigung (Gewerbeschein); Finanzamt, Berufsgenossenschaft, Industrie- und Handelskammer sowie Handwerkskammer werden automatisch informiert.</p>
<p>Weitere Informationen erhalten Sie beim Gewerbeamt Ihrer Stadtverwaltung &ndash; Öffnungszeiten: Mo&ndash;Fr 8:00&ndash;12:00 Uhr.</p>`

func BenchmarkTerms(b *testing.B) {
	b.SetBytes(int64(len(description)))
	b.ReportAllocs()
	for b.Loop() {
		Terms(description)
	}
}

func BenchmarkQueryTerms(b *testing.B) {
	q := "Gewerbe anmelden Öffnungszeiten"
	b.ReportAllocs()
	for b.Loop() {
		QueryTerms(q)
	}
}
