package textsearch

import "strings"

// Fields is a set of document fields. The registry stores it as the value of
// a search index key (one byte), so the bit values must never change.
type Fields uint8

const (
	FieldName          Fields = 1 << iota // service name
	FieldKeywords                         // keywords / synonyms
	FieldLifeSituation                    // life situations (Lebenslagen)
	FieldDescription                      // description text
)

// Field weights: name > keywords > life situations > description.
var fieldWeights = [...]struct {
	f Fields
	w float64
}{
	{FieldName, 1.0},
	{FieldKeywords, 0.6},
	{FieldLifeSituation, 0.5},
	{FieldDescription, 0.25},
}

const (
	// prefixFactor scales a prefix match relative to an exact one.
	prefixFactor = 0.7
	// otherFieldsFactor scales the bonus for matches in further fields.
	otherFieldsFactor = 0.1
)

// maxTermValue is the value of a term that matched every field exactly.
var maxTermValue = termValue(TermMatch{Exact: FieldName | FieldKeywords | FieldLifeSituation | FieldDescription})

// TermMatch records, for one query term, the fields of a document holding
// an index term equal to the query term (Exact) or merely starting with it
// (Prefix). A field in both sets counts as exact.
type TermMatch struct {
	Exact, Prefix Fields
}

// Add records that the document has index term indexTerm in fields; it
// counts as exact if it equals queryTerm and as a prefix match if it starts
// with it. Other terms are ignored.
func (m *TermMatch) Add(queryTerm, indexTerm string, fields Fields) {
	switch {
	case indexTerm == queryTerm:
		m.Exact |= fields
	case strings.HasPrefix(indexTerm, queryTerm):
		m.Prefix |= fields
	}
}

// Matched reports whether the term matched any field.
func (m TermMatch) Matched() bool { return m.Exact|m.Prefix != 0 }

// termValue is the best field match of a term plus a small bonus for every
// further matching field.
func termValue(m TermMatch) float64 {
	best, sum := 0.0, 0.0
	for _, fw := range fieldWeights {
		v := 0.0
		switch {
		case m.Exact&fw.f != 0:
			v = fw.w
		case m.Prefix&fw.f != 0:
			v = fw.w * prefixFactor
		}
		sum += v
		best = max(best, v)
	}
	return best + otherFieldsFactor*(sum-best)
}

// Score ranks a document for a query, given one TermMatch per query term
// (in any order). The result is in [0, 1]; higher is better:
//
//   - a document matching more query terms always ranks above one matching
//     fewer, whatever the fields;
//   - among those, name matches weigh most, then keywords, then life
//     situations, then the description; an exact term match beats a prefix
//     match in the same field; matching in several fields adds a little.
//
// A document matching every term exactly in every field scores 1; no
// matches (or no terms) score 0.
func Score(matches []TermMatch) float64 {
	if len(matches) == 0 {
		return 0
	}
	matched, quality := 0, 0.0
	for _, m := range matches {
		if m.Matched() {
			matched++
			quality += termValue(m)
		}
	}
	if matched == 0 {
		return 0
	}
	n := float64(len(matches))
	// quality/(n*max) <= matched/n < 1 unless all matched, so the integer
	// part of matched+quality is the number of matched terms.
	return (float64(matched) + quality/(n*maxTermValue)) / (n + 1)
}

// Document is the searchable text of a catalogue entry.
type Document struct {
	Name           string
	Keywords       []string
	LifeSituations []string
	Description    string
}

// Index returns the index terms of d with the fields each occurs in: the
// registry's x/st/<term>/<leika> -> Fields entries.
func (d Document) Index() map[string]Fields {
	idx := make(map[string]Fields)
	add := func(f Fields, texts ...string) {
		for _, t := range texts {
			for _, term := range Terms(t) {
				idx[term] |= f
			}
		}
	}
	add(FieldName, d.Name)
	add(FieldKeywords, d.Keywords...)
	add(FieldLifeSituation, d.LifeSituations...)
	add(FieldDescription, d.Description)
	return idx
}

// Match returns one TermMatch per query term against an index built by
// [Document.Index]. It scans the whole index; the registry does the same
// with badger prefix scans.
func Match(queryTerms []string, index map[string]Fields) []TermMatch {
	ms := make([]TermMatch, len(queryTerms))
	for i, q := range queryTerms {
		for term, f := range index {
			ms[i].Add(q, term, f)
		}
	}
	return ms
}
