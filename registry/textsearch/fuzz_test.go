package textsearch

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzTerms(f *testing.F) {
	for _, s := range []string{
		"", "Gewerbe-Anmeldung", "FUEHRERSCHEIN Führerschein", "Straße",
		"<p>Sie haben&nbsp;eine <strong>Gewerbe</strong></p>", "31.12.2024 1.000,50",
		"\xff\xc3Hund", "Fu\u0308hrer", description,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkTerms(t, s) // non-empty, valid UTF-8, <= MaxTermLen, unique, QueryTerms ⊆ Terms
		folded := Fold(s)
		if !utf8.ValidString(folded) {
			t.Fatalf("Fold(%q) = %q: invalid UTF-8", s, folded)
		}
		if !strings.ContainsAny(s, "<&") {
			if again := Fold(folded); again != folded {
				t.Fatalf("Fold not idempotent on %q: %q then %q", s, folded, again)
			}
		}
	})
}
