package web

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func newTestServer(t *testing.T, api http.Handler) *Server {
	t.Helper()
	if api == nil {
		api = http.NotFoundHandler()
	}
	s, err := New(Config{API: api, OrgID: "091620000000"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPagesSendSecurityHeaders: every page carries the CSP that keeps
// everything on this machine, and the start page is German HTML.
func TestPagesSendSecurityHeaders(t *testing.T) {
	s := newTestServer(t, nil)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /: %d %s", rec.Code, rec.Body)
	}
	csp := rec.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if !strings.Contains(rec.Body.String(), `<html lang="de">`) {
		t.Errorf("start page is not marked German")
	}
	var csrf *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == csrfCookie {
			csrf = c
		}
	}
	if csrf == nil || !csrf.HttpOnly || csrf.SameSite != http.SameSiteStrictMode {
		t.Fatalf("CSRF cookie missing or without HttpOnly/SameSite=Strict: %+v", csrf)
	}
}

// TestFormWithoutCSRFTokenRefused: a POST without the browser's token is
// refused before anything else happens (the API is never called).
func TestFormWithoutCSRFTokenRefused(t *testing.T) {
	called := false
	s := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true; http.NotFound(w, r) }))
	form := url.Values{"benutzername": {"clerk"}, "passwort": {"x"}, "csrf": {strings.Repeat("a", 43)}}
	req := httptest.NewRequest("POST", "/amt/anmelden", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: csrfCookie, Value: strings.Repeat("b", 43)})
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Fatalf("POST with a wrong CSRF token: %d, want 403", rec.Code)
	}
	if called {
		t.Fatal("the API was called for a form with a wrong CSRF token")
	}
}

// TestSafeNext keeps redirects after sign-in on this site.
func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{"/amt/posteingang": "/amt/posteingang", "//evil.example": "/amt/", "https://evil.example": "/amt/", "": "/amt/", "/\\evil": "/amt/"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}
