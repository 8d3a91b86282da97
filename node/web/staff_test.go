package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// --- pure parts ---

// TestProjectionKeepsNorthUpAndFits: the map puts north up and west left,
// keeps every point inside the drawing, and shortens longitudes by the
// cosine of the latitude (a degree of longitude in Bavaria is about two
// thirds of a degree of latitude).
func TestProjectionKeepsNorthUpAndFits(t *testing.T) {
	pts := []mapPoint{
		{Lat: 50.5, Lon: 9.0}, // north-west corner
		{Lat: 47.3, Lon: 13.8},
		{Lat: 48.14, Lon: 11.58}, // München
		{},                       // no location: ignored
	}
	pr := newProjection(pts, 600, 10)
	xNW, yNW := pr.xy(50.5, 9.0)
	xSE, ySE := pr.xy(47.3, 13.8)
	if xNW != 10 || yNW != 10 {
		t.Errorf("north-west corner at (%.1f, %.1f), want the margin (10, 10)", xNW, yNW)
	}
	if xSE < 589.9 || xSE > 590.1 {
		t.Errorf("east edge at x=%.1f, want 590 (width - margin)", xSE)
	}
	if ySE <= yNW || xSE <= xNW {
		t.Errorf("south-east (%.1f, %.1f) is not right of and below north-west", xSE, ySE)
	}
	// Aspect: 4.8° of longitude × cos(48.9°) ≈ 3.16 "latitude degrees"
	// wide, 3.2° high: the drawing is about as high as it is wide.
	ratio := (ySE - yNW) / (xSE - xNW)
	if ratio < 0.95 || ratio > 1.08 {
		t.Errorf("height/width of the area %.3f, want ≈ 1.01 (longitudes scaled by cos(latitude))", ratio)
	}
	if pr.H < ySE+10-0.01 {
		t.Errorf("height %.1f does not hold the southern point at %.1f plus the margin", pr.H, ySE)
	}
}

// TestCoverageMapMarksByShape: gaps, covered and online municipalities
// differ in shape (not only colour), each has a tooltip, and points
// without coordinates are counted instead of drawn at (0, 0).
func TestCoverageMapMarksByShape(t *testing.T) {
	svg, unlocated := coverageMapSVG([]mapPoint{
		{Lat: 48.1, Lon: 11.5, Class: "online", Label: "München: online"},
		{Lat: 48.3, Lon: 10.9, Class: "covered", Label: "Augsburg: angeboten"},
		{Lat: 49.4, Lon: 11.1, Class: "gap", Label: "Nürnberg: <Lücke>"},
		{Class: "gap", Label: "Irgendwo"},
	}, "Karte")
	s := string(svg)
	if unlocated != 1 {
		t.Errorf("unlocated = %d, want 1", unlocated)
	}
	for _, want := range []string{`<circle class="vb-mark vb-mark--online"`, `<rect class="vb-mark vb-mark--covered"`, `<path class="vb-mark vb-mark--gap"`,
		`<title>München: online</title>`, `&lt;Lücke&gt;`, `role="img"`, "kein Anbieter (Lücke)"} {
		if !strings.Contains(s, want) {
			t.Errorf("map lacks %q", want)
		}
	}
	// One mark per located point plus three in the legend.
	if n := strings.Count(s, `class="vb-mark `); n != 3+3 {
		t.Errorf("%d marks, want 6", n)
	}
	if strings.Contains(s, "Irgendwo") {
		t.Error("a point without coordinates was drawn")
	}
}

// TestCSVForGermanExcel: BOM, semicolons, CRLF, quoting, and formulas
// defused.
func TestCSVForGermanExcel(t *testing.T) {
	got := string(csvExcel([]string{"Gemeinde", "Anbieter"}, [][]string{
		{"München", "Stadt; Kreisverwaltungsreferat"},
		{`Sankt "Peter"`, "=HYPERLINK(\"x\")"},
		{"Au i.d.Hallertau", ""},
	}))
	want := "\ufeffGemeinde;Anbieter\r\n" +
		"München;\"Stadt; Kreisverwaltungsreferat\"\r\n" +
		"\"Sankt \"\"Peter\"\"\";\"'=HYPERLINK(\"\"x\"\")\"\r\n" +
		"Au i.d.Hallertau;\r\n"
	if got != want {
		t.Errorf("csv:\n%q\nwant\n%q", got, want)
	}
}

