package sampledata

import (
	"strings"
	"testing"
)

func TestParseFees(t *testing.T) {
	type fee struct {
		desc    string
		lo, hi  int64
		free    bool
		text    string
		numbers bool
	}
	for _, tc := range []struct {
		html string
		want []fee
	}{
		{"<p>50 bis 60 Euro (abhängig von der Rechtsform)<br><br></p>", []fee{{"", 5000, 6000, false, "50 bis 60 Euro (abhängig von der Rechtsform)", true}}},
		{"40 Euro", []fee{{"", 4000, 0, false, "40 Euro", true}}},
		{"ab 20,50 Euro", []fee{{"", 2050, 0, false, "ab 20,50 Euro", true}}},
		{" 600 - 1000 Euro", []fee{{"", 60000, 100000, false, "600 - 1000 Euro", true}}},
		{"1.200,5 EUR", []fee{{"", 120050, 0, false, "1.200,5 EUR", true}}},
		{"Erwachsene: bis 100 Euro", []fee{{"Erwachsene", 0, 10000, false, "Erwachsene: bis 100 Euro", true}}},
		{"ab 40 Euro (wenn besondere Unterlagen - bis zu 250 Euro)", []fee{{"", 4000, 25000, false, "ab 40 Euro (wenn besondere Unterlagen - bis zu 250 Euro)", true}}},
		{"Eine Auskunft kostet 10 Euro, beziehungsweise 15 Euro.", []fee{{"", 1000, 1500, false, "Eine Auskunft kostet 10 Euro, beziehungsweise 15 Euro.", true}}},
		{"14–16 Jahre: 352 Euro", []fee{{"14–16 Jahre", 35200, 0, false, "14–16 Jahre: 352 Euro", true}}},
		{"<p>gebührenfrei</p>", []fee{{"", 0, 0, true, "gebührenfrei", true}}},
		{" Es fallen keine Gebühren an. ", []fee{{"", 0, 0, true, "Es fallen keine Gebühren an.", true}}},
		{"Keine Gebühr", []fee{{"", 0, 0, true, "Keine Gebühr", true}}},
		{"Die Beratung ist kostenlos.", []fee{{"", 0, 0, true, "Die Beratung ist kostenlos.", true}}},
		{"Bescheinigung für Rentenzwecke: gebührenfrei", []fee{{"Bescheinigung für Rentenzwecke", 0, 0, true, "Bescheinigung für Rentenzwecke: gebührenfrei", true}}},
		// An amount and a "free" word: ambiguous, kept as text.
		{"Gegen Einsendung eines mit 1,80 Euro frankierten Briefes kostenlos.", []fee{{"", 0, 0, false, "Gegen Einsendung eines mit 1,80 Euro frankierten Briefes kostenlos.", false}}},
		{"Die Höhe der Gebühr ist abhängig vom Härtefall.", []fee{{"", 0, 0, false, "Die Höhe der Gebühr ist abhängig vom Härtefall.", false}}},
		{"", nil},
		// Headings prefix the fees below them, up to a paragraph break.
		{`<p><strong>Online-Gebühr: Online-Zahlung möglich</strong><br>  Neufahrzeug: ab 20,50 Euro<br>
  Tageszulassung: ab 25,50 Euro</p> <p><strong>vor-Ort-Gebühr: nur EC-Karte</strong><br>Neufahrzeug: ab 30 Euro</p><p>Bitte beachten.<br>Danke &amp; tschüss</p>`, []fee{
			{"Online-Gebühr (Online-Zahlung möglich) – Neufahrzeug", 2050, 0, false, "Neufahrzeug: ab 20,50 Euro", true},
			{"Online-Gebühr (Online-Zahlung möglich) – Tageszulassung", 2550, 0, false, "Tageszulassung: ab 25,50 Euro", true},
			{"vor-Ort-Gebühr (nur EC-Karte) – Neufahrzeug", 3000, 0, false, "Neufahrzeug: ab 30 Euro", true},
			{"", 0, 0, false, "Bitte beachten.\nDanke & tschüss", false},
		}},
		{"<p>Fahrschulerlaubnis:<br>Natürliche Personen: 102 Euro<br><br>Zweigstellenerlaubnis: 84,40 Euro</p>", []fee{
			{"Fahrschulerlaubnis – Natürliche Personen", 10200, 0, false, "Natürliche Personen: 102 Euro", true},
			{"Zweigstellenerlaubnis", 8440, 0, false, "Zweigstellenerlaubnis: 84,40 Euro", true},
		}},
	} {
		got := parseFees(tc.html)
		if len(got) != len(tc.want) {
			t.Errorf("%q: %d fees %v, want %d", tc.html, len(got), got, len(tc.want))
			continue
		}
		for i, w := range tc.want {
			g := got[i]
			if g.GetDescription() != w.desc || g.GetAmountCents() != w.lo || g.GetMaxAmountCents() != w.hi || g.GetFree() != w.free ||
				g.GetText() != w.text || g.GetCurrency() != "EUR" || feeParsed(g) != w.numbers {
				t.Errorf("%q fee %d:\n got %v\nwant %+v", tc.html, i, g, w)
			}
		}
	}
}

func TestHTMLLines(t *testing.T) {
	in := "<p>\u200bSie haben <strong>eine</strong>\n Niederlassung&nbsp;in M&uuml;nchen.</p>\n<ol>\n <li>Eins</li><li>Zwei<br>drei</li></ol><p></p><!-- x --><script>bad()</script>a &lt;b&gt; c"
	want := []string{"Sie haben eine Niederlassung in München.", "", "Eins", "", "Zwei", "drei", "", "a <b> c"}
	if got := htmlLines(in); !equalStrings(got, want) {
		t.Errorf("htmlLines:\n got %q\nwant %q", got, want)
	}
	if got := plainText(in, 1000); got != "Sie haben eine Niederlassung in München. Eins Zwei drei a <b> c" {
		t.Errorf("plainText: %q", got)
	}
	long := strings.Repeat("Wort für Wort ", 1000)
	got := plainText(long, 100)
	if len(got) > 100 || !strings.HasSuffix(got, "…") || !strings.HasPrefix(got, "Wort für Wort") {
		t.Errorf("capped: %d bytes %q", len(got), got)
	}
	if got := capText("ääää", 5); got != "…" && got != "ä…" {
		t.Errorf("capText cut inside a rune: %q", got)
	}
}
