package web

import (
	"context"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"

	"connectrpc.com/connect"
)

// staffFuncs are the staff pages' template functions.
var staffFuncs = template.FuncMap{
	// dict builds a map from key, value pairs (a sub-template's data).
	"dict": func(kv ...any) (map[string]any, error) {
		if len(kv)%2 != 0 {
			return nil, errors.New("dict: odd number of arguments")
		}
		m := make(map[string]any, len(kv)/2)
		for i := 0; i < len(kv); i += 2 {
			k, ok := kv[i].(string)
			if !ok {
				return nil, errors.New("dict: key is not a string")
			}
			m[k] = kv[i+1]
		}
		return m, nil
	},
}

// staffRoutes mounts the clerk's inbox and the agency console under /amt/.
func (s *Server) staffRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /amt/anmelden", s.signInPage)
	mux.HandleFunc("POST /amt/anmelden", s.postOnly(s.signInPost))
	mux.HandleFunc("POST /amt/abmelden", s.postOnly(s.signOutPost))
	mux.HandleFunc("GET /amt/{$}", s.staffOnly(s.staffHome))
	s.inboxRoutes(mux)   // staff_inbox.go
	s.consoleRoutes(mux) // staff_console.go
}

type signInData struct {
	Username string
	Next     string
}

func (s *Server) signInPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "anmelden", Page{Title: "Anmelden für Beschäftigte", Area: "amt", Data: signInData{Next: safeNext(r.URL.Query().Get("weiter"))}})
}

func (s *Server) signInPost(w http.ResponseWriter, r *http.Request) {
	username := strings.TrimSpace(r.PostFormValue("benutzername"))
	next := safeNext(r.PostFormValue("weiter"))
	if _, err := s.signIn(w, r, username, r.PostFormValue("passwort")); err != nil {
		msg := "Benutzername oder Passwort ist falsch."
		status := http.StatusUnauthorized
		if apiCode(err) == connect.CodeResourceExhausted {
			msg, status = "Zu viele Versuche. Bitte warten Sie eine Minute und versuchen Sie es dann noch einmal.", http.StatusTooManyRequests
		}
		s.render(w, r, status, "anmelden", Page{Title: "Anmelden für Beschäftigte", Area: "amt", Error: msg, Data: signInData{Username: username, Next: next}})
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) signOutPost(w http.ResponseWriter, r *http.Request) {
	s.signOut(w, r)
	http.Redirect(w, r, "/amt/anmelden", http.StatusSeeOther)
}

func (s *Server) staffHome(w http.ResponseWriter, r *http.Request, u *User) {
	s.render(w, r, http.StatusOK, "amt", Page{Title: "Bereich für Beschäftigte", Area: "amt", User: u})
}

// safeNext keeps a post-sign-in redirect on this site (a path, never
// another origin).
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/amt/"
	}
	return next
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

func contextWithUser(ctx context.Context, u *User) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}
