package e2e

// The browser harness: a small network like `verbund dev` (sample data,
// rate limits off) and headless Chromium (Debian's /usr/bin/chromium)
// driven with chromedp. Each browser test file starts one network
// (startPortalNet) and one browser (newBrowser) in its Test function and
// runs its steps as subtests, so that the whole browser suite stays fast.
//
// API (kept stable for the other browser test files):
//
//	n := startPortalNet(t)          // A: operator + sample data, serves the pages (n.URL); B: München's node (n.B.API)
//	p := newBrowser(t, n.URL)       // one tab, 1280x900; p.phone(t) / p.desktop(t) switch to 375 px and back
//	p.visit(t, "/portal/suche?q=x") // navigate (a path on n.URL, or a full URL) and wait for the load
//	p.click(t, sel); p.typeText(t, sel, "x"); p.press(t, kb.Tab) / p.tab(t, n) / p.enter(t)
//	p.clickNav(t, sel); p.clickLink(t, "Linktext") // click and wait for the next page
//	p.text(t, sel); p.exists(t, sel); p.waitVisible(t, sel); p.focused(t); p.path(t)
//	evalJS[T](t, p, js); p.fetchStatus(t, path)
//	axeCheck(t, p)                  // fails on serious or critical violations
//	screenshot(t, p, "name")        // docs/screenshots/name.png
//	p.timing(t)                     // navigation timing of the current page
//	n.caseTo(t, munichARS, leika, reason) // a handover from A to München (B), delivered; its tracking code
//	n.user(t, n.B.API, n.DirB, "name", nodev1.Role_ROLE_CLERK) // a staff user on B; returns the password
//	n.handover(api)                 // a case-worker client (every role) of A or B
//
// The element helpers use JavaScript and input events, not chromedp's DOM
// queries (those lose the document after a navigation to another origin).
// A missing browser or axe-core fails the test with what to install;
// nothing is skipped.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/verbund/verbund/e2e/proc"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
)

// chromiumPath is Debian's chromium.
const chromiumPath = "/usr/bin/chromium"

// axePath is axe-core from npm (make web-deps: npm ci in node/web).
const axePath = "../node/web/node_modules/axe-core/axe.min.js"

// screenshotDir receives the screenshots (committed after a run).
const screenshotDir = "../docs/screenshots"

// MunichARS is the receiving municipality of the harness's cases: B's
// organisation.
const munichARS = "091620000000"

// portalNet is the browser tests' network: A is the network operator's
// genesis node with the sample data (like `verbund dev`), whose pages the
// browser visits; B is München's node (München, from the sample data, is
// re-registered by Bayern's state agency with B's keys), so that cases can
// be handed over to a municipality and tracked.
type portalNet struct {
	// URL is A's address (API and pages), e.g. http://127.0.0.1:41234.
	URL        string
	A, B       *proc.Process
	DirA, DirB string
	// tokens of the e2e user with every role, per API address.
	tokens map[string]string
}

// startPortalNet starts the network and waits until the sample data is
// loaded and München's node is registered. The processes end with the test.
func startPortalNet(t *testing.T) *portalNet {
	t.Helper()
	n := &portalNet{DirA: t.TempDir(), DirB: t.TempDir(), tokens: map[string]string{}}
	gossipA := freeAddr(t)
	n.A = start(t, "node", "--org", "verbund-operator", "--org-name", "Verbund-Betreiber", "--bootstrap", "--genesis", "--sample-data",
		"--data-dir", n.DirA, "--http-addr", freeAddr(t), "--raft-addr", freeAddr(t), "--gossip-addr", gossipA,
		"--log-level", "warn", "--rate-limits", "off")
	n.URL = n.A.API
	n.B = start(t, "node", "--org", munichARS, "--role", "member", "--data-dir", n.DirB,
		"--http-addr", freeAddr(t), "--gossip-addr", freeAddr(t), "--join", gossipA, "--log-level", "warn", "--rate-limits", "off")
	waitHTTP(t, n.A.API)
	waitHTTP(t, n.B.API)
	// München exists in the sample data with a sample key; Bayern's state
	// agency (its key is among the sample keys) registers B's keys and
	// endpoint for it.
	args := []string{"org", "register", munichARS, "--node", n.B.API,
		"--key", filepath.Join(n.DirA, "keys", "sample", "land-09.jwk"), "--as", "land-09", "--addr", n.A.API, "--timeout", "30s"}
	if out, err := run(t, args...); err != nil {
		t.Fatalf("verbund %v: %v\n%s", args, err, out)
	}
	t.Setenv("VERBUND_CONFIG_DIR", t.TempDir())
	for _, x := range []struct{ dir, api string }{{n.DirA, n.A.API}, {n.DirB, n.B.API}} {
		tok, err := proc.Authorize(binary, x.dir, x.api)
		if err != nil {
			t.Fatal(err)
		}
		n.tokens[x.api] = tok
	}
	return n
}

