package textsearch

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/blevesearch/snowballstem"
	"github.com/blevesearch/snowballstem/german"
)

// MaxTermLen caps the length of a term in bytes. Longer terms are cut at a
// rune boundary, on both the index and the query side.
const MaxTermLen = 64

// maxStemLen is the longest word handed to the stemmer. The Snowball runtime
// rebuilds the string on every replacement, so stemming is quadratic in the
// worst case; longer words are not stemmed (they are cut to MaxTermLen
// anyway).
const maxStemLen = 4 * MaxTermLen

// Terms splits text into folded, stemmed index terms, dropping German stop
// words ("der", "die", "und", "für", ...), 1-letter tokens, and duplicates
// (order of first appearance kept). Numbers are kept as terms. Compound-word
// friendly: it also emits the unstemmed folded word when it differs from the
// stem, and for hyphenated words both the parts and the joined form.
//
// Terms consist of letters, digits and combining marks only (never '/' or
// NUL), are valid UTF-8, and are 1..MaxTermLen bytes long.
func Terms(text string) []string {
	a := analyzer{}
	a.run(Fold(text))
	return a.out
}

// QueryTerms analyses a user query the same way as [Terms], for prefix
// lookup: each returned term is matched as a prefix of indexed terms ("hund"
// finds "hundesteuer", "anmelden" finds "anmeldung"). One term is returned
// per query word (its stem); a hyphenated query word yields its parts.
// Every term QueryTerms(s) returns is also in Terms(s).
func QueryTerms(query string) []string {
	a := analyzer{query: true}
	a.run(Fold(query))
	return a.out
}

type piece struct {
	start, end int
	number     bool // joined to the previous piece by '.' or ',' between digits
}

type analyzer struct {
	query  bool
	out    []string
	seen   map[string]struct{}
	pieces []piece
	buf    strings.Builder
}

func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)
}

func isDigitRune(r rune) bool { return unicode.IsDigit(r) }

// run tokenises folded text. A group is a maximal sequence of tokens joined
// by connectors: '-' between word runes, '.' or ',' between digits.
func (a *analyzer) run(s string) {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if !isWordRune(r) {
			i += size
			continue
		}
		a.pieces = a.pieces[:0]
		number := false
		for {
			start := i
			for i < len(s) {
				r, size := utf8.DecodeRuneInString(s[i:])
				if !isWordRune(r) {
					break
				}
				i += size
			}
			a.pieces = append(a.pieces, piece{start, i, number})
			if i+1 >= len(s) {
				break
			}
			next, _ := utf8.DecodeRuneInString(s[i+1:])
			if s[i] == '-' && isWordRune(next) {
				number = false
			} else if (s[i] == '.' || s[i] == ',') && isDigitRune(next) && endsWithDigit(s[start:i]) {
				number = true
			} else {
				break
			}
			i++ // skip the connector
		}
		a.group(s)
	}
}

func endsWithDigit(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return isDigitRune(r)
}

// group emits the terms of one token group held in a.pieces. A part is a
// run of pieces joined by number connectors ("01.01.2024").
func (a *analyzer) group(s string) {
	ps := a.pieces
	if a.query {
		// One term per part (numbers joined); if all parts are dropped
		// (e.g. "A-1"), the joined group.
		n := len(a.out)
		for i := 0; i < len(ps); {
			j := i + 1
			for j < len(ps) && ps[j].number {
				j++
			}
			a.word(a.join(s, ps[i:j]))
			i = j
		}
		if len(a.out) == n && len(ps) > 1 {
			a.word(a.join(s, ps))
		}
		return
	}
	for _, p := range ps {
		a.word(s[p.start:p.end])
	}
	if len(ps) == 1 {
		return
	}
	hyphen := false
	for i := 0; i < len(ps); {
		j := i + 1
		for j < len(ps) && ps[j].number {
			j++
		}
		if j-i > 1 {
			a.word(a.join(s, ps[i:j]))
		}
		hyphen = hyphen || i > 0
		i = j
	}
	if hyphen {
		a.word(a.join(s, ps))
	}
}

func (a *analyzer) join(s string, ps []piece) string {
	if len(ps) == 1 {
		return s[ps[0].start:ps[0].end]
	}
	a.buf.Reset()
	for _, p := range ps {
		a.buf.WriteString(s[p.start:p.end])
	}
	return a.buf.String()
}

// word emits the terms of one folded token: the stem, plus (index side) the
// token itself if it differs.
func (a *analyzer) word(w string) {
	if utf8.RuneCountInString(w) < 2 {
		return
	}
	if _, stop := stopWords[w]; stop {
		return
	}
	stem := w
	if len(w) <= maxStemLen && !strings.ContainsFunc(w, isDigitRune) {
		stem = Stem(w)
	}
	a.emit(truncate(stem))
	if !a.query {
		a.emit(truncate(w))
	}
}

func (a *analyzer) emit(t string) {
	if t == "" {
		return
	}
	if a.seen == nil {
		a.seen = make(map[string]struct{})
	}
	if _, dup := a.seen[t]; dup {
		return
	}
	a.seen[t] = struct{}{}
	a.out = append(a.out, t)
}

// Stem returns the Snowball German stem of a folded word. It is a prefix of
// w. An empty stem is replaced by w.
func Stem(w string) string {
	env := snowballstem.NewEnv(w)
	german.Stem(env)
	if s := env.Current(); s != "" {
		return s
	}
	return w
}

// truncate cuts s to at most MaxTermLen bytes at a rune boundary.
func truncate(s string) string {
	if len(s) <= MaxTermLen {
		return s
	}
	n := MaxTermLen
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