// TestSortViaQuery: the sort order comes from ?sort=&richtung=, unknown
// keys fall back to the default, the header link of the current column
// reverses it and keeps the page's other parameters.
func TestSortViaQuery(t *testing.T) {
	type row struct {
		name string
		n    int
	}
	by := map[string]func(a, b row) int{
		"name": func(a, b row) int { return compareText(a.name, b.name) },
		"n":    func(a, b row) int { return compareNum(a.n, b.n) },
	}
	rows := []row{{"Zell", 1}, {"Ähringen", 3}, {"Bad Tölz", 2}, {"augsburg", 3}}
	spec := parseSort(url.Values{"sort": {"name"}, "richtung": {"ab"}}, []string{"name", "n"}, "n", false)
	sortRows(rows, spec, by)
	var got []string
	for _, r := range rows {
		got = append(got, r.name)
	}
	// German order: Ä with A, case ignored; descending.
	if strings.Join(got, ",") != "Zell,Bad Tölz,augsburg,Ähringen" {
		t.Errorf("sorted by name descending: %v", got)
	}
	if s := parseSort(url.Values{"sort": {"drop table"}}, []string{"name", "n"}, "n", true); s.Key != "n" || !s.Desc {
		t.Errorf("unknown key: %+v, want the default n descending", s)
	}
	sortRows(rows, sortSpec{Key: "n"}, by)
	if rows[0].n != 1 || rows[3].n != 3 || rows[2].name != "augsburg" { // stable: augsburg before Ähringen as before
		t.Errorf("sorted by n: %+v", rows)
	}
	hs := sortHeaders("/amt/x", url.Values{"land": {"09"}, "sort": {"name"}}, sortSpec{Key: "name"}, [2]string{"name", "Name"}, [2]string{"n", "Zahl"})
	if hs[0].Aria != "ascending" || !strings.Contains(hs[0].Href, "richtung=ab") || !strings.Contains(hs[0].Href, "land=09") {
		t.Errorf("header of the current column: %+v", hs[0])
	}
	if hs[1].Aria != "none" || !strings.Contains(hs[1].Href, "richtung=auf") || !strings.Contains(hs[1].Href, "sort=n") {
		t.Errorf("header of another column: %+v", hs[1])
	}
}

// TestChartScaling: the value axis ends at a round number, bars are
// proportional to their values, and a day without a value breaks the
// line instead of dropping it to zero.
func TestChartScaling(t *testing.T) {
	for v, want := range map[float64]float64{0: 1, 0.4: 1, 1: 1, 3: 5, 7: 10, 10: 10, 11: 20, 180: 200, 250: 500, 1234: 2000} {
		if got := niceMax(v); got != want {
			t.Errorf("niceMax(%v) = %v, want %v", v, got, want)
		}
	}
	svg := string(barChartSVG([]chartPoint{{Label: "01.12.", Value: 2}, {Label: "02.12.", Value: 4}, {Label: "03.12.", Value: 0}}, "Balken", "Fälle"))
	hs := regexp.MustCompile(`class="vb-chart__bar" x="[0-9.]+" y="[0-9.]+" width="[0-9.]+" height="([0-9.]+)"`).FindAllStringSubmatch(svg, -1)
	if len(hs) != 3 {
		t.Fatalf("%d bars, want 3", len(hs))
	}
	h := make([]float64, 3)
	for i, m := range hs {
		h[i], _ = strconv.ParseFloat(m[1], 64)
	}
	// Axis to 5: 4 is 80 % of the plot's height, 2 is 40 %.
	if d := h[1] - 0.8*chartPlotH; d < -0.1 || d > 0.1 {
		t.Errorf("bar of 4 is %.1f high, want %.1f", h[1], 0.8*chartPlotH)
	}
	if d := h[1] - 2*h[0]; d < -0.2 || d > 0.2 {
		t.Errorf("bars not proportional: %v", h)
	}
	if h[2] != 0 {
		t.Errorf("bar of 0 is %.1f high", h[2])
	}
	line := string(lineChartSVG([]chartPoint{{Label: "a", Value: 1}, {Label: "b", Value: 3}, {Label: "c", Missing: true}, {Label: "d", Value: 2}}, "Linie", "h"))
	d := regexp.MustCompile(`class="vb-chart__line" d="([^"]+)"`).FindStringSubmatch(line)
	if d == nil || strings.Count(d[1], "M") != 2 || strings.Count(d[1], "L") != 1 {
		t.Errorf("line path %v: want two pieces (M L, M) around the missing day", d)
	}
}

