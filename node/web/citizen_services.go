package web

import (
	"net/http"
	"regexp"
	"slices"
	"strings"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// The catalogue pages: life situations, search, and the service page with
// who delivers the service for the chosen place.

// hit is a search result as the pages show it.
type hit struct {
	Service     *registryv1.Service
	Distinction string
}

// hits turns API hits into page hits. Where the API gives no distinction
// (a node without it) but names repeat, the LeiKa key tells them apart.
func hits(in []*registryv1.ServiceHit) []hit {
	count := map[string]int{}
	for _, h := range in {
		count[h.GetService().GetName()]++
	}
	out := make([]hit, 0, len(in))
	for _, h := range in {
		d := h.GetDistinction()
		if d == "" && count[h.GetService().GetName()] > 1 {
			d = "Leistungsschlüssel " + h.GetService().GetLeikaKey()
		}
		out = append(out, hit{Service: h.GetService(), Distinction: d})
	}
	return out
}

type lifeSituationsData struct {
	LifeSituations []*registryv1.LifeSituation
}

func (s *Server) lifeSituationsPage(w http.ResponseWriter, r *http.Request) {
	res, err := s.api.query.ListLifeSituations(citizenCtx(r), connect.NewRequest(&registryv1.ListLifeSituationsRequest{}))
	if err != nil {
		s.fail(w, r, http.StatusBadGateway, "Die Lebenslagen konnten gerade nicht geladen werden. Bitte versuchen Sie es gleich noch einmal.", err)
		return
	}
	s.render(w, r, http.StatusOK, "lebenslagen", s.portalPage(r, "Lebenslagen", lifeSituationsData{res.Msg.GetLifeSituations()}))
}

type lifeSituationData struct {
	Name  string
	Hits  []hit
	Valid []*registryv1.LifeSituation
}

func (s *Server) lifeSituationPage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx := citizenCtx(r)
	res, err := s.api.query.SearchServices(ctx, connect.NewRequest(&registryv1.SearchServicesRequest{LifeSituation: name, Limit: 200}))
	if err != nil && apiCode(err) != connect.CodeInvalidArgument && apiCode(err) != connect.CodeNotFound {
		s.fail(w, r, http.StatusBadGateway, "Die Leistungen konnten gerade nicht geladen werden. Bitte versuchen Sie es gleich noch einmal.", err)
		return
	}
	d := lifeSituationData{Name: name}
	if err == nil {
		d.Hits = hits(res.Msg.GetHits())
		d.Valid = res.Msg.GetValidLifeSituations()
	}
	if len(d.Hits) == 0 && len(d.Valid) == 0 {
		// A node that does not name the valid ones: ask for them.
		if ls, err := s.api.query.ListLifeSituations(ctx, connect.NewRequest(&registryv1.ListLifeSituationsRequest{})); err == nil {
			d.Valid = ls.Msg.GetLifeSituations()
		}
	}
	if len(d.Hits) == 0 {
		pg := s.portalPage(r, "Lebenslage „"+name+"“ nicht gefunden", d)
		s.render(w, r, http.StatusNotFound, "lebenslage", pg)
		return
	}
	s.render(w, r, http.StatusOK, "lebenslage", s.portalPage(r, "Lebenslage: "+name, d))
}

type searchData struct {
	Query string
	Hits  []hit
}

func (s *Server) searchPage(w http.ResponseWriter, r *http.Request) {
	d := searchData{Query: strings.TrimSpace(r.URL.Query().Get("q"))}
	if len(d.Query) > 200 {
		d.Query = d.Query[:200]
	}
	title := "Leistungen suchen"
	if d.Query != "" {
		res, err := s.api.query.SearchServices(citizenCtx(r), connect.NewRequest(&registryv1.SearchServicesRequest{Text: d.Query, Limit: 20}))
		if err != nil {
			s.fail(w, r, http.StatusBadGateway, "Die Suche ist gerade nicht möglich. Bitte versuchen Sie es gleich noch einmal.", err)
			return
		}
		d.Hits = hits(res.Msg.GetHits())
		title = "Suchergebnisse für „" + d.Query + "“"
	}
	s.render(w, r, http.StatusOK, "suche", s.portalPage(r, title, d))
}

