package web

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
	"unicode"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// The citizen's place: the municipality chosen on /portal/ort, remembered
// in the cookie verbund_ort (its 12-digit ARS; HttpOnly, SameSite=Lax so
// that a link from elsewhere still shows the place) and shown on every
// portal page.
const placeCookie = "verbund_ort"

// Place is a municipality as the portal shows it.
type Place struct {
	ARS        string `json:"ars"`
	Name       string `json:"name"`
	PostalCode string `json:"postalCode,omitempty"`
	State      string `json:"state,omitempty"`
	// ParentID is the district (or state agency) the municipality belongs to.
	ParentID string `json:"-"`
}

func placeOf(o *registryv1.Organisation) *Place {
	return &Place{ARS: o.GetId(), Name: o.GetName(), PostalCode: o.GetPostalCode(), State: stateNames[o.GetStateCode()], ParentID: o.GetParentId()}
}

// stateNames are the Länder by their two-digit key.
var stateNames = map[string]string{
	"01": "Schleswig-Holstein", "02": "Hamburg", "03": "Niedersachsen", "04": "Bremen", "05": "Nordrhein-Westfalen",
	"06": "Hessen", "07": "Rheinland-Pfalz", "08": "Baden-Württemberg", "09": "Bayern", "10": "Saarland",
	"11": "Berlin", "12": "Brandenburg", "13": "Mecklenburg-Vorpommern", "14": "Sachsen", "15": "Sachsen-Anhalt", "16": "Thüringen",
}

// validARS reports whether s is a 12-digit Regionalschlüssel.
func validARS(s string) bool {
	return len(s) == 12 && strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) < 0
}

// place returns the chosen municipality of r, or nil (no cookie, or one
// the registry does not know as a municipality).
func (s *Server) place(r *http.Request) *Place {
	c, err := r.Cookie(placeCookie)
	if err != nil || !validARS(c.Value) {
		return nil
	}
	res, err := s.api.query.GetOrganisation(citizenCtx(r), connect.NewRequest(&registryv1.GetOrganisationRequest{Id: c.Value}))
	if err != nil || res.Msg.GetOrganisation().GetKind() != registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY {
		return nil
	}
	return placeOf(res.Msg.GetOrganisation())
}

// searchPlaces finds municipalities by name or postcode, best first, at
// most limit (ListOrganisations.query ranks them); a 12-digit ARS is
// looked up directly.
func (s *Server) searchPlaces(r *http.Request, q string, limit int) ([]*Place, error) {
	q = strings.TrimSpace(q)
	if q == "" {
		return nil, nil
	}
	ctx := citizenCtx(r)
	if validARS(q) {
		res, err := s.api.query.GetOrganisation(ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{Id: q}))
		if apiCode(err) == connect.CodeNotFound {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if o := res.Msg.GetOrganisation(); o.GetKind() == registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY {
			return []*Place{placeOf(o)}, nil
		}
		return nil, nil
	}
	res, err := s.api.query.ListOrganisations(ctx, connect.NewRequest(&registryv1.ListOrganisationsRequest{
		Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Query: q, PageSize: uint32(limit)}))
	if err != nil {
		return nil, err
	}
	var out []*Place
	for _, o := range res.Msg.GetOrganisations() {
		if o.GetKind() == registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY && len(out) < limit {
			out = append(out, placeOf(o))
		}
	}
	return out, nil
}

// placeData is /portal/ort's.
type placeData struct {
	Query   string
	Results []*Place
	Next    string
	Current *Place
}

// placePage: choose the municipality. GET ?q= lists matches without
// JavaScript; verbund.js adds the autocomplete (orte.json).
func (s *Server) placePage(w http.ResponseWriter, r *http.Request) {
	d := placeData{Query: strings.TrimSpace(r.URL.Query().Get("q")), Next: localPath(r.URL.Query().Get("weiter"))}
	pg := s.portalPage(r, "Wohnort wählen", &d)
	d.Current = pg.Place
	if d.Query != "" {
		res, err := s.searchPlaces(r, d.Query, 20)
		if err != nil {
			s.fail(w, r, http.StatusBadGateway, "Die Orte konnten gerade nicht gesucht werden. Bitte versuchen Sie es gleich noch einmal.", err)
			return
		}
		d.Results = res
		if len(res) == 0 {
			pg.Error = "Zu „" + d.Query + "“ haben wir keinen Ort gefunden. Prüfen Sie die Schreibweise oder geben Sie die Postleitzahl ein."
		}
	}
	s.render(w, r, http.StatusOK, "ort", pg)
}

// placeChoose (POST ars, weiter) sets the cookie and goes on.
func (s *Server) placeChoose(w http.ResponseWriter, r *http.Request) {
	ars := strings.TrimSpace(r.PostFormValue("ars"))
	if !validARS(ars) {
		s.fail(w, r, http.StatusBadRequest, "Bitte wählen Sie einen Ort aus der Liste.", nil)
		return
	}
	res, err := s.api.query.GetOrganisation(citizenCtx(r), connect.NewRequest(&registryv1.GetOrganisationRequest{Id: ars}))
	if err != nil || res.Msg.GetOrganisation().GetKind() != registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY {
		s.fail(w, r, http.StatusBadRequest, "Diesen Ort kennen wir nicht. Bitte wählen Sie einen Ort aus der Liste.", err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: placeCookie, Value: ars, Path: "/", MaxAge: int((365 * 24 * time.Hour).Seconds()),
		HttpOnly: true, Secure: r.TLS != nil || s.cfg.SecureCookies, SameSite: http.SameSiteLaxMode})
	next := localPath(r.PostFormValue("weiter"))
	if next == "" {
		next = "/portal/ort?gewaehlt=1"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// placesJSON answers the autocomplete: at most 10 municipalities.
func (s *Server) placesJSON(w http.ResponseWriter, r *http.Request) {
	res, err := s.searchPlaces(r, r.URL.Query().Get("q"), 10)
	if err != nil {
		s.log.Warn("places json", "err", err)
		http.Error(w, `{"error":"unavailable"}`, http.StatusBadGateway)
		return
	}
	if res == nil {
		res = []*Place{}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(res)
}

// localPath returns p if it is a path on this site, else "".
func localPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") ||
		strings.IndexFunc(p, unicode.IsControl) >= 0 {
		return ""
	}
	return p
}