// TestCaseFieldsKeepStructureAndOrder: the case data becomes nested
// definition lists in the sender's key order, never raw JSON.
func TestCaseFieldsKeepStructureAndOrder(t *testing.T) {
	fs := caseFields(`{"zuname":"Mustermann","adresse":{"strasse":"Hauptstr. 1","plz":"80331"},"kinder":["Max",2],"eilig":false,"notiz":null}`)
	if len(fs) != 5 || fs[0].Key != "zuname" || fs[1].Key != "adresse" || fs[4].Value != "–" {
		t.Fatalf("fields: %+v", fs)
	}
	if len(fs[1].Fields) != 2 || fs[1].Fields[1].Key != "plz" || fs[1].Fields[1].Value != "80331" {
		t.Errorf("nested object: %+v", fs[1])
	}
	if len(fs[2].Items) != 2 || fs[2].Items[1].Value != "2" || fs[3].Value != "nein" {
		t.Errorf("array or bool: %+v %+v", fs[2], fs[3])
	}
	if percent(1, 2056) != "unter 0,1" || percent(2, 3) != "66,7" || percent(0, 5) != "0" {
		t.Errorf("percent: %q %q %q", percent(1, 2056), percent(2, 3), percent(0, 5))
	}
	if got := caseFields("not json"); len(got) != 1 || got[0].Value != "not json" {
		t.Errorf("invalid JSON: %+v", got)
	}
	if at, s := caseDeadline(`{"Frist":"31.01.2027"}`); s != "31.01.2027" || at.IsZero() {
		t.Errorf("deadline: %v %q", at, s)
	}
	if _, s := caseDeadline(`{"subject":"x"}`); s != "" {
		t.Errorf("no deadline: %q", s)
	}
}

// --- pages over a fake API ---

// TestInboxListsCasesWithNamesDeadlineAndFilter: services and senders by
// name, the deadline from the case data (overdue marked), the status
// filter passed to the API, sorting by sender.
func TestInboxListsCasesWithNamesDeadlineAndFilter(t *testing.T) {
	f := newStaffAPI()
	c, _ := newStaffClient(t, f)
	code, body := c.get("/amt/posteingang")
	if code != 200 {
		t.Fatalf("inbox: %d\n%s", code, body)
	}
	for _, want := range []string{"Wohnsitz anmelden", "Gewerbe anmelden", "Augsburg", "Bayern", "01.12.2026", "überschritten", "Neu eingegangen", `href="/amt/fall/h-1"`, "3 Fälle"} {
		if !strings.Contains(body, want) {
			t.Errorf("inbox lacks %q", want)
		}
	}
	if strings.Contains(body, "31.01.2027") {
		t.Error("the deadline of a completed case is shown (only open cases are read)")
	}
	code, body = c.get("/amt/posteingang?status=angenommen")
	if code != 200 || f.listState != federationv1.CaseState_CASE_STATE_ACCEPTED || strings.Contains(body, "Wohnsitz anmelden") {
		t.Errorf("filter angenommen: code %d, API asked for %v", code, f.listState)
	}
	_, body = c.get("/amt/posteingang?sort=absender&richtung=auf")
	if a, b := strings.Index(body, "Augsburg"), strings.Index(body, "Bayern"); a < 0 || b < 0 || a > b {
		t.Errorf("sorted by sender ascending: Augsburg at %d, Bayern at %d", a, b)
	}
	_, body = c.get("/amt/posteingang?sort=absender&richtung=ab")
	if a, b := strings.Index(body, ">Augsburg<"), strings.Index(body, ">Bayern<"); a < b {
		t.Errorf("sorted by sender descending: Augsburg at %d, Bayern at %d", a, b)
	}
}

// TestInboxNeedsSignIn: without a session the inbox redirects to the
// sign-in page and returns there afterwards.
func TestInboxNeedsSignIn(t *testing.T) {
	f := newStaffAPI()
	_, s := newStaffClient(t, f)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/amt/posteingang", nil))
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/amt/anmelden?weiter=%2Famt%2Fposteingang" {
		t.Fatalf("without session: %d %q", rec.Code, rec.Header().Get("Location"))
	}
	// A form sent after the session expired: back to the case after
	// signing in, and nothing done.
	req := httptest.NewRequest("POST", "/amt/fall/h-1/annehmen", strings.NewReader("csrf="+strings.Repeat("c", 43)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: csrfCookie, Value: strings.Repeat("c", 43)})
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: "expired"})
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/amt/anmelden?weiter=%2Famt%2Ffall%2Fh-1" || len(f.accepted) != 0 {
		t.Fatalf("form without a valid session: %d %q, accepted %v", rec.Code, rec.Header().Get("Location"), f.accepted)
	}
}

