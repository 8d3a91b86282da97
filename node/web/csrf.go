package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
)

// CSRF protection: double submit. Each browser gets a random token in a
// SameSite=Strict, HttpOnly cookie; every form carries the same token in a
// hidden field "csrf" and a POST without a match is refused (403) before
// anything else happens. Another site can neither read the cookie nor
// make the browser send it on a cross-site POST.
const csrfCookie = "verbund_csrf"

// csrfToken returns the browser's token, setting the cookie if it has
// none yet.
func (s *Server) csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	if v := w.Header().Get("X-Verbund-CSRF"); v != "" { // set earlier in this response
		return v
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, s.cookie(r, csrfCookie, tok, 0))
	w.Header().Set("X-Verbund-CSRF", tok)
	return tok
}

// checkCSRF reports whether r (a POST) carries the browser's token.
func (s *Server) checkCSRF(r *http.Request) bool {
	c, err := r.Cookie(csrfCookie)
	if err != nil || len(c.Value) != 43 {
		return false
	}
	got := r.PostFormValue("csrf")
	return subtle.ConstantTimeCompare([]byte(got), []byte(c.Value)) == 1
}

// postOnly wraps a form handler: parses the form (at most 64 KiB) and
// refuses a missing or wrong CSRF token with 403.
func (s *Server) postOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			s.fail(w, r, http.StatusBadRequest, "Das Formular konnte nicht gelesen werden.", err)
			return
		}
		if !s.checkCSRF(r) {
			s.fail(w, r, http.StatusForbidden, "Das Formular ist abgelaufen oder kam nicht von dieser Seite. Bitte laden Sie die Seite neu und versuchen Sie es noch einmal.", nil)
			return
		}
		h(w, r)
	}
}

// cookie builds a cookie for this site: HttpOnly, SameSite=Strict, Path
// /, Secure when the request came over TLS or Config.SecureCookies.
// maxAge 0 makes a session cookie, < 0 deletes.
func (s *Server) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, HttpOnly: true,
		Secure: r.TLS != nil || s.cfg.SecureCookies, SameSite: http.SameSiteStrictMode}
}