// handover is a case-worker client (the e2e user, every role) of the node
// at api.
func (n *portalNet) handover(api string) federationv1connect.HandoverServiceClient {
	return federationv1connect.NewHandoverServiceClient(proc.BearerClient(n.tokens[api]), api)
}

// caseTo hands a case for leika over from A to recipient (whose node must
// be B), waits until it is delivered, and returns its tracking code.
func (n *portalNet) caseTo(t *testing.T, recipient, leika, reason string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := n.handover(n.A.API).SendHandover(ctx, connect.NewRequest(&federationv1.SendHandoverRequest{
		RecipientOrganisationId: recipient,
		CaseJson:                `{"applicant":"Erika Mustermann","subject":"` + reason + `"}`,
		Reason:                  reason,
		LeikaKey:                leika,
	}))
	if err != nil {
		t.Fatalf("send handover to %s: %v", recipient, err)
	}
	if err := waitUntil(30*time.Second, func() error {
		out, err := n.handover(n.A.API).ListOutbox(ctx, connect.NewRequest(&federationv1.ListOutboxRequest{PageSize: 1000}))
		if err != nil {
			return err
		}
		for _, e := range out.Msg.GetEntries() {
			if e.GetId() == res.Msg.GetHandoverId() || e.GetHandoverId() == res.Msg.GetHandoverId() {
				if e.GetState() == federationv1.OutboxState_OUTBOX_STATE_DELIVERED {
					return nil
				}
				return fmt.Errorf("handover %s: %s %s", res.Msg.GetHandoverId(), e.GetState(), e.GetLastError())
			}
		}
		return fmt.Errorf("handover %s not in the outbox", res.Msg.GetHandoverId())
	}); err != nil {
		t.Fatal(err)
	}
	return res.Msg.GetTrackingCode()
}

// user creates (or resets) a staff user on the node at api (data dir dir)
// with roles, signed in as the initial admin, and returns its password.
func (n *portalNet) user(t *testing.T, api, dir, username string, roles ...nodev1.Role) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adminPW, err := os.ReadFile(filepath.Join(dir, "initial-admin-password"))
	if err != nil {
		t.Fatal(err)
	}
	authc := nodev1connect.NewAuthServiceClient(proc.BearerClient(""), api)
	res, err := authc.SignIn(ctx, connect.NewRequest(&nodev1.SignInRequest{Username: "admin", Password: strings.TrimSpace(string(adminPW))}))
	if err != nil {
		t.Fatalf("sign in as admin on %s: %v", api, err)
	}
	admin := nodev1connect.NewAuthServiceClient(proc.BearerClient(res.Msg.GetToken()), api)
	pw := "Passwort-" + username + "-2026!"
	_, err = admin.CreateUser(ctx, connect.NewRequest(&nodev1.CreateUserRequest{
		User: &nodev1.User{Username: username, DisplayName: username, Roles: roles}, Password: pw}))
	if connect.CodeOf(err) == connect.CodeAlreadyExists {
		_, err = admin.ResetPassword(ctx, connect.NewRequest(&nodev1.ResetPasswordRequest{Username: username, Password: pw}))
	}
	if err != nil {
		t.Fatalf("create user %s on %s: %v", username, api, err)
	}
	return pw
}

// page is one browser tab.
type page struct {
	ctx  context.Context
	base string
}

// The desktop and phone viewports.
const (
	desktopWidth, desktopHeight = 1280, 900
	phoneWidth, phoneHeight     = 375, 812
)