// TestCasePageShowsSenderDataHistoryAndOffers.
func TestCasePageShowsSenderDataHistoryAndOffers(t *testing.T) {
	f := newStaffAPI()
	c, _ := newStaffClient(t, f)
	code, body := c.get("/amt/fall/h-1")
	if code != 200 {
		t.Fatalf("case: %d\n%s", code, body)
	}
	for _, want := range []string{
		"Augsburg", "geprüft", "aug-sig-1", "EdDSA", // verified sender
		"<dt class=\"kern-description-list-item__key\">antragsteller</dt>", "Erika Mustermann", "Moritz", // data as a definition list
		"Meldeschein.pdf", "/amt/fall/h-1/anhang/1", // attachments
		"Eingegangen, Empfang quittiert",                                                        // history
		`action="/amt/fall/h-1/annehmen"`, `action="/amt/fall/h-1/ablehnen"`, "Nicht zuständig", // actions
		"Nächste Schritte", "Hundesteuer anmelden", "Wer mit Hund zuzieht", "https://stadt.muenchen.de/hund", "089 233-00", // offers
	} {
		if !strings.Contains(body, want) {
			t.Errorf("case page lacks %q", want)
		}
	}
	if strings.Contains(body, "089 999-99") {
		t.Error("a second channel of the same kind is listed beside the case")
	}
	if strings.Contains(body, `{"antragsteller"`) {
		t.Error("case data shown as raw JSON")
	}
	if strings.Contains(body, "javascript:") || strings.Contains(body, "ZgotmplZ") {
		t.Error("a javascript: URL from registry data became a link (html/template's #ZgotmplZ counts too)")
	}
	if strings.Contains(body, `/abschliessen"`) {
		t.Error("complete offered for a case not yet accepted")
	}
	// The attachment downloads.
	rec := c.do("GET", "/amt/fall/h-1/anhang/1", nil)
	if rec.Code != 200 || rec.Body.String() != "%PDF-1.7" || !strings.HasPrefix(rec.Header().Get("Content-Disposition"), "attachment;") {
		t.Errorf("attachment: %d %q %q", rec.Code, rec.Body.String(), rec.Header().Get("Content-Disposition"))
	}
	// Without next steps in the API (before the registry has them): a
	// clear message, not an error page.
	f.nextErr = connect.NewError(connect.CodeUnimplemented, errors.New("later"))
	code, body = c.get("/amt/fall/h-1")
	if code != 200 || !strings.Contains(body, "kennt die „nächsten Schritte“ noch nicht") {
		t.Errorf("next steps unimplemented: %d", code)
	}
	code, body = c.get("/amt/fall/nope")
	if code != 404 || !strings.Contains(body, "gibt es im Posteingang nicht") {
		t.Errorf("unknown case: %d", code)
	}
}

