package web

import (
	"context"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Case tracking: the citizen enters the tracking code (POST with CSRF, so
// that the code stays out of URLs and logs), the node collects the
// verified timeline (HandoverService.TrackCase) and the page shows it with
// names, what happens next, and the proactive offers of the receiving
// municipality (ListNextSteps). Look-ups are limited per address
// (Config.TrackingLimit a minute).

// maxOffers bounds the proactive offers, and so the FindProviders calls
// of one tracking page.
const maxOffers = 5

type trackStep struct {
	*federationv1.TimelineEntry
	Org, From, To, ForwardedTo string
}

type offer struct {
	Service   *registryv1.Service
	Note      string
	Providers []provider
}

type trackData struct {
	Code        string
	Steps       []trackStep
	Unreachable []string
	// Holder handled the case last; Status says what happens next.
	Holder, Status string
	// Place is the municipality that received the case, Situation the
	// life situation of the offers.
	Place     *Place
	Situation string
	Offers    []offer
}

func (s *Server) trackPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "verfolgen", s.portalPage(r, "Antrag verfolgen", &trackData{}))
}

func (s *Server) trackCase(w http.ResponseWriter, r *http.Request) {
	code := strings.ToUpper(strings.TrimSpace(r.PostFormValue("code")))
	d := &trackData{Code: code}
	pg := s.portalPage(r, "Antrag verfolgen", d)
	if !s.tracker.allow(r.RemoteAddr) {
		pg.Title = "Zu viele Abfragen"
		pg.Error = "Sie haben in kurzer Zeit zu viele Vorgangsnummern abgefragt. Zum Schutz der Anträge ist das begrenzt. Bitte warten Sie eine Minute und versuchen Sie es dann noch einmal."
		w.Header().Set("Retry-After", "60")
		s.render(w, r, http.StatusTooManyRequests, "verfolgen", pg)
		return
	}
	if code == "" {
		pg.Error = "Bitte geben Sie Ihre Vorgangsnummer ein."
		s.render(w, r, http.StatusBadRequest, "verfolgen", pg)
		return
	}
	ctx := citizenCtx(r)
	res, err := s.api.handover.TrackCase(ctx, connect.NewRequest(&federationv1.TrackCaseRequest{TrackingCode: code}))
	switch {
	case err == nil:
	case apiCode(err) == connect.CodeNotFound || apiCode(err) == connect.CodeInvalidArgument:
		pg.Error = "Zu dieser Vorgangsnummer haben wir keinen Antrag gefunden. Bitte prüfen Sie die Nummer (zum Beispiel VB-1234-ABCD-5678)."
		s.render(w, r, http.StatusNotFound, "verfolgen", pg)
		return
	default:
		s.fail(w, r, http.StatusBadGateway, "Der Stand Ihres Antrags konnte gerade nicht abgefragt werden. Bitte versuchen Sie es gleich noch einmal.", err)
		return
	}
	names := s.orgNames(ctx, res.Msg)
	name := func(id string) string {
		if n := names[id]; n != nil {
			return n.GetName()
		}
		return id
	}
	var receiver string
	for _, e := range res.Msg.GetEntries() {
		d.Steps = append(d.Steps, trackStep{TimelineEntry: e, Org: name(e.GetOrganisationId()), From: name(e.GetFromOrganisationId()),
			To: name(e.GetToOrganisationId()), ForwardedTo: name(e.GetForwardedTo())})
		if e.GetType() == federationv1.EventType_EVENT_TYPE_HANDED_OVER {
			receiver = e.GetToOrganisationId()
		}
	}
	for _, id := range res.Msg.GetUnreachableOrganisationIds() {
		d.Unreachable = append(d.Unreachable, name(id))
	}
	if n := len(d.Steps); n > 0 {
		last := d.Steps[n-1]
		d.Holder = last.Org
		d.Status = statusText(last)
	}
	if o := names[receiver]; o.GetKind() == registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY && res.Msg.GetLeikaKey() != "" {
		d.Place = placeOf(o)
		d.Situation, d.Offers = s.offers(ctx, res.Msg.GetLeikaKey(), o.GetId())
	}
	s.render(w, r, http.StatusOK, "verfolgen", pg)
}

