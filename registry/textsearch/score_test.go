package textsearch

import (
	"math"
	"slices"
	"testing"
)

const allFields = FieldName | FieldKeywords | FieldLifeSituation | FieldDescription

func TestScoreOrder(t *testing.T) {
	exact := func(f Fields) TermMatch { return TermMatch{Exact: f} }
	prefix := func(f Fields) TermMatch { return TermMatch{Prefix: f} }
	none := TermMatch{}
	tests := []struct {
		name          string
		better, worse []TermMatch
	}{
		{name: "name beats keywords", better: []TermMatch{exact(FieldName)}, worse: []TermMatch{exact(FieldKeywords)}},
		{name: "keywords beat description", better: []TermMatch{exact(FieldKeywords)}, worse: []TermMatch{exact(FieldDescription)}},
		{name: "life situation beats description", better: []TermMatch{exact(FieldLifeSituation)}, worse: []TermMatch{exact(FieldDescription)}},
		{name: "keywords beat life situation", better: []TermMatch{exact(FieldKeywords)}, worse: []TermMatch{exact(FieldLifeSituation)}},
		{name: "name prefix beats keyword exact", better: []TermMatch{prefix(FieldName)}, worse: []TermMatch{exact(FieldKeywords)}},
		{name: "exact beats prefix in name", better: []TermMatch{exact(FieldName)}, worse: []TermMatch{prefix(FieldName)}},
		{name: "exact beats prefix in description", better: []TermMatch{exact(FieldDescription)}, worse: []TermMatch{prefix(FieldDescription)}},
		{name: "exact and prefix counts as exact", better: []TermMatch{{Exact: FieldName, Prefix: FieldName}}, worse: []TermMatch{prefix(FieldName)}},
		{name: "more fields beat fewer", better: []TermMatch{exact(FieldName | FieldDescription)}, worse: []TermMatch{exact(FieldName)}},
		{name: "any match beats none", better: []TermMatch{prefix(FieldDescription)}, worse: []TermMatch{none}},
		{
			name:   "all terms in description beat some in name",
			better: []TermMatch{prefix(FieldDescription), prefix(FieldDescription)},
			worse:  []TermMatch{exact(allFields), none},
		},
		{
			name:   "two of three beat one of three",
			better: []TermMatch{prefix(FieldDescription), prefix(FieldDescription), none},
			worse:  []TermMatch{exact(allFields), none, none},
		},
		{
			name:   "same coverage: name beats description",
			better: []TermMatch{exact(FieldName), prefix(FieldDescription)},
			worse:  []TermMatch{exact(FieldDescription), prefix(FieldDescription)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, w := Score(tt.better), Score(tt.worse)
			if !(b > w) {
				t.Errorf("Score(%v) = %v, not above Score(%v) = %v", tt.better, b, tt.worse, w)
			}
		})
	}
}

func TestScoreRange(t *testing.T) {
	tests := []struct {
		name    string
		matches []TermMatch
		want    float64
	}{
		{name: "no terms", matches: nil, want: 0},
		{name: "no match", matches: []TermMatch{{}, {}}, want: 0},
		{name: "perfect one term", matches: []TermMatch{{Exact: allFields}}, want: 1},
		{name: "perfect two terms", matches: []TermMatch{{Exact: allFields}, {Exact: allFields}}, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Score(tt.matches); math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("Score(%v) = %v, want %v", tt.matches, got, tt.want)
			}
		})
	}
	// Every combination stays in [0, 1].
	for e := range Fields(16) {
		for p := range Fields(16) {
			if s := Score([]TermMatch{{Exact: e, Prefix: p}, {}}); s < 0 || s > 1 {
				t.Fatalf("Score out of range: %v", s)
			}
		}
	}
}

func TestTermMatchAdd(t *testing.T) {
	tests := []struct {
		name          string
		query, term   string
		exact, prefix Fields
	}{
		{name: "exact", query: "hund", term: "hund", exact: FieldName},
		{name: "prefix", query: "hund", term: "hundesteuer", prefix: FieldName},
		{name: "no match", query: "hund", term: "umzug"},
		{name: "longer query", query: "hundesteuer", term: "hund"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m TermMatch
			m.Add(tt.query, tt.term, FieldName)
			if m.Exact != tt.exact || m.Prefix != tt.prefix {
				t.Errorf("Add(%q, %q) = %+v, want exact %v prefix %v", tt.query, tt.term, m, tt.exact, tt.prefix)
			}
		})
	}
}

// End to end: index a small catalogue and rank it for queries.
func TestRanking(t *testing.T) {
	docs := map[string]Document{
		"gewerbe-anmeldung": {
			Name:           "Gewerbe-Anmeldung",
			Keywords:       []string{"Gewerbeschein", "Selbständigkeit"},
			LifeSituations: []string{"Unternehmensgründung"},
			Description:    "<p>Wenn Sie ein Gewerbe beginnen, müssen Sie es anmelden.</p>",
		},
		"wohnsitz-anmeldung": {
			Name:           "Anmeldung einer Wohnung",
			Keywords:       []string{"Umzug", "Meldebescheinigung"},
			LifeSituations: []string{"Umzug"},
			Description:    "Nach einem Umzug müssen Sie sich innerhalb von zwei Wochen anmelden.",
		},
		"hundesteuer": {
			Name:        "Hundesteuer Anmeldung",
			Keywords:    []string{"Hund", "Steuer"},
			Description: "Wer einen Hund hält, muss ihn zur Hundesteuer anmelden.",
		},
		"fuehrerschein": {
			Name:        "Führerschein beantragen",
			Keywords:    []string{"Fahrerlaubnis"},
			Description: "Den Führerschein beantragen Sie bei der Fahrerlaubnisbehörde.",
		},
	}
	index := map[string]map[string]Fields{}
	for id, d := range docs {
		index[id] = d.Index()
	}
	rank := func(query string) []string {
		q := QueryTerms(query)
		type hit struct {
			id    string
			score float64
		}
		var hits []hit
		for id, idx := range index {
			if s := Score(Match(q, idx)); s > 0 {
				hits = append(hits, hit{id, s})
			}
		}
		slices.SortFunc(hits, func(a, b hit) int {
			if a.score != b.score {
				if a.score > b.score {
					return -1
				}
				return 1
			}
			return 0
		})
		var ids []string
		for _, h := range hits {
			ids = append(ids, h.id)
		}
		return ids
	}
	tests := []struct {
		name, query string
		wantFirst   string
		wantHits    int
	}{
		{name: "gewerbe anmelden", query: "Gewerbe anmelden", wantFirst: "gewerbe-anmeldung", wantHits: 3},
		{name: "umzug", query: "UMZUG", wantFirst: "wohnsitz-anmeldung", wantHits: 1},
		{name: "hund", query: "hund", wantFirst: "hundesteuer", wantHits: 1},
		{name: "fuehrerschein", query: "fuehrerschein", wantFirst: "fuehrerschein", wantHits: 1},
		{name: "wohnung anmelden", query: "Wohnung anmelden", wantFirst: "wohnsitz-anmeldung", wantHits: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rank(tt.query)
			if len(got) != tt.wantHits || got[0] != tt.wantFirst {
				t.Errorf("rank(%q) = %q, want %d hits starting with %q", tt.query, got, tt.wantHits, tt.wantFirst)
			}
		})
	}
}

func TestFieldBitsStable(t *testing.T) {
	// The values are stored in the badger index; changing them corrupts it.
	if FieldName != 1 || FieldKeywords != 2 || FieldLifeSituation != 4 || FieldDescription != 8 {
		t.Fatal("Fields bit values changed")
	}
}