// TestCaseActionsRedirectWithNotice: accept and reject are POSTs that
// redirect back (PRG) with a notice; a reject needs a problem type and a
// detail, and without them the API is not called.
func TestCaseActionsRedirectWithNotice(t *testing.T) {
	f := newStaffAPI()
	c, _ := newStaffClient(t, f)
	rec := c.post("/amt/fall/h-1/annehmen", nil)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/amt/fall/h-1?hinweis=angenommen" {
		t.Fatalf("accept: %d %q %s", rec.Code, rec.Header().Get("Location"), rec.Body)
	}
	if len(f.accepted) != 1 || f.accepted[0] != "h-1" {
		t.Fatalf("AcceptCase calls: %v", f.accepted)
	}
	_, body := c.get(rec.Header().Get("Location"))
	if !strings.Contains(body, "Der Fall ist angenommen") || !strings.Contains(body, `/abschliessen"`) {
		t.Error("after accept: no notice, or complete not offered")
	}

	calls := f.actionCalls
	rec = c.post("/amt/fall/h-1/ablehnen", url.Values{"problem": {"urn:verbund:problem:unvollstaendig"}, "detail": {"  "}})
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "Bitte beschreiben Sie") || f.actionCalls != calls {
		t.Fatalf("reject without detail: %d, API calls %d → %d", rec.Code, calls, f.actionCalls)
	}
	if !strings.Contains(rec.Body.String(), `value="urn:verbund:problem:unvollstaendig" checked`) {
		t.Error("the chosen problem type is lost after the error")
	}
	rec = c.post("/amt/fall/h-1/ablehnen", url.Values{"detail": {"Es fehlt der Meldeschein."}})
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "Bitte wählen Sie den Grund") || f.actionCalls != calls {
		t.Fatalf("reject without a problem type: %d", rec.Code)
	}
	rec = c.post("/amt/fall/h-1/ablehnen", url.Values{"problem": {"urn:verbund:problem:unvollstaendig"}, "detail": {"Es fehlt der Meldeschein."}})
	if rec.Code != http.StatusSeeOther || !strings.HasSuffix(rec.Header().Get("Location"), "hinweis=abgelehnt") {
		t.Fatalf("reject: %d %s", rec.Code, rec.Body)
	}
	p := f.rejected.GetProblem()
	if p.GetType() != "urn:verbund:problem:unvollstaendig" || p.GetTitle() != "Unterlagen oder Angaben unvollständig" || p.GetDetail() != "Es fehlt der Meldeschein." {
		t.Errorf("problem sent: %+v", p)
	}
	_, body = c.get("/amt/fall/h-1")
	if !strings.Contains(body, "Begründung: Unterlagen oder Angaben unvollständig: Es fehlt der Meldeschein.") {
		t.Error("history lacks the rejection with its problem")
	}
	// An accepted case is completed.
	rec = c.post("/amt/fall/h-2/abschliessen", nil)
	if rec.Code != http.StatusSeeOther || !strings.HasSuffix(rec.Header().Get("Location"), "hinweis=erledigt") || f.cases["h-2"].GetSummary().GetState() != federationv1.CaseState_CASE_STATE_COMPLETED {
		t.Fatalf("complete: %d %q", rec.Code, rec.Header().Get("Location"))
	}
	_, body = c.get("/amt/fall/h-2")
	if !strings.Contains(body, "es gibt nichts mehr zu tun") || strings.Contains(body, `action="/amt/fall/h-2/`) {
		t.Error("a completed case still offers actions")
	}
	f.cases["h-2"].Summary.State = federationv1.CaseState_CASE_STATE_ACCEPTED
	// Without the CSRF token nothing happens.
	req := httptest.NewRequest("POST", "/amt/fall/h-2/abschliessen", strings.NewReader("csrf=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: "tok-clerk"})
	rr := httptest.NewRecorder()
	c.h.ServeHTTP(rr, req)
	if rr.Code != http.StatusForbidden || f.cases["h-2"].GetSummary().GetState() != federationv1.CaseState_CASE_STATE_ACCEPTED {
		t.Errorf("complete without CSRF token: %d", rr.Code)
	}
}

// TestCaseActionErrorsInGerman: a refusal of the API (wrong state,
// missing role) is shown in German with the case, not as a redirect.
func TestCaseActionErrorsInGerman(t *testing.T) {
	f := newStaffAPI()
	c, _ := newStaffClient(t, f)
	f.actionErr = connect.NewError(connect.CodeFailedPrecondition, errors.New("handover: case state does not allow this"))
	rec := c.post("/amt/fall/h-1/annehmen", nil)
	if rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), "nicht (mehr) in einem Zustand") || strings.Contains(rec.Body.String(), "case state does not allow") {
		t.Errorf("wrong state: %d", rec.Code)
	}
	f.actionErr = connect.NewError(connect.CodePermissionDenied, errors.New("needs role CLERK"))
	rec = c.post("/amt/fall/h-1/annehmen", nil)
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "Dafür fehlt Ihnen die Berechtigung") {
		t.Errorf("permission: %d", rec.Code)
	}
}

// TestForwardFindsRecipientByName: the recipient search uses the place
// search and falls back to the name prefix where the registry lacks it;
// the chosen organisation's id goes to ForwardCase.
func TestForwardFindsRecipientByName(t *testing.T) {
	f := newStaffAPI()
	c, _ := newStaffClient(t, f)
	_, body := c.get("/amt/fall/h-1?empfaenger=Augs")
	if len(f.orgQueries) != 1 || !strings.Contains(body, `value="097610000000"`) || strings.Contains(body, `id="to-1"`) {
		t.Errorf("search by query: queries %v", f.orgQueries)
	}
	f.queryErr = connect.NewError(connect.CodeUnimplemented, nil)
	_, body = c.get("/amt/fall/h-1?empfaenger=Augs")
	if len(f.namePrefix) != 1 || !strings.Contains(body, `value="097610000000"`) {
		t.Errorf("fallback to name_prefix: %v", f.namePrefix)
	}
	_, body = c.get("/amt/fall/h-1?empfaenger=M%C3%BCn")
	if strings.Contains(body, `value="091620000000"`) {
		t.Error("this node's own organisation is offered as a recipient")
	}
	rec := c.post("/amt/fall/h-1/weiterleiten", url.Values{"empfaenger": {"097610000000"}, "grund": {"Zuständig ist Augsburg"}})
	if rec.Code != http.StatusSeeOther || f.forwarded.GetRecipientOrganisationId() != "097610000000" || f.forwarded.GetReason() != "Zuständig ist Augsburg" {
		t.Errorf("forward: %d %+v", rec.Code, f.forwarded)
	}
}

