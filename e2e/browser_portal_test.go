package e2e

import (
	"cmp"
	"connectrpc.com/connect"
	"context"
	"fmt"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp/kb"
)

// Services of the sample data the portal tests use.
const (
	leikaGewerbe    = "99050012104000" // Gewerbe-Anmeldung (Munich; delegated for Unterhaching)
	leikaAnmeldung  = "99115005000000" // Wohnsitzanmeldung (life situation Umzug)
	arsAugsburg     = "097610000000"
	arsUnterhaching = "091840148148"
)

// firstScreenBound is the bound on the first screen from the
// local node.
const firstScreenBound = 200 * time.Millisecond

// TestBrowserPortal drives the citizen portal in headless Chromium against
// a node with the sample data: choosing a municipality with the keyboard
// through the autocomplete, finding "Gewerbe anmelden" by search and by
// life situation, its providers and channels for three places, tracking a
// case with its proactive offers, the legal pages, the phone layout and
// the first-screen timing. Every page is axe-checked and screenshotted.
func TestBrowserPortal(t *testing.T) {
	n := startPortalNet(t)
	p := newBrowser(t, n.URL)
	check := func(t *testing.T, name string) {
		t.Helper()
		axeCheck(t, p)
		screenshot(t, p, name)
	}

	t.Run("start page", func(t *testing.T) {
		p.visit(t, "/")
		if got := p.text(t, "h1"); got != "Verwaltungsleistungen finden" {
			t.Fatalf("h1 = %q", got)
		}
		for _, href := range []string{"/info/leichte-sprache", "/info/gebaerdensprache", "/portal/lebenslagen/Umzug", "/portal/ort"} {
			if !p.exists(t, fmt.Sprintf(`main a[href=%q]`, href)) {
				t.Errorf("start page has no link to %s in its content", href)
			}
		}
		check(t, "portal-start")
	})

	t.Run("choose place with the keyboard", func(t *testing.T) {
		p.visit(t, "/portal/ort")
		tabTo(t, p, "ort-q", 30)
		p.press(t, "Augsburg")
		p.waitVisible(t, "#ort-liste [role=option]")
		if got := evalJS[string](t, p, `document.getElementById("ort-q").getAttribute("aria-expanded")`); got != "true" {
			t.Fatalf("combobox aria-expanded = %q with the list open", got)
		}
		axeCheck(t, p) // with the listbox open
		screenshot(t, p, "portal-ort-autocomplete")
		p.press(t, kb.ArrowDown)
		active := evalJS[string](t, p, `(() => { const id = document.getElementById("ort-q").getAttribute("aria-activedescendant"); const o = id && document.getElementById(id); return o ? o.textContent : ""; })()`)
		if !strings.HasPrefix(active, "Augsburg") {
			t.Fatalf("after ArrowDown the active option is %q, want Augsburg first", active)
		}
		p.enter(t)
		waitText(t, p, ".vb-place", "Augsburg")
		if got := p.path(t); !strings.HasPrefix(got, "/portal/ort") {
			t.Fatalf("after choosing: at %s", got)
		}
		check(t, "portal-ort-gewaehlt")
	})

	t.Run("choose place without javascript", func(t *testing.T) {
		p.visit(t, "/portal/ort?q=Unterhaching")
		if !p.exists(t, `form.vb-result-form input[name=ars][value="`+arsUnterhaching+`"]`) {
			t.Fatalf("GET /portal/ort?q=Unterhaching lists no Unterhaching:\n%s", p.text(t, "main"))
		}
		check(t, "portal-ort-liste")
		if code := p.fetchStatus(t, "/portal/orte.json?q=augsb"); code != 200 {
			t.Fatalf("orte.json: %d", code)
		}
		got := evalJS[string](t, p, `fetch("/portal/orte.json?q=augsb").then(r => r.json()).then(a => a.length ? a[0].ars : "")`)
		if got != arsAugsburg {
			t.Fatalf("orte.json?q=augsb: first %q, want Augsburg %s", got, arsAugsburg)
		}
	})

	t.Run("search Gewerbe anmelden", func(t *testing.T) {
		p.visit(t, "/portal/suche")
		tabTo(t, p, "suche-q", 30)
		p.press(t, "Gewerbe anmelden")
		p.enter(t)
		first := p.text(t, ".vb-hit a")
		if !strings.Contains(first, "Gewerbe-Anmeldung") {
			t.Fatalf("first hit for „Gewerbe anmelden“: %q", first)
		}
		if href := evalJS[string](t, p, `document.querySelector(".vb-hit a").getAttribute("href")`); href != "/portal/leistung/"+leikaGewerbe {
			t.Fatalf("first hit links to %s", href)
		}
		check(t, "portal-suche")
	})

	t.Run("life situation", func(t *testing.T) {
		p.visit(t, "/portal/lebenslagen")
		check(t, "portal-lebenslagen")
		p.clickLink(t, "Unternehmensgründung")
		if !p.exists(t, `.vb-hit a[href="/portal/leistung/`+leikaGewerbe+`"]`) {
			t.Fatalf("Unternehmensgründung does not list Gewerbe-Anmeldung:\n%s", p.text(t, "main"))
		}
		check(t, "portal-lebenslage")
		p.visit(t, "/portal/lebenslagen/Gibtesnicht")
		if code := p.fetchStatus(t, "/portal/lebenslagen/Gibtesnicht"); code != 404 {
			t.Errorf("unknown life situation: status %d, want 404", code)
		}
		if !strings.Contains(p.text(t, "main"), "Unternehmensgründung") || !p.exists(t, `a[href="/portal/lebenslagen/Umzug"]`) {
			t.Fatalf("an unknown life situation does not list the valid ones:\n%s", p.text(t, "main"))
		}
		check(t, "portal-lebenslage-unbekannt")
	})

	t.Run("service page", func(t *testing.T) {
		// Augsburg: nobody registered; say so, 115.
		choosePlace(t, p, arsAugsburg, "/portal/leistung/"+leikaGewerbe)
		main := p.text(t, "main")
		for _, want := range []string{"Für Augsburg ist noch keine Stelle eingetragen", "115", "Bayern"} {
			if !strings.Contains(main, want) {
				t.Errorf("service page for Augsburg lacks %q:\n%s", want, main)
			}
		}
		check(t, "portal-leistung-augsburg")
		// München: its own town hall with every channel.
		choosePlace(t, p, "091620000000", "/portal/leistung/"+leikaGewerbe)
		main = p.text(t, "main")
		for _, want := range []string{"München, Landeshauptstadt", "Ihre Gemeinde", "Implerstraße 11, 81371 München", "089 233-45141", "50,00 € bis 60,00 €", "Termin vereinbaren", "Termin etwa 20 Minuten"} {
			if !strings.Contains(main, want) {
				t.Errorf("service page for München lacks %q:\n%s", want, main)
			}
		}
		check(t, "portal-leistung-muenchen")
		// Unterhaching: the delegated centre with the authorisation.
		choosePlace(t, p, arsUnterhaching, "/portal/leistung/"+leikaGewerbe)
		main = p.text(t, "main")
		for _, want := range []string{"Beispiel-Servicezentrum Oberbayern", "Für Ihre Gemeinde beauftragt", "Beauftragt von Bayern", "Online", "rund um die Uhr"} {
			if !strings.Contains(main, want) {
				t.Errorf("service page for Unterhaching lacks %q:\n%s", want, main)
			}
		}
		check(t, "portal-leistung-unterhaching")
	})

	t.Run("track a case with proactive offers", func(t *testing.T) {
		code := n.caseTo(t, munichARS, leikaAnmeldung, "Umzug nach München")
		// The citizen asks München's node, which received the case.
		p.visit(t, n.B.API+"/portal/verfolgen")
		tabTo(t, p, "code", 30)
		p.press(t, code)
		p.enter(t)
		if !p.exists(t, "main") {
			t.Fatalf("tracking page broken; node B:\n%s", n.B.Logs())
		}
		main := p.text(t, "main")
		if strings.Contains(main, "nicht geklappt") {
			_, err := federationv1connect.NewHandoverServiceClient(http.DefaultClient, n.B.API).TrackCase(context.Background(), connect.NewRequest(&federationv1.TrackCaseRequest{TrackingCode: code}))
			t.Logf("anonymous TrackCase: %v", err)
			t.Fatalf("tracking failed:\n%s\nnode B:\n%s", main, n.B.Logs())
		}
		for _, want := range []string{"Stand Ihres Antrags " + code, "Übergeben und eingegangen", "Von Verbund-Betreiber an München, Landeshauptstadt", "Signatur geprüft", "Wie es weitergeht", "Ihre nächsten Schritte in München, Landeshauptstadt"} {
			if !strings.Contains(main, want) {
				t.Errorf("tracking page lacks %q:\n%s", want, main)
			}
		}
		if !p.exists(t, `#naechste ~ .vb-provider .vb-channels li`) {
			t.Errorf("no proactive offer with a channel:\n%s", main)
		}
		check(t, "portal-verfolgen")
		p.visit(t, n.B.API+"/portal/verfolgen")
		p.typeText(t, "#code", "VB-0000-0000-0000")
		p.enter(t)
		if !strings.Contains(p.text(t, "main"), "keinen Antrag gefunden") {
			t.Errorf("an unknown code is not explained:\n%s", p.text(t, "main"))
		}
	})

	t.Run("legal pages", func(t *testing.T) {
		for _, name := range []string{"impressum", "datenschutz", "barrierefreiheit", "leichte-sprache", "gebaerdensprache"} {
			p.visit(t, "/info/"+name)
			check(t, "info-"+name)
		}
		p.visit(t, "/info/barrierefreiheit")
		p.typeText(t, "#nachricht", "Der Kontrast im Kopf ist zu schwach.")
		tabTo(t, p, "feedback-senden", 5)
		p.enter(t)
		if !strings.Contains(p.text(t, "main"), "Vielen Dank für Ihre Rückmeldung") {
			t.Fatalf("feedback not thanked:\n%s", p.text(t, "main"))
		}
		if !strings.Contains(p.text(t, "main"), "Schlichtungs") {
			t.Errorf("the accessibility statement does not name the Schlichtungsstelle")
		}
	})

	t.Run("phone width", func(t *testing.T) {
		p.phone(t)
		defer p.desktop(t)
		for _, x := range []struct{ path, name string }{{"/", "portal-start-375"}, {"/portal/leistung/" + leikaGewerbe, "portal-leistung-375"}, {"/portal/ort?q=Augsburg", "portal-ort-375"}} {
			p.visit(t, x.path)
			if w := evalJS[int](t, p, `document.documentElement.scrollWidth`); w > phoneWidth {
				t.Errorf("%s is %d px wide at %d px: it scrolls sideways", x.path, w, phoneWidth)
			}
			check(t, x.name)
		}
	})

	t.Run("first screen under 200 ms", func(t *testing.T) {
		// Warm, as for anyone's second page: the static assets are cached
		// (max-age). Each page is loaded five times; the median counts
		// (the machine running the test is shared).
		bound := float64(firstScreenBound.Milliseconds())
		for _, path := range []string{"/", "/portal/ort?q=Augsburg", "/portal/lebenslagen/Umzug", "/portal/suche?q=Gewerbe+anmelden", "/portal/leistung/" + leikaGewerbe, "/info/barrierefreiheit"} {
			var runs []navTiming
			for range 5 {
				p.visit(t, path)
				runs = append(runs, p.timing(t))
			}
			tm := medianTiming(runs)
			t.Logf("%-36s median of 5: %v", path, tm)
			if tm.ResponseStart > bound || tm.FirstPaint == 0 || tm.FirstPaint > bound {
				t.Errorf("%s: first screen not within %v: %v (runs %v)", path, firstScreenBound, tm, runs)
			}
		}
	})

	t.Run("content security policy", func(t *testing.T) {
		p.visit(t, "/")
		csp := evalJS[string](t, p, `fetch("/").then(r => r.headers.get("content-security-policy") || "")`)
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Fatalf("CSP %q", csp)
		}
		if n := evalJS[int](t, p, `document.querySelectorAll("script:not([src]), [style]").length`); n != 0 {
			t.Errorf("%d inline scripts or style attributes on the start page (the CSP blocks them)", n)
		}
	})
}