var leikaRE = regexp.MustCompile(`^99\d{12}$`)

// provider is one provider on the service page.
type provider struct {
	*registryv1.Provider
	// Grantor names who entitles a delegated provider (from the proof's
	// signers), OnBehalfOf the municipality it acted for.
	Grantor, OnBehalfOf string
}

type serviceData struct {
	Service   *registryv1.Service
	Place     *Place
	Providers []provider
	// Parents are the district and state of the place, shown when nobody
	// is registered for it.
	Parents []*registryv1.Organisation
}

// servicePage shows a service and who delivers it for the chosen place:
// GetService, FindProviders with proofs (the authorisation and its
// signers come with it: no call per provider), and only when nobody is
// registered, the place's district and state (two calls).
func (s *Server) servicePage(w http.ResponseWriter, r *http.Request) {
	leika := r.PathValue("leika")
	if !leikaRE.MatchString(leika) {
		s.fail(w, r, http.StatusNotFound, "Diese Leistung gibt es nicht. Suchen Sie sie über die Suche oder die Lebenslagen.", nil)
		return
	}
	ctx := citizenCtx(r)
	pl := s.place(r)
	d := serviceData{Place: pl}
	svc, err := s.api.query.GetService(ctx, connect.NewRequest(&registryv1.GetServiceRequest{LeikaKey: leika}))
	if apiCode(err) == connect.CodeNotFound {
		s.fail(w, r, http.StatusNotFound, "Diese Leistung gibt es nicht im Katalog. Suchen Sie sie über die Suche oder die Lebenslagen.", nil)
		return
	}
	if err != nil {
		s.fail(w, r, http.StatusBadGateway, "Die Leistung konnte gerade nicht geladen werden. Bitte versuchen Sie es gleich noch einmal.", err)
		return
	}
	d.Service = svc.Msg.GetService()
	if pl != nil {
		res, err := s.api.query.FindProviders(ctx, connect.NewRequest(&registryv1.FindProvidersRequest{LeikaKey: leika, Area: pl.ARS, Limit: 20, IncludeProof: true}))
		if err != nil {
			s.fail(w, r, http.StatusBadGateway, "Wer die Leistung für Ihren Ort erbringt, konnte gerade nicht abgefragt werden. Bitte versuchen Sie es gleich noch einmal oder rufen Sie die Behördennummer 115 an.", err)
			return
		}
		for _, p := range res.Msg.GetProviders() {
			d.Providers = append(d.Providers, providerOf(p))
		}
		if len(d.Providers) == 0 {
			for id := pl.ParentID; id != "" && len(d.Parents) < 3; {
				o, err := s.api.query.GetOrganisation(ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{Id: id}))
				if err != nil {
					break
				}
				d.Parents = append(d.Parents, o.Msg.GetOrganisation())
				id = o.Msg.GetOrganisation().GetParentId()
			}
		}
	}
	s.render(w, r, http.StatusOK, "leistung", Page{Title: d.Service.GetName(), Area: "portal", Place: pl, Data: d})
}

func providerOf(p *registryv1.Provider) provider {
	out := provider{Provider: p}
	a := p.GetProof().GetAuthorisation()
	if a == nil {
		return out
	}
	name := func(id string) string {
		if i := slices.IndexFunc(p.GetProof().GetSigners(), func(o *registryv1.Organisation) bool { return o.GetId() == id }); i >= 0 {
			return p.GetProof().GetSigners()[i].GetName()
		}
		return id
	}
	out.Grantor = name(a.GetGrantorId())
	if a.GetOnBehalfOf() != "" {
		out.OnBehalfOf = name(a.GetOnBehalfOf())
	}
	return out
}