// TestOutboxExplainsUndelivered: pending entries show attempts, the last
// error and when the next attempt comes; failed ones their reason;
// delivered ones the receipt time.
func TestOutboxExplainsUndelivered(t *testing.T) {
	f := newStaffAPI()
	c, _ := newStaffClient(t, f)
	code, body := c.get("/amt/postausgang")
	if code != 200 {
		t.Fatalf("outbox: %d", code)
	}
	for _, want := range []string{"Noch nicht zugestellt (1)", "connection refused", "spätestens 4 Sekunden nach dem letzten Versuch", "Endgültig gescheitert (1)", "envelope expired", "Zugestellt (1)", "Nachricht: Angenommen", "TC-O1"} {
		if !strings.Contains(body, want) {
			t.Errorf("outbox lacks %q", want)
		}
	}
	if retryHint(30) != "spätestens 5 Minuten nach dem letzten Versuch (solange die Empfängerseite erreichbar gemeldet ist)" {
		t.Errorf("retry hint capped: %q", retryHint(30))
	}
}

func coverageFixture() *registryv1.GetCoverageResponse {
	return &registryv1.GetCoverageResponse{
		Service:        &registryv1.Service{LeikaKey: "99050012104000", Name: "Gewerbe anmelden"},
		Municipalities: 3, Covered: 2, Online: 1,
		Rows: []*registryv1.CoverageRow{
			{Ars: "091620000000", Name: "München", Location: &registryv1.GeoPoint{Lat: 48.14, Lon: 11.58}, ProviderId: "091620000000", ProviderName: "München",
				Match: registryv1.MatchKind_MATCH_KIND_OWN_MUNICIPALITY, Channels: []registryv1.ChannelKind{registryv1.ChannelKind_CHANNEL_KIND_ONLINE}, Online: true},
			{Ars: "097610000000", Name: "Augsburg", Location: &registryv1.GeoPoint{Lat: 48.37, Lon: 10.9}, ProviderId: "ssc", ProviderName: "SSC Schwaben",
				Match: registryv1.MatchKind_MATCH_KIND_DELEGATED, Channels: []registryv1.ChannelKind{registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON}},
			{Ars: "095640000000", Name: "Nürnberg", Location: &registryv1.GeoPoint{Lat: 49.45, Lon: 11.08}},
		},
	}
}

// TestCoveragePageMapTableAndCSV.
func TestCoveragePageMapTableAndCSV(t *testing.T) {
	f := newStaffAPI()
	f.coverage = coverageFixture()
	c, _ := newStaffClient(t, f)
	code, body := c.get("/amt/konsole/abdeckung?leistung=99050012104000&land=09")
	if code != 200 {
		t.Fatalf("coverage: %d\n%s", code, body)
	}
	for _, want := range []string{`id="fig-municipalities">3<`, `id="fig-covered">2<`, `id="fig-online">1<`, `id="fig-gaps">1<`, "66,7 %",
		`<svg class="vb-map"`, "vb-mark--gap", "SSC Schwaben", "beauftragte Stelle", "Vor Ort", `href="/amt/konsole/abdeckung.csv?land=09&amp;leistung=99050012104000"`} {
		if !strings.Contains(body, want) {
			t.Errorf("coverage page lacks %q", want)
		}
	}
	// Default order: gaps first.
	if g, m := strings.Index(body, "<td class=\"kern-table__cell\">Nürnberg"), strings.Index(body, "<td class=\"kern-table__cell\">München"); g < 0 || g > m {
		t.Errorf("gap not first in the table (Nürnberg at %d, München at %d)", g, m)
	}
	_, body = c.get("/amt/konsole/abdeckung?leistung=99050012104000&land=09&sort=gemeinde&richtung=auf")
	if a, m := strings.Index(body, ">Augsburg<"), strings.Index(body, ">München<"); a > m {
		t.Error("sort by name ascending: München before Augsburg")
	}
	_, body = c.get("/amt/konsole/abdeckung?leistung=99050012104000&land=09&nur=luecken")
	if strings.Contains(body, ">SSC Schwaben") || !strings.Contains(body, "1 Gemeinden") {
		t.Error("only gaps: covered municipalities still listed")
	}
	rec := c.do("GET", "/amt/konsole/abdeckung.csv?leistung=99050012104000&land=09", nil)
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "text/csv; charset=utf-8" || !strings.Contains(rec.Header().Get("Content-Disposition"), "attachment") {
		t.Fatalf("csv: %d %q", rec.Code, rec.Header())
	}
	lines := strings.Split(rec.Body.String(), "\r\n")
	if !strings.HasPrefix(lines[0], "\ufeffRegionalschlüssel;Gemeinde;Stand;") || len(lines) != 5 || !strings.HasPrefix(lines[1], "095640000000;Nürnberg;Lücke;") {
		t.Errorf("csv body: %q", lines)
	}
	if !strings.Contains(rec.Body.String(), "097610000000;Augsburg;angeboten;SSC Schwaben;beauftragte Stelle;Vor Ort;nein;48.37000;10.90000") {
		t.Errorf("csv row: %q", rec.Body.String())
	}
	// A long table is paged (the map and the CSV keep every row).
	for i := 0; i < 150; i++ {
		f.coverage.Rows = append(f.coverage.Rows, &registryv1.CoverageRow{Ars: fmt.Sprintf("0999%08d", i), Name: fmt.Sprintf("Dorf %03d", i)})
	}
	_, body = c.get("/amt/konsole/abdeckung?leistung=99050012104000&land=09&sort=gemeinde&richtung=auf")
	if n := strings.Count(body, `<tr class="kern-table__row"><td`); n != 100 || !strings.Contains(body, "Gemeinden 1 bis 100 von 153") ||
		!strings.Contains(body, `href="/amt/konsole/abdeckung?land=09&amp;leistung=99050012104000&amp;richtung=auf&amp;seite=2&amp;sort=gemeinde"`) {
		t.Errorf("page 1: %d rows", n)
	}
	_, body = c.get("/amt/konsole/abdeckung?leistung=99050012104000&land=09&sort=gemeinde&richtung=auf&seite=2")
	if n := strings.Count(body, `<tr class="kern-table__row"><td`); n != 53 || !strings.Contains(body, "Seite 2 von 2") || !strings.Contains(body, ">Nürnberg<") {
		t.Errorf("page 2: %d rows", n)
	}
	if rec := c.do("GET", "/amt/konsole/abdeckung.csv?leistung=99050012104000&land=09", nil); strings.Count(rec.Body.String(), "\r\n") != 154 {
		t.Errorf("csv of a paged table: %d lines, want all 153 and the header", strings.Count(rec.Body.String(), "\r\n"))
	}
	f.coverage = coverageFixture()

	// A name instead of a key: the officer chooses the service.
	_, body = c.get("/amt/konsole/abdeckung?leistung=Gewerbe&land=09")
	if !strings.Contains(body, `href="/amt/konsole/abdeckung?leistung=99050012104000&amp;land=09"`) {
		t.Error("search by name offers no choice")
	}
	// Before the registry can compute coverage: a clear message.
	f.coverageErr = connect.NewError(connect.CodeUnimplemented, nil)
	code, body = c.get("/amt/konsole/abdeckung?leistung=99050012104000&land=09")
	if code != http.StatusNotImplemented || !strings.Contains(body, "kann die Abdeckung noch nicht berechnen") {
		t.Errorf("unimplemented: %d", code)
	}
}

