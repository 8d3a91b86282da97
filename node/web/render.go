package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"maps"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

// Page is what every template gets: the frame's fields and the page's own
// Data.
type Page struct {
	// Title is the page's <title> and <h1>.
	Title string
	// Area selects the navigation: "portal", "amt" or "info".
	Area string
	// CSRF is the token every form must carry (csrf.go).
	CSRF string
	// User is the signed-in staff member, nil for citizens.
	User *User
	// Notice and Error are shown above the content (role=status / alert).
	Notice, Error string
	// Place is the citizen's chosen municipality (cookie verbund_ort),
	// shown on every portal page with a link to change it; nil: none.
	Place *Place
	// Data is the page's own data.
	Data any
}

type pages struct {
	byName map[string]*template.Template
}

// funcMaps are merged into every template: the citizen and staff files
// add their own (citizenFuncs, staffFuncs).
func funcs() template.FuncMap {
	m := template.FuncMap{
		"date": func(ms int64) string {
			if ms == 0 {
				return "–"
			}
			return time.UnixMilli(ms).In(berlin).Format("02.01.2006 15:04")
		},
		"day": func(ms int64) string {
			if ms == 0 {
				return "–"
			}
			return time.UnixMilli(ms).In(berlin).Format("02.01.2006")
		},
		"euro": euro,
	}
	maps.Copy(m, citizenFuncs)
	maps.Copy(m, staffFuncs)
	return m
}

var berlin = func() *time.Location {
	if l, err := time.LoadLocation("Europe/Berlin"); err == nil {
		return l
	}
	return time.FixedZone("MEZ", 3600)
}()

// euro formats cents the German way: 1.234,50 €.
func euro(cents int64) string {
	neg := cents < 0
	if neg {
		cents = -cents
	}
	whole, frac := cents/100, cents%100
	s := fmt.Sprint(whole)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte('.')
		}
		b.WriteRune(c)
	}
	out := fmt.Sprintf("%s,%02d €", b.String(), frac)
	if neg {
		out = "-" + out
	}
	return out
}

// parsePages parses templates/layout.html with each other template into
// its own set, named by file name without extension.
func parsePages() (*pages, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs()).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", n, err)
		}
		p.byName[base] = t
	}
	return p, nil
}

// render writes page name with status, in the frame. It renders into a
// buffer first so that a template error becomes a clean 500.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, pg Page) {
	t, ok := s.pages.byName[name]
	if !ok {
		s.log.Error("no such template", "name", name)
		http.Error(w, "Interner Fehler", http.StatusInternalServerError)
		return
	}
	if pg.CSRF == "" {
		pg.CSRF = s.csrfToken(w, r)
	}
	if pg.User == nil {
		pg.User = s.currentUser(r)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", pg); err != nil {
		s.log.Error("render", "template", name, "err", err)
		http.Error(w, "Interner Fehler", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// fail renders the error page with a message for people (German) and logs
// the cause.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, msg string, err error) {
	if err != nil {
		s.log.Warn("page failed", "path", r.URL.Path, "status", status, "err", err)
	}
	s.render(w, r, status, "error", Page{Title: "Das hat nicht geklappt", Area: "portal", Error: msg})
}
