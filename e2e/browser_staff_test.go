package e2e

// Browser tests of the clerk's inbox and the agency console (issue 10),
// on München's node (B) of the harness's network: a clerk signs in, sees
// the cases A handed over, accepts one and rejects another with a problem
// type and a detail using the keyboard only, sees the outbox; the console
// draws the coverage map and exports CSV, shows the network and the
// handover statistics. axe-core runs on every page; each page leaves a
// screenshot in docs/screenshots/amt-*.png.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp/kb"

	"github.com/verbund/verbund/e2e/proc"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// The cases use browser_portal_test.go's leikaAnmeldung (a move) and
// leikaGewerbe.

func TestBrowserStaff(t *testing.T) {
	n := startPortalNet(t)
	pw := n.user(t, n.B.API, n.DirB, "sachbearbeiterin", nodev1.Role_ROLE_CLERK)
	tcAccept := n.caseTo(t, munichARS, leikaAnmeldung, "Umzug nach München")
	tcReject := n.caseTo(t, munichARS, leikaGewerbe, "Gewerbe in München")
	serviceName := func(key string) string {
		q := registryv1connect.NewQueryServiceClient(proc.BearerClient(""), n.B.API)
		res, err := q.GetService(context.Background(), connect.NewRequest(&registryv1.GetServiceRequest{LeikaKey: key}))
		if err != nil {
			t.Fatalf("GetService %s: %v", key, err)
		}
		return res.Msg.GetService().GetName()
	}
	p := newBrowser(t, n.B.API)

	t.Run("sign in", func(t *testing.T) {
		p.visit(t, "/amt/posteingang")
		if got := p.path(t); !strings.HasPrefix(got, "/amt/anmelden?weiter=") {
			t.Fatalf("the inbox without a session is at %q, want the sign-in page", got)
		}
		axeCheck(t, p)
		screenshot(t, p, "amt-anmelden")
		p.typeText(t, "#benutzername", "sachbearbeiterin")
		p.typeText(t, "#passwort", pw)
		p.press(t, kb.Enter)
		waitPath(t, p, "/amt/posteingang")
	})

	t.Run("inbox", func(t *testing.T) {
		p.visit(t, "/amt/posteingang")
		pageTiming(t, p)
		rows := evalJS[[]string](t, p, `[...document.querySelectorAll("table tbody tr")].map(r => r.innerText)`)
		if len(rows) != 2 {
			t.Fatalf("inbox rows: %q, want the 2 cases", rows)
		}
		for _, c := range []struct{ tc, service string }{{tcAccept, serviceName(leikaAnmeldung)}, {tcReject, serviceName(leikaGewerbe)}} {
			row := rowWith(rows, c.tc)
			if row == "" || !strings.Contains(row, c.service) || !strings.Contains(row, "Verbund-Betreiber") || !strings.Contains(row, "Neu eingegangen") {
				t.Errorf("inbox row of %s: %q, want service %q, sender Verbund-Betreiber, state Neu eingegangen", c.tc, row, c.service)
			}
		}
		axeCheck(t, p)
		screenshot(t, p, "amt-posteingang")
		p.phone(t)
		p.visit(t, "/amt/posteingang")
		screenshot(t, p, "amt-posteingang-375")
		p.desktop(t)
	})

	t.Run("accept with the keyboard", func(t *testing.T) {
		p.visit(t, "/amt/posteingang")
		tabUntil(t, p, fmt.Sprintf(`document.activeElement.tagName === "A" && document.activeElement.closest("tr") !== null && document.activeElement.closest("tr").innerText.includes(%q)`, tcAccept))
		p.press(t, kb.Enter)
		waitPath(t, p, "/amt/fall/")
		if got := p.text(t, "#sender"); !strings.Contains(got, "Verbund-Betreiber") {
			t.Errorf("sender %q", got)
		}
		if got := p.text(t, "#signature"); !strings.Contains(got, "geprüft") {
			t.Errorf("signature %q, want it verified", got)
		}
		if got := p.text(t, ".vb-case-data"); !strings.Contains(got, "Erika Mustermann") {
			t.Errorf("case data %q", got)
		}
		// The proactive offers of a move: registry data (ListNextSteps).
		if !p.exists(t, "#next-steps li") {
			t.Errorf("no next steps for a move: %q", p.text(t, ".vb-case__aside"))
		}
		axeCheck(t, p)
		screenshot(t, p, "amt-fall")
		tabUntil(t, p, `document.activeElement.id === "accept"`)
		p.press(t, kb.Enter)
		waitPath(t, p, "?hinweis=angenommen")
		if got := p.text(t, "[role=status]"); !strings.Contains(got, "Der Fall ist angenommen") {
			t.Errorf("notice %q", got)
		}
		if got := p.text(t, "#case-status"); got != "Angenommen" {
			t.Errorf("status %q", got)
		}
		axeCheck(t, p)
		screenshot(t, p, "amt-fall-angenommen")
		if st := caseState(t, n, tcAccept); st.GetSummary().GetState() != federationv1.CaseState_CASE_STATE_ACCEPTED {
			t.Errorf("case %s on the node: %v, want ACCEPTED", tcAccept, st.GetSummary().GetState())
		}
	})

	t.Run("reject with the keyboard", func(t *testing.T) {
		p.visit(t, "/amt/posteingang")
		tabUntil(t, p, fmt.Sprintf(`document.activeElement.tagName === "A" && document.activeElement.closest("tr") !== null && document.activeElement.closest("tr").innerText.includes(%q)`, tcReject))
		p.press(t, kb.Enter)
		waitPath(t, p, "/amt/fall/")
		// Into the radio group of problem types, then the second type.
		tabUntil(t, p, `document.activeElement.name === "problem"`)
		p.press(t, kb.ArrowDown)
		if v := evalJS[string](t, p, `(document.querySelector("input[name=problem]:checked") || {}).value || ""`); v != "urn:verbund:problem:unvollstaendig" {
			t.Fatalf("problem type chosen with the arrow key: %q", v)
		}
		tabUntil(t, p, `document.activeElement.id === "detail"`)
		p.press(t, "Es fehlt die Gewerbeerlaubnis.")
		tabUntil(t, p, `document.activeElement.id === "reject"`)
		p.press(t, kb.Enter)
		waitPath(t, p, "?hinweis=abgelehnt")
		if got := p.text(t, "[role=status]"); !strings.Contains(got, "Der Fall ist abgelehnt") {
			t.Errorf("notice %q", got)
		}
		if got := p.text(t, "#history"); !strings.Contains(got, "Unterlagen oder Angaben unvollständig: Es fehlt die Gewerbeerlaubnis.") {
			t.Errorf("history %q lacks the problem", got)
		}
		axeCheck(t, p)
		screenshot(t, p, "amt-fall-abgelehnt")
		c := caseState(t, n, tcReject)
		var problem *federationv1.Problem
		for _, e := range c.GetEvents() {
			if e.GetType() == federationv1.EventType_EVENT_TYPE_REJECTED {
				problem = e.GetProblem()
			}
		}
		if c.GetSummary().GetState() != federationv1.CaseState_CASE_STATE_REJECTED || problem.GetType() != "urn:verbund:problem:unvollstaendig" || problem.GetDetail() != "Es fehlt die Gewerbeerlaubnis." {
			t.Errorf("case %s on the node: %v, problem %+v", tcReject, c.GetSummary().GetState(), problem)
		}
	})

	t.Run("outbox", func(t *testing.T) {
		// The accept and reject events go back to A; wait until delivered.
		if err := waitUntil(30*time.Second, func() error {
			p.visit(t, "/amt/postausgang")
			if got := p.text(t, "main"); !strings.Contains(got, "Zugestellt (2)") {
				return fmt.Errorf("outbox: %q", got)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		got := p.text(t, "main")
		for _, want := range []string{"Nachricht: Angenommen", "Nachricht: Abgelehnt", "Verbund-Betreiber", "Noch nicht zugestellt (0)"} {
			if !strings.Contains(got, want) {
				t.Errorf("outbox lacks %q", want)
			}
		}
		pageTiming(t, p)
		axeCheck(t, p)
		screenshot(t, p, "amt-postausgang")
	})

	t.Run("console", func(t *testing.T) {
		p.visit(t, "/amt/konsole")
		axeCheck(t, p)
		screenshot(t, p, "amt-konsole")
	})

	t.Run("coverage map and CSV", func(t *testing.T) {
		p.visit(t, "/amt/konsole/abdeckung?leistung="+leikaGewerbe+"&land=09")
		pageTiming(t, p)
		if p.exists(t, "[role=alert]") {
			t.Fatalf("coverage page error: %q", p.text(t, "[role=alert]"))
		}
		municipalities := evalJS[int](t, p, `+document.getElementById("fig-municipalities").textContent`)
		marks := evalJS[int](t, p, `document.querySelectorAll("svg.vb-map .vb-mark[class*=vb-mark--]").length - 3`) // minus the legend
		rows := evalJS[int](t, p, `document.querySelectorAll("#coverage-table tbody tr").length`)
		gaps := evalJS[int](t, p, `+document.getElementById("fig-gaps").textContent`)
		// The table is paged (100 a page); the caption names the range.
		if got := p.text(t, "#coverage-caption"); !strings.Contains(got, fmt.Sprintf("Gemeinden 1 bis 100 von %d", municipalities)) {
			t.Errorf("caption %q", got)
		}
		if municipalities < 100 || rows != min(municipalities, 100) || marks > municipalities || marks < municipalities*9/10 {
			t.Errorf("Bayern: %d municipalities, %d table rows, %d map marks", municipalities, rows, marks)
		}
		if gapMarks := evalJS[int](t, p, `document.querySelectorAll("svg.vb-map path.vb-mark--gap").length - 1`); gaps > 0 && gapMarks == 0 {
			t.Errorf("%d gaps but no gap mark on the map", gaps)
		}
		axeCheck(t, p)
		screenshot(t, p, "amt-konsole-abdeckung")
		// Sorting without script: the header link of the name column.
		// Sorting is a plain link (no script on the page does it): follow it.
		href := evalJS[string](t, p, `document.querySelector("#coverage-table th:first-child a").getAttribute("href")`)
		if !strings.HasPrefix(href, "/amt/konsole/abdeckung?") || !strings.Contains(href, "sort=gemeinde") {
			t.Fatalf("name header links to %q", href)
		}
		p.visit(t, href)
		names := evalJS[[]string](t, p, `[...document.querySelectorAll("#coverage-table tbody tr td:first-child")].slice(0, 5).map(td => td.textContent)`)
		if len(names) < 2 || strings.ToLower(names[0]) > strings.ToLower(names[1]) && !strings.ContainsAny(names[0]+names[1], "ÄÖÜäöü") {
			t.Errorf("sorted by name: %q", names)
		}
		// The export, fetched by the page with its session cookie.
		type csvRes struct {
			Status int    `json:"status"`
			Type   string `json:"type"`
			BOM    bool   `json:"bom"`
			Head   string `json:"head"`
			Lines  int    `json:"lines"`
		}
		r := evalJS[csvRes](t, p, `fetch(document.getElementById("csv-link").href).then(async r => {
			const b = new Uint8Array(await r.arrayBuffer());
			const text = new TextDecoder("utf-8").decode(b);
			const lines = text.split("\r\n").filter(l => l !== "");
			return {status: r.status, type: r.headers.get("content-type"), bom: b[0] === 0xEF && b[1] === 0xBB && b[2] === 0xBF, head: lines[0].replace(/^\uFEFF/, ""), lines: lines.length};
		})`)
		if r.Status != 200 || r.Type != "text/csv; charset=utf-8" || !r.BOM || !strings.HasPrefix(r.Head, "Regionalschlüssel;Gemeinde;Stand;") || r.Lines != municipalities+1 {
			t.Errorf("CSV export: %+v, want 200 text/csv with BOM, a semicolon header and %d lines", r, municipalities+1)
		}
	})

	t.Run("network", func(t *testing.T) {
		p.visit(t, "/amt/konsole/netz")
		pageTiming(t, p)
		rows := evalJS[[]string](t, p, `[...document.querySelectorAll("#nodes tbody tr")].map(r => r.innerText)`)
		if len(rows) != 2 {
			t.Fatalf("nodes: %q, want A and B", rows)
		}
		if got := p.text(t, "#leader"); !strings.Contains(got, "Commit-Index") {
			t.Errorf("leader line %q", got)
		}
		for _, r := range rows {
			if strings.Contains(r, "antwortet nicht") {
				t.Errorf("a node of the test network does not answer: %q", r)
			}
		}
		axeCheck(t, p)
		screenshot(t, p, "amt-konsole-netz")
	})

	t.Run("handover statistics", func(t *testing.T) {
		p.visit(t, "/amt/konsole/uebergaben")
		pageTiming(t, p)
		if got := p.text(t, "#sources-summary"); got != "2 von 2 Knoten haben geantwortet." {
			t.Errorf("sources: %q (%s)", got, p.text(t, "#sources"))
		}
		// B received the two cases; one was decided (rejected) and one
		// accepted.
		if got := p.text(t, "#fig-handovers"); got != "2" {
			t.Errorf("incoming handovers %q, want 2", got)
		}
		if n := evalJS[int](t, p, `document.querySelectorAll("svg.vb-chart").length`); n != 2 {
			t.Errorf("%d charts, want 2", n)
		}
		axeCheck(t, p)
		screenshot(t, p, "amt-konsole-uebergaben")
	})
}

// rowWith returns the first row that contains s.
func rowWith(rows []string, s string) string {
	for _, r := range rows {
		if strings.Contains(r, s) {
			return r
		}
	}
	return ""
}

// tabUntil presses Tab until the JavaScript condition cond holds (at most
// 120 times): the keyboard-only way to an element.
func tabUntil(t *testing.T, p *page, cond string) {
	t.Helper()
	for range 120 {
		p.tab(t, 1)
		if evalJS[bool](t, p, cond) {
			return
		}
	}
	t.Fatalf("Tab never reached %s (focus ends on %s)", cond, p.focused(t))
}

// waitPath waits until the page's path and query contain want.
func waitPath(t *testing.T, p *page, want string) {
	t.Helper()
	if err := waitUntil(10*time.Second, func() error {
		if got := p.path(t); !strings.Contains(got, want) {
			return fmt.Errorf("at %q, want %q", got, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	p.waitLoaded(t)
}

// pageTiming logs the navigation timing of the page just visited.
func pageTiming(t *testing.T, p *page) {
	t.Helper()
	t.Logf("%s: %s", p.path(t), p.timing(t))
}

// caseState reads a case of B's inbox by tracking code over the API.
func caseState(t *testing.T, n *portalNet, tracking string) *federationv1.Case {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := n.handover(n.B.API)
	res, err := c.ListInbox(ctx, connect.NewRequest(&federationv1.ListInboxRequest{PageSize: 1000}))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Msg.GetCases() {
		if s.GetTrackingCode() == tracking {
			g, err := c.GetCase(ctx, connect.NewRequest(&federationv1.GetCaseRequest{HandoverId: s.GetHandoverId()}))
			if err != nil {
				t.Fatal(err)
			}
			return g.Msg.GetCase()
		}
	}
	t.Fatalf("case %s not in B's inbox", tracking)
	return nil
}