// remoteNode serves a NodeService and HandoverService over loopback
// HTTP: another member of the network.
func remoteNode(t *testing.T, f *staffAPI) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(nodev1connect.NewNodeServiceHandler(f))
	mux.Handle(federationv1connect.NewHandoverServiceHandler(f))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestNetworkPage: members with roles, the leader and its index, each
// node's lag behind it, the change-feed age of members, gossip counts, a
// node that does not answer, and expiring keys.
func TestNetworkPage(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, berlin)
	f := newStaffAPI()
	f.status = &nodev1.GetStatusResponse{NodeId: "n-muc", RaftState: "Member", AppliedIndex: 95, Stats: map[string]string{"staleness_ms": "1500"},
		ExpiryWarnings: []*nodev1.ExpiryWarning{{What: "node_certificate", Id: "CN=n-muc", NotAfterUnixMs: now.Add(-48 * time.Hour).UnixMilli()}}}
	leader := newStaffAPI()
	leader.status = &nodev1.GetStatusResponse{NodeId: "n-op", RaftState: "Leader", AppliedIndex: 100, CommitIndex: 100,
		ExpiryWarnings: []*nodev1.ExpiryWarning{{What: "signing_key", Id: "op-sig-1", NotAfterUnixMs: now.Add(10 * 24 * time.Hour).UnixMilli()}}}
	f.members = []*nodev1.Member{
		{NodeId: "n-op", OrganisationId: "land-09", Role: "voter", State: "alive", RaftSuffrage: "Voter", Leader: true, ApiAddress: remoteNode(t, leader), Version: "0.1.0"},
		{NodeId: "n-muc", OrganisationId: "091620000000", Role: "member", State: "alive", ApiAddress: "http://127.0.0.1:9"},
		{NodeId: "n-gone", OrganisationId: "097610000000", Role: "member", State: "dead", ApiAddress: "http://127.0.0.1:1"},
	}
	c, _ := newStaffClient(t, f)
	code, body := c.get("/amt/konsole/netz")
	if code != 200 {
		t.Fatalf("network: %d\n%s", code, body)
	}
	for _, want := range []string{"Raft-Leiter: <strong>n-op</strong>, Commit-Index 100", "Leiter</span>", "voter (Voter)", "Bayern",
		"5 Einträge", "letzte Änderung vor 1,5 Sekunden", "n-gone", "antwortet nicht", "nicht erreichbar", "Knotenzertifikat", "seit 2 Tage abgelaufen",
		"Signaturschlüssel", "noch 10 Tage", "<span class=\"vb-figures__value\">2</span> erreichbar"} {
		if !strings.Contains(body, want) {
			t.Errorf("network page lacks %q", want)
		}
	}
	if strings.Index(body, "Knotenzertifikat") > strings.Index(body, "Signaturschlüssel") {
		t.Error("expiry not soonest first")
	}
}

