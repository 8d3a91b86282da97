package textsearch

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestFold(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "empty", in: "", want: ""},
		{name: "umlaut", in: "Führerschein", want: "fuhrerschein"},
		{name: "transliterated upper", in: "FUEHRERSCHEIN", want: "fuhrerschein"},
		{name: "plain", in: "fuhrerschein", want: "fuhrerschein"},
		{name: "decomposed umlaut", in: "Fu\u0308hrerschein", want: "fuhrerschein"},
		{name: "eszett", in: "Straße", want: "strasse"},
		{name: "capital eszett", in: "STRAẞE", want: "strasse"},
		{name: "ae initial", in: "Aerzte", want: "arzte"},
		{name: "ä initial", in: "Ärzte", want: "arzte"},
		{name: "oe", in: "Oeffnungszeiten", want: "offnungszeiten"},
		{name: "äu", in: "Gebäude", want: "gebaude"},
		{name: "aeu", in: "Gebaeude", want: "gebaude"},
		{name: "eue kept", in: "Steuer", want: "steuer"},
		{name: "aue kept", in: "Bauer", want: "bauer"},
		{name: "e after ue dropped once", in: "uee", want: "u"},
		{name: "no collapse across space", in: "Kita Eltern", want: "kita eltern"},
		{name: "accents", in: "Café Łódź Ærø", want: "cafe lodz aro"},
		{name: "whitespace collapsed", in: "  a\t\n b\u00a0\u3000c  ", want: "a b c"},
		{name: "control chars", in: "a\x00b\x1fc\u0085d", want: "a b c d"},
		{name: "invalid utf8", in: "ab\xffcd\xc3", want: "ab cd"},
		{name: "replacement char", in: "ab\ufffdcd", want: "ab cd"},
		{name: "soft hyphen and zero width", in: "Gewerbe\u00adan\u200bmel\ufeffdung", want: "gewerbeanmeldung"},
		{name: "unicode hyphens", in: "Gewerbe\u2010Anmeldung\u2011x", want: "gewerbe-anmeldung-x"},
		{name: "punctuation kept", in: "Kfz-Zulassung (Pkw), § 14!", want: "kfz-zulassung (pkw), § 14!"},
		{name: "html", in: "<p>Sie haben&nbsp;eine <strong>Gewerbe</strong></p>", want: "sie haben eine gewerbe"},
		{name: "html entities", in: "&Uuml;ber &uuml;ber &#252;ber &#xFC;ber &amp; &lt;b&gt;", want: "uber uber uber uber & <b>"},
		{name: "html br splits words", in: "Anmeldung<br/>Ummeldung", want: "anmeldung ummeldung"},
		{name: "html comment", in: "a<!-- Kommentar -->b", want: "a b"},
		{name: "script dropped", in: "a<script type=x>var s = '<b>x</b>';</script>b<STYLE>p{}</STYLE >c", want: "a b c"},
		{name: "unterminated script", in: "a<script>alert(1)", want: "a"},
		{name: "less than not a tag", in: "a < b, x<3", want: "a < b, x<3"},
		{name: "unclosed tag kept", in: "a <b c", want: "a <b c"},
		{name: "only punctuation", in: "...!?--", want: "...!?--"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Fold(tt.in); got != tt.want {
				t.Errorf("Fold(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestFoldEquivalent(t *testing.T) {
	tests := []struct {
		name  string
		forms []string
	}{
		{name: "führerschein", forms: []string{"Führerschein", "FUEHRERSCHEIN", "fuhrerschein", "Fuehrerschein", "FÜHRERSCHEIN", "Fu\u0308hrerschein"}},
		{name: "straße", forms: []string{"Straße", "strasse", "STRASSE", "STRAẞE"}},
		{name: "ärztliche", forms: []string{"ärztliche", "aerztliche", "Ärztliche", "arztliche"}},
		{name: "häuser", forms: []string{"Häuser", "Haeuser", "hauser"}},
		{name: "öffnung", forms: []string{"Öffnung", "Oeffnung", "offnung"}},
		{name: "über html", forms: []string{"über", "&uuml;ber", "<b>ueber</b>", "UEBER"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := Fold(tt.forms[0])
			for _, f := range tt.forms[1:] {
				if got := Fold(f); got != want {
					t.Errorf("Fold(%q) = %q, want %q (= Fold(%q))", f, got, want, tt.forms[0])
				}
			}
		})
	}
}

func TestFoldIdempotent(t *testing.T) {
	for _, s := range []string{
		"Führerschein FUEHRERSCHEIN", "Steuer Bauer neue Treue", "uee aae ooe", "Gebaeude",
		"Ärzte Æsir Œuvre", "ab\xffcd", "  x  ", "Fu\u0308e", "a\u00ade",
	} {
		f := Fold(s)
		if g := Fold(f); g != f {
			t.Errorf("Fold(Fold(%q)) = %q, Fold = %q", s, g, f)
		}
		if !utf8.ValidString(f) {
			t.Errorf("Fold(%q) = %q: invalid UTF-8", s, f)
		}
	}
}

func TestFoldLongHTML(t *testing.T) {
	// Many tag starts with no closing '>' must not be quadratic.
	in := strings.Repeat("<a", 1<<19)
	if got := Fold(in); got != in {
		t.Errorf("Fold changed unclosed tags: len %d, want %d", len(got), len(in))
	}
}