// orgNames looks up the organisations of a timeline, one call each (the
// path is short: TrackCase follows a bounded number of organisations).
func (s *Server) orgNames(ctx context.Context, res *federationv1.TrackCaseResponse) map[string]*registryv1.Organisation {
	ids := append([]string(nil), res.GetOrganisationIds()...)
	for _, e := range res.GetEntries() {
		ids = append(ids, e.GetOrganisationId(), e.GetFromOrganisationId(), e.GetToOrganisationId(), e.GetForwardedTo())
	}
	out := map[string]*registryv1.Organisation{}
	for _, id := range ids {
		if _, done := out[id]; done || id == "" || len(out) >= 16 {
			continue
		}
		out[id] = nil
		if o, err := s.api.query.GetOrganisation(ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{Id: id})); err == nil {
			out[id] = o.Msg.GetOrganisation()
		}
	}
	return out
}

// statusText says, for the last step, what happens next.
func statusText(st trackStep) string {
	switch st.GetType() {
	case federationv1.EventType_EVENT_TYPE_HANDED_OVER:
		return st.To + " hat Ihren Antrag erhalten und prüft ihn. Sie hören von dort, sobald er angenommen ist oder etwas fehlt."
	case federationv1.EventType_EVENT_TYPE_ACCEPTED:
		return st.Org + " bearbeitet Ihren Antrag. Sie werden benachrichtigt, wenn er abgeschlossen ist."
	case federationv1.EventType_EVENT_TYPE_REJECTED:
		s := st.Org + " hat den Antrag zurückgewiesen"
		if p := st.GetProblem(); p != nil && p.GetTitle() != "" {
			s += ": " + p.GetTitle()
			if p.GetDetail() != "" {
				s += " – " + p.GetDetail()
			}
		}
		return s + ". Bitte wenden Sie sich an " + st.Org + " oder an die Behördennummer 115."
	case federationv1.EventType_EVENT_TYPE_COMPLETED:
		return "Ihr Antrag ist abgeschlossen. Es ist nichts weiter zu tun."
	case federationv1.EventType_EVENT_TYPE_FORWARDED:
		return "Ihr Antrag wurde an " + st.ForwardedTo + " weitergeleitet. Die Stelle meldet sich bei Ihnen."
	}
	return ""
}

// offers returns the next services of the case's life situation in the
// municipality ars, each with its providers there: ListNextSteps, or, on
// a node that does not answer it yet, the other services of the trigger
// service's first life situation. Each offer shows the best provider
// there; at most maxOffers FindProviders calls.
func (s *Server) offers(ctx context.Context, trigger, ars string) (string, []offer) {
	var keys []string
	notes := map[string]string{}
	var situation string
	ns, err := s.api.query.ListNextSteps(ctx, connect.NewRequest(&registryv1.ListNextStepsRequest{TriggerLeikaKey: trigger, Area: ars}))
	switch {
	case err == nil:
		for _, n := range ns.Msg.GetNextSteps() {
			if situation == "" {
				situation = n.GetLifeSituation()
			}
			for _, k := range n.GetNextLeikaKeys() {
				if _, dup := notes[k]; !dup && k != trigger {
					notes[k] = n.GetNote()
					keys = append(keys, k)
				}
			}
		}
	case apiCode(err) == connect.CodeUnimplemented:
		svc, err := s.api.query.GetService(ctx, connect.NewRequest(&registryv1.GetServiceRequest{LeikaKey: trigger}))
		if err != nil || len(svc.Msg.GetService().GetLifeSituations()) == 0 {
			return "", nil
		}
		situation = svc.Msg.GetService().GetLifeSituations()[0]
		hs, err := s.api.query.SearchServices(ctx, connect.NewRequest(&registryv1.SearchServicesRequest{LifeSituation: situation, Limit: 20}))
		if err != nil {
			return "", nil
		}
		for _, h := range hs.Msg.GetHits() {
			if k := h.GetService().GetLeikaKey(); k != trigger {
				keys = append(keys, k)
			}
		}
	default:
		s.log.Warn("next steps", "trigger", trigger, "err", err)
		return "", nil
	}
	var out []offer
	for _, k := range keys {
		if len(out) == maxOffers {
			break
		}
		res, err := s.api.query.FindProviders(ctx, connect.NewRequest(&registryv1.FindProvidersRequest{LeikaKey: k, Area: ars, Limit: 1}))
		if err != nil || res.Msg.GetService() == nil {
			continue
		}
		o := offer{Service: res.Msg.GetService(), Note: notes[k]}
		for _, p := range res.Msg.GetProviders() {
			o.Providers = append(o.Providers, providerOf(p))
		}
		out = append(out, o)
	}
	return situation, out
}