// TestHandoverStatsGatheredFromEveryNode: statistics come from this node
// (in-process) and the others (over their API); one organisation is
// counted once; a node that does not answer is listed, not fatal; the
// charts and tables show the sums per day, service and organisation.
func TestHandoverStatsGatheredFromEveryNode(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, berlin)
	day := func(d int) int64 { return now.AddDate(0, 0, -d).Truncate(time.Hour).UnixMilli() }
	f := newStaffAPI()
	f.stats = &federationv1.GetHandoverStatsResponse{OrganisationId: "091620000000", Buckets: []*federationv1.HandoverStatsBucket{
		{StartUnixMs: day(1), OrganisationId: "091620000000", LeikaKey: "99115005000000", CounterpartId: "097610000000", Incoming: true, Handovers: 4, Accepted: 3, Completed: 2,
			ProcessingMsSum: uint64(2 * 3 * time.Hour / time.Millisecond), ProcessingCount: 2, ProcessingMsMax: uint64(4 * time.Hour / time.Millisecond)},
		{StartUnixMs: day(1), OrganisationId: "091620000000", LeikaKey: "99115005000000", CounterpartId: "097610000000", Incoming: false, Handovers: 9},
	}}
	other := newStaffAPI()
	other.stats = &federationv1.GetHandoverStatsResponse{OrganisationId: "097610000000", Buckets: []*federationv1.HandoverStatsBucket{
		{StartUnixMs: day(0), OrganisationId: "097610000000", LeikaKey: "99050012104000", CounterpartId: "091620000000", Incoming: true, Handovers: 2, Rejected: 1,
			ProcessingMsSum: uint64(time.Hour / time.Millisecond), ProcessingCount: 1, ProcessingMsMax: uint64(time.Hour / time.Millisecond)},
		{StartUnixMs: day(40), OrganisationId: "097610000000", LeikaKey: "99050012104000", Incoming: true, Handovers: 100}, // before the period
	}}
	addr := remoteNode(t, other)
	f.members = []*nodev1.Member{
		{NodeId: "n-muc", OrganisationId: "091620000000", ApiAddress: "http://127.0.0.1:9"},
		{NodeId: "n-aug", OrganisationId: "097610000000", ApiAddress: addr},
		{NodeId: "n-aug-2", OrganisationId: "097610000000", ApiAddress: addr}, // same organisation: counted once
		{NodeId: "n-gone", OrganisationId: "land-09", ApiAddress: "http://127.0.0.1:1"},
	}
	c, _ := newStaffClient(t, f)
	code, body := c.get("/amt/konsole/uebergaben")
	if code != 200 {
		t.Fatalf("stats: %d\n%s", code, body)
	}
	for _, want := range []string{"3 von 4 Knoten haben geantwortet", `id="fig-handovers">6<`, `<svg class="vb-chart"`, "vb-chart__bar", "vb-chart__line",
		"Wohnsitz anmelden", "Gewerbe anmelden", "München", "Augsburg", "3 h", "4 h", "n-gone (Bayern): <span class=\"vb-error-text\">antwortet nicht",
		"schon von einem anderen Knoten gezählt"} {
		if !strings.Contains(body, want) {
			t.Errorf("stats page lacks %q", want)
		}
	}
	// 30 days, one row each.
	if n := strings.Count(body, `<tr class="kern-table__row"><th class="kern-table__cell" scope="row">`); n < 30 {
		t.Errorf("%d rows in the tables, want at least 30 days", n)
	}
	_, body = c.get("/amt/konsole/uebergaben?richtung=ausgang")
	if !strings.Contains(body, `id="fig-handovers">9<`) {
		t.Error("outgoing: want the 9 sent cases")
	}
	_, body = c.get("/amt/konsole/uebergaben?leistung=99050012104000")
	if !strings.Contains(body, `id="fig-handovers">2<`) {
		t.Error("filter by service: want 2")
	}
	// Nodes without the statistics yet: a clear message.
	f.statsErr = connect.NewError(connect.CodeUnimplemented, nil)
	other.statsErr = f.statsErr
	_, body = c.get("/amt/konsole/uebergaben")
	if !strings.Contains(body, "kennt die Übergabestatistik noch nicht") {
		t.Error("no message when no node has statistics")
	}
}
