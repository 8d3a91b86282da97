package web

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// citizenFuncs are the citizen pages' template functions.
var citizenFuncs = template.FuncMap{
	"channelName": channelName,
	"matchName":   matchName,
	"kindName":    kindName,
	"fee":         feeText,
	"processing":  processingText,
	"address":     addressText,
	"eventName":   eventName,
	"telHref":     func(s string) string { return "tel:" + strings.Map(telRune, s) },
	"short":       func(s string) string { return clip(s, 220) },
	"services": func(n uint32) string {
		if n == 1 {
			return "1 Leistung"
		}
		return fmt.Sprintf("%d Leistungen", n)
	},
}

// citizenRoutes mounts the citizen portal: "/" and /portal/..., and the
// legal pages under /info/. The handlers live in citizen_*.go.
func (s *Server) citizenRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", s.startPage)
	mux.HandleFunc("GET /portal/{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/", http.StatusSeeOther) })
	mux.HandleFunc("GET /portal/ort", s.placePage)
	mux.HandleFunc("POST /portal/ort", s.postOnly(s.placeChoose))
	mux.HandleFunc("GET /portal/orte.json", s.placesJSON)
	mux.HandleFunc("GET /portal/lebenslagen", s.lifeSituationsPage)
	mux.HandleFunc("GET /portal/lebenslagen/{name}", s.lifeSituationPage)
	mux.HandleFunc("GET /portal/suche", s.searchPage)
	mux.HandleFunc("GET /portal/leistung/{leika}", s.servicePage)
	mux.HandleFunc("GET /portal/verfolgen", s.trackPage)
	mux.HandleFunc("POST /portal/verfolgen", s.postOnly(s.trackCase))
	s.infoRoutes(mux)
}

// citizenCtx is the context of the API calls a citizen's page makes.
func citizenCtx(r *http.Request) context.Context { return withCaller(r.Context(), r, "") }

// portalPage is a citizen page with the chosen place filled in.
func (s *Server) portalPage(r *http.Request, title string, data any) Page {
	return Page{Title: title, Area: "portal", Place: s.place(r), Data: data}
}

// startData is the start page's.
type startData struct {
	LifeSituations []*registryv1.LifeSituation
}

func (s *Server) startPage(w http.ResponseWriter, r *http.Request) {
	var d startData
	res, err := s.api.query.ListLifeSituations(citizenCtx(r), connect.NewRequest(&registryv1.ListLifeSituationsRequest{}))
	if err != nil {
		s.log.Warn("start page: life situations", "err", err)
	} else {
		d.LifeSituations = res.Msg.GetLifeSituations()
	}
	s.render(w, r, http.StatusOK, "start", s.portalPage(r, "Verwaltungsleistungen finden", d))
}

func telRune(r rune) rune {
	if (r >= '0' && r <= '9') || r == '+' {
		return r
	}
	return -1
}
