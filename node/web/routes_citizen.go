package web

import (
	"html/template"
	"net/http"
)

// citizenFuncs are the citizen pages' template functions.
var citizenFuncs = template.FuncMap{}

// citizenRoutes mounts the citizen portal: "/" and /portal/..., and the
// legal pages under /info/.
func (s *Server) citizenRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", s.startPage)
}

func (s *Server) startPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "start", Page{Title: "Verwaltungsleistungen finden", Area: "portal"})
}
