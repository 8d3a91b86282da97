package web

import (
	"net/http"
	"strings"
	"unicode/utf8"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// The legal pages every German public website must have (/info/...):
// Impressum, Datenschutz, the accessibility statement with its feedback
// form (BITV 2.0 § 7), Leichte Sprache and the pointer to sign language.

type infoData struct {
	// Operator is the organisation this node runs for.
	Operator *registryv1.Organisation
	OrgID    string
	// Sent: the feedback form was sent.
	Sent bool
}

var infoPages = map[string]string{
	"impressum":        "Impressum",
	"datenschutz":      "Datenschutzerklärung",
	"barrierefreiheit": "Erklärung zur Barrierefreiheit",
	"leichte-sprache":  "Informationen in Leichter Sprache",
	"gebaerdensprache": "Informationen in Gebärdensprache",
}

func (s *Server) infoRoutes(mux *http.ServeMux) {
	for name := range infoPages {
		mux.HandleFunc("GET /info/"+name, func(w http.ResponseWriter, r *http.Request) { s.infoPage(w, r, name, false) })
	}
	mux.HandleFunc("POST /info/barrierefreiheit", s.postOnly(s.accessibilityFeedback))
}

func (s *Server) infoPage(w http.ResponseWriter, r *http.Request, name string, sent bool) {
	d := infoData{OrgID: s.cfg.OrgID, Sent: sent}
	if name == "impressum" || name == "datenschutz" || name == "barrierefreiheit" {
		if o, err := s.api.query.GetOrganisation(citizenCtx(r), connect.NewRequest(&registryv1.GetOrganisationRequest{Id: s.cfg.OrgID})); err == nil {
			d.Operator = o.Msg.GetOrganisation()
		}
	}
	pg := Page{Title: infoPages[name], Area: "info", Data: d}
	if sent {
		pg.Notice = "Vielen Dank für Ihre Rückmeldung. Wir haben sie erhalten und antworten Ihnen innerhalb von sechs Wochen, wenn Sie uns eine Kontaktmöglichkeit genannt haben."
	}
	s.render(w, r, http.StatusOK, "info_"+strings.ReplaceAll(name, "-", "_"), pg)
}

// accessibilityFeedback takes the feedback of the accessibility statement:
// it is logged (WARN, so that operators see it) and the sender thanked.
func (s *Server) accessibilityFeedback(w http.ResponseWriter, r *http.Request) {
	msg := strings.TrimSpace(r.PostFormValue("nachricht"))
	contact := strings.TrimSpace(r.PostFormValue("kontakt"))
	page := strings.TrimSpace(r.PostFormValue("seite"))
	if msg == "" {
		pg := Page{Title: infoPages["barrierefreiheit"], Area: "info", Data: infoData{OrgID: s.cfg.OrgID},
			Error: "Bitte beschreiben Sie das Problem im Feld „Ihre Nachricht“."}
		s.render(w, r, http.StatusBadRequest, "info_barrierefreiheit", pg)
		return
	}
	s.log.Warn("accessibility feedback", "message", clip(msg, 4000), "contact", clip(contact, 200), "page", clip(page, 300))
	s.infoPage(w, r, "barrierefreiheit", true)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