// newBrowser starts headless Chromium with a fresh profile and opens one
// tab on base (its pages are visited by path). The browser ends with the
// test.
func newBrowser(t *testing.T, base string) *page {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("no browser at %s: install Debian's chromium (apt-get install chromium)", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(desktopWidth, desktopHeight),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	p := &page{ctx: ctx, base: strings.TrimSuffix(base, "/")}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v (install Debian's chromium: apt-get install chromium)", chromiumPath, err)
	}
	p.desktop(t)
	return p
}

// run runs chromedp actions with a bound, failing the test on error.
func (p *page) run(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// get runs an action that returns a value, failing the test on error.
func get[T any](t *testing.T, p *page, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		if len(what) > 200 {
			what = what[:200] + "…"
		}
		t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

func (p *page) viewport(t *testing.T, w, h int64, mobile bool) {
	t.Helper()
	opts := []chromedp.EmulateViewportOption{chromedp.EmulatePortrait}
	if mobile {
		opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	p.run(t, "viewport", chromedp.EmulateViewport(w, h, opts...))
}

// phone switches to a 375 px wide phone viewport; desktop back.
func (p *page) phone(t *testing.T)   { t.Helper(); p.viewport(t, phoneWidth, phoneHeight, true) }
func (p *page) desktop(t *testing.T) { t.Helper(); p.viewport(t, desktopWidth, desktopHeight, false) }

// visit opens path (or a full URL) and waits for the load event.
func (p *page) visit(t *testing.T, path string) {
	t.Helper()
	u := path
	if strings.HasPrefix(path, "/") {
		u = p.base + path
	}
	p.run(t, "visit "+u, chromedp.Navigate(u))
	p.waitLoaded(t)
}

// The element helpers work through JavaScript and input events rather
// than chromedp's DOM queries, which lose track of the document after a
// navigation to another origin (another node's pages).

// click clicks (a real mouse event) the first element matching the CSS
// selector sel, once it is visible.
func (p *page) click(t *testing.T, sel string) {
	t.Helper()
	p.waitVisible(t, sel)
	xy := evalJS[[]float64](t, p, fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.scrollIntoView({block: "center"}); const r = e.getBoundingClientRect(); return [r.left + r.width/2, r.top + r.height/2]; })()`, sel))
	p.run(t, "click "+sel, chromedp.MouseClickXY(xy[0], xy[1]))
}

// typeText focuses sel and types s as key events.
func (p *page) typeText(t *testing.T, sel, s string) {
	t.Helper()
	p.waitVisible(t, sel)
	evalJS[bool](t, p, fmt.Sprintf(`(() => { document.querySelector(%q).focus(); return true; })()`, sel))
	p.press(t, s)
}

// press sends keys (kb.Tab, kb.Enter, kb.ArrowDown, kb.Escape, or text) to
// the focused element.
func (p *page) press(t *testing.T, keys string) {
	t.Helper()
	p.run(t, "press keys", chromedp.KeyEvent(keys))
}

// tab presses Tab n times.
func (p *page) tab(t *testing.T, n int) {
	t.Helper()
	for range n {
		p.press(t, kb.Tab)
	}
}

// enter presses Enter and waits for the page it leads to.
func (p *page) enter(t *testing.T) {
	t.Helper()
	p.navigates(t, func() { p.press(t, kb.Enter) })
}

// clickNav clicks sel and waits for the page it leads to.
func (p *page) clickNav(t *testing.T, sel string) {
	t.Helper()
	p.navigates(t, func() { p.click(t, sel) })
}

// clickLink clicks the link whose text is text and waits for its page.
func (p *page) clickLink(t *testing.T, text string) {
	t.Helper()
	p.navigates(t, func() {
		if !evalJS[bool](t, p, fmt.Sprintf(`(() => { const a = [...document.querySelectorAll("a")].find(a => a.textContent.trim() === %q); if (a) { a.focus(); a.click(); } return !!a; })()`, text)) {
			t.Fatalf("no link %q on %s", text, p.path(t))
		}
	})
}

// navigates runs action, which must lead to a new document, and waits
// until that document has loaded.
func (p *page) navigates(t *testing.T, action func()) {
	t.Helper()
	evalJS[bool](t, p, `window.__vbOld = true`)
	action()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 2*time.Second)
		gone, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__vbOld !== true && document.readyState === "complete"`))
		cancel()
		if err == nil && gone {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("browser: no new page loaded after the action (still at %s)", p.path(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLoaded waits until the document is complete.
func (p *page) waitLoaded(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 2*time.Second)
		state, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.readyState`))
		cancel()
		if err == nil && state == "complete" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("browser: page did not finish loading (state %q, %v)", state, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitVisible waits until sel is visible.
func (p *page) waitVisible(t *testing.T, sel string) {
	t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return false; const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== "hidden"; })()`, sel)
	deadline := time.Now().Add(10 * time.Second)
	for !evalJS[bool](t, p, js) {
		if time.Now().After(deadline) {
			t.Fatalf("browser: %s not visible on %s", sel, p.path(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// text returns the text of the first element matching sel.
func (p *page) text(t *testing.T, sel string) string {
	t.Helper()
	if !p.exists(t, sel) {
		t.Fatalf("browser: no %s on %s: %.500s", sel, evalJS[string](t, p, "location.href"), evalJS[string](t, p, "document.documentElement.outerHTML"))
	}
	return evalJS[string](t, p, fmt.Sprintf(`document.querySelector(%q).innerText`, sel))
}

// exists reports whether an element matches sel now.
func (p *page) exists(t *testing.T, sel string) bool {
	t.Helper()
	return evalJS[bool](t, p, fmt.Sprintf(`document.querySelector(%q) !== null`, sel))
}

// evalJS evaluates js in the page and returns its value (JSON-decoded
// into T; a promise is awaited).
func evalJS[T any](t *testing.T, p *page, js string) T {
	t.Helper()
	return get(t, p, "evaluate "+js, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// focused describes the focused element: its tag, id, name and text.
func (p *page) focused(t *testing.T) string {
	t.Helper()
	return evalJS[string](t, p, `(() => { const e = document.activeElement; if (!e) return ""; return e.tagName.toLowerCase() + "#" + (e.id||"") + "[" + (e.getAttribute("name")||"") + "] " + (e.textContent||"").trim().slice(0, 80); })()`)
}

// path returns the current URL's path and query.
func (p *page) path(t *testing.T) string {
	t.Helper()
	return evalJS[string](t, p, `location.pathname + location.search`)
}

// navTiming is the Navigation Timing of the page, in milliseconds from the
// start of the navigation.
type navTiming struct {
	ResponseStart    float64 `json:"responseStart"`
	DOMContentLoaded float64 `json:"domContentLoaded"`
	FirstPaint       float64 `json:"firstContentfulPaint"`
}

func (n navTiming) String() string {
	return fmt.Sprintf("responseStart %.1f ms, DOMContentLoaded %.1f ms, first contentful paint %.1f ms", n.ResponseStart, n.DOMContentLoaded, n.FirstPaint)
}

// timing returns the current document's navigation timing (waits briefly
// for the first contentful paint entry).
func (p *page) timing(t *testing.T) navTiming {
	t.Helper()
	var n navTiming
	deadline := time.Now().Add(3 * time.Second)
	for {
		n = evalJS[navTiming](t, p, `(() => {
			const nav = performance.getEntriesByType("navigation")[0] || {};
			const fcp = performance.getEntriesByName("first-contentful-paint")[0];
			return {responseStart: nav.responseStart || 0, domContentLoaded: nav.domContentLoadedEventEnd || 0, firstContentfulPaint: fcp ? fcp.startTime : 0};
		})()`)
		if n.FirstPaint > 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// axeViolation is what axeCheck reports of one axe-core violation.
type axeViolation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target []any  `json:"target"`
		HTML   string `json:"html"`
	} `json:"nodes"`
}

var axeSource string

// axeCheck runs axe-core (WCAG 2.1 A and AA rules and best practices) on
// the current page and fails the test on any serious or critical
// violation; minor and moderate ones are logged. It returns all of them.
func axeCheck(t *testing.T, p *page) []axeViolation {
	t.Helper()
	if axeSource == "" {
		b, err := os.ReadFile(axePath)
		if err != nil {
			t.Fatalf("axe-core missing (%v): run `make web-deps` (npm ci in node/web)", err)
		}
		axeSource = string(b)
	}
	if !evalJS[bool](t, p, `typeof window.axe !== "undefined"`) {
		evalJS[bool](t, p, axeSource+";true")
	}
	vs := evalJS[[]axeViolation](t, p, `axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations)`)
	where := p.path(t)
	for _, v := range vs {
		var nodes []string
		for _, n := range v.Nodes {
			nodes = append(nodes, fmt.Sprintf("%v %s", n.Target, n.HTML))
		}
		msg := fmt.Sprintf("axe %s on %s: %s (%s):\n  %s", v.Impact, where, v.ID, v.Help, strings.Join(nodes, "\n  "))
		if v.Impact == "serious" || v.Impact == "critical" {
			t.Error(msg)
		} else {
			t.Log(msg)
		}
	}
	return vs
}

// screenshot writes the whole page (PNG) to docs/screenshots/name.png.
func screenshot(t *testing.T, p *page, name string) {
	t.Helper()
	png := get(t, p, "screenshot", chromedp.FullScreenshot(100))
	if len(png) < 1000 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot %s: %d bytes, not a PNG image (a page too tall to capture?)", name, len(png))
	}
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(screenshotDir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fetchStatus fetches path from the page (same origin, no redirects
// followed) and returns the HTTP status.
func (p *page) fetchStatus(t *testing.T, path string) int {
	t.Helper()
	return evalJS[int](t, p, fmt.Sprintf(`fetch(%q, {redirect: "manual"}).then(r => r.status)`, path))
}