// tabTo presses Tab until the element with id has the focus (at most max
// times): keyboard-only navigation.
func tabTo(t *testing.T, p *page, id string, max int) {
	t.Helper()
	for range max {
		p.press(t, kb.Tab)
		if evalJS[string](t, p, `document.activeElement ? document.activeElement.id : ""`) == id {
			return
		}
	}
	t.Fatalf("#%s not reached with %d Tabs (focus on %s)", id, max, p.focused(t))
}

// waitText waits until sel's text contains want.
func waitText(t *testing.T, p *page, sel, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := evalJS[string](t, p, fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel))
		if strings.Contains(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q does not contain %q", sel, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// choosePlace chooses the municipality ars through the no-JavaScript form
// and goes on to next.
func choosePlace(t *testing.T, p *page, ars, next string) {
	t.Helper()
	p.visit(t, "/portal/ort?q="+ars+"&weiter="+next)
	p.clickNav(t, `form.vb-result-form button`)
	if got := p.path(t); got != next {
		t.Fatalf("after choosing %s: at %s, want %s", ars, got, next)
	}
}

// medianTiming is the run with the median first contentful paint.
func medianTiming(runs []navTiming) navTiming {
	sorted := append([]navTiming(nil), runs...)
	slices.SortFunc(sorted, func(a, b navTiming) int { return cmp.Compare(a.FirstPaint, b.FirstPaint) })
	return sorted[len(sorted)/2]
}
