package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// fakeAPI answers the calls of the citizen pages from a few records and
// counts them.
type fakeAPI struct {
	registryv1connect.UnimplementedQueryServiceHandler
	federationv1connect.UnimplementedHandoverServiceHandler
	mu    sync.Mutex
	calls map[string]int
	orgs  map[string]*registryv1.Organisation
}

func (f *fakeAPI) count(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[name]++
}

func (f *fakeAPI) GetOrganisation(_ context.Context, r *connect.Request[registryv1.GetOrganisationRequest]) (*connect.Response[registryv1.GetOrganisationResponse], error) {
	f.count("GetOrganisation")
	o, ok := f.orgs[r.Msg.GetId()]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, nil)
	}
	return connect.NewResponse(&registryv1.GetOrganisationResponse{Organisation: o}), nil
}

// ListOrganisations ignores the query, as a node before issue 10 does:
// it pages by id.
func (f *fakeAPI) ListOrganisations(_ context.Context, r *connect.Request[registryv1.ListOrganisationsRequest]) (*connect.Response[registryv1.ListOrganisationsResponse], error) {
	f.count("ListOrganisations")
	var out []*registryv1.Organisation
	for _, id := range []string{"010010000000", "097610000000", "091620000000"} {
		if o := f.orgs[id]; r.Msg.GetNamePrefix() == "" || strings.HasPrefix(strings.ToLower(o.GetName()), strings.ToLower(r.Msg.GetNamePrefix())) {
			out = append(out, o)
		}
	}
	res := &registryv1.ListOrganisationsResponse{Organisations: out}
	if r.Msg.GetNamePrefix() == "" {
		res.NextPageToken = "more"
	}
	return connect.NewResponse(res), nil
}

func (f *fakeAPI) GetService(_ context.Context, r *connect.Request[registryv1.GetServiceRequest]) (*connect.Response[registryv1.GetServiceResponse], error) {
	f.count("GetService")
	return connect.NewResponse(&registryv1.GetServiceResponse{Service: &registryv1.Service{LeikaKey: r.Msg.GetLeikaKey(), Name: "Gewerbe-Anmeldung"}}), nil
}

func (f *fakeAPI) FindProviders(_ context.Context, r *connect.Request[registryv1.FindProvidersRequest]) (*connect.Response[registryv1.FindProvidersResponse], error) {
	f.count("FindProviders")
	return connect.NewResponse(&registryv1.FindProvidersResponse{}), nil
}

func (f *fakeAPI) SearchServices(_ context.Context, r *connect.Request[registryv1.SearchServicesRequest]) (*connect.Response[registryv1.SearchServicesResponse], error) {
	f.count("SearchServices")
	return connect.NewResponse(&registryv1.SearchServicesResponse{}), nil
}

func (f *fakeAPI) ListLifeSituations(context.Context, *connect.Request[registryv1.ListLifeSituationsRequest]) (*connect.Response[registryv1.ListLifeSituationsResponse], error) {
	f.count("ListLifeSituations")
	return connect.NewResponse(&registryv1.ListLifeSituationsResponse{LifeSituations: []*registryv1.LifeSituation{{Name: "Umzug", ServiceCount: 3}}}), nil
}

func (f *fakeAPI) TrackCase(context.Context, *connect.Request[federationv1.TrackCaseRequest]) (*connect.Response[federationv1.TrackCaseResponse], error) {
	f.count("TrackCase")
	return nil, connect.NewError(connect.CodeNotFound, nil)
}

func newFakePortal(t *testing.T, limit int) (*Server, *fakeAPI) {
	t.Helper()
	muni := registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY
	f := &fakeAPI{calls: map[string]int{}, orgs: map[string]*registryv1.Organisation{
		"010010000000": {Id: "010010000000", Name: "Flensburg, Stadt", Kind: muni, StateCode: "01"},
		"097610000000": {Id: "097610000000", Name: "Augsburg", Kind: muni, StateCode: "09", PostalCode: "86150", ParentId: "land-09"},
		"091620000000": {Id: "091620000000", Name: "München, Landeshauptstadt", Kind: muni, StateCode: "09"},
		"land-09":      {Id: "land-09", Name: "Bayern", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY},
	}}
	mux := http.NewServeMux()
	mux.Handle(registryv1connect.NewQueryServiceHandler(f))
	mux.Handle(federationv1connect.NewHandoverServiceHandler(f))
	s, err := New(Config{API: mux, OrgID: "verbund-dev", TrackingLimit: limit})
	if err != nil {
		t.Fatal(err)
	}
	return s, f
}

// get serves a GET with the cookies and returns the recorder.
func get(s *Server, target string, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", target, nil)
	for _, c := range cookies {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
}

// post serves a form POST with a valid CSRF token.
func post(s *Server, target string, form url.Values, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	tok := strings.Repeat("c", 43)
	form.Set("csrf", tok)
	req := httptest.NewRequest("POST", target, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.RemoteAddr = "192.0.2.7:4711"
	req.AddCookie(&http.Cookie{Name: csrfCookie, Value: tok})
	for _, c := range cookies {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
}

// TestTrackingLimitedPerAddress: after TrackingLimit look-ups a minute an
// address gets a 429 page in German, and the API is not asked.
func TestTrackingLimitedPerAddress(t *testing.T) {
	s, f := newFakePortal(t, 2)
	for i := range 2 {
		if rec := post(s, "/portal/verfolgen", url.Values{"code": {"VB-AAAA-BBBB-CCCC"}}); rec.Code != http.StatusNotFound {
			t.Fatalf("look-up %d: %d, want 404 (unknown code)", i, rec.Code)
		}
	}
	rec := post(s, "/portal/verfolgen", url.Values{"code": {"VB-AAAA-BBBB-CCCC"}})
	if rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "zu viele Vorgangsnummern") {
		t.Fatalf("third look-up: %d, want 429 with an explanation:\n%s", rec.Code, rec.Body)
	}
	if f.calls["TrackCase"] != 2 {
		t.Fatalf("TrackCase called %d times, want 2", f.calls["TrackCase"])
	}
}

// TestPlaceCookie: choosing a place sets verbund_ort (HttpOnly, Lax) and
// goes on only to a path of this site.
func TestPlaceCookie(t *testing.T) {
	s, _ := newFakePortal(t, 10)
	rec := post(s, "/portal/ort", url.Values{"ars": {"097610000000"}, "weiter": {"//evil.example/x"}})
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/portal/ort?gewaehlt=1" {
		t.Fatalf("choose: %d to %q", rec.Code, rec.Header().Get("Location"))
	}
	var c *http.Cookie
	for _, x := range rec.Result().Cookies() {
		if x.Name == placeCookie {
			c = x
		}
	}
	if c == nil || c.Value != "097610000000" || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
		t.Fatalf("place cookie %+v", c)
	}
	if body := get(s, "/portal/lebenslagen", c).Body.String(); !strings.Contains(body, "Ihr Wohnort: <strong>Augsburg</strong>") {
		t.Fatalf("the chosen place is not shown:\n%s", body)
	}
	if rec := post(s, "/portal/ort", url.Values{"ars": {"land-09"}}); rec.Code != http.StatusBadRequest {
		t.Fatalf("choosing a non-municipality: %d", rec.Code)
	}
	if rec := post(s, "/portal/ort", url.Values{"ars": {"097610000000"}, "weiter": {"/portal/leistung/99050012104000"}}); rec.Header().Get("Location") != "/portal/leistung/99050012104000" {
		t.Fatalf("weiter not followed: %q", rec.Header().Get("Location"))
	}
}

// TestServicePageWithoutProvider: nobody registered for the place: the
// page says so, names the state and the 115, with a bounded number of API
// calls.
func TestServicePageWithoutProvider(t *testing.T) {
	s, f := newFakePortal(t, 10)
	rec := get(s, "/portal/leistung/99050012104000", &http.Cookie{Name: placeCookie, Value: "097610000000"})
	body := rec.Body.String()
	for _, want := range []string{"Für Augsburg ist noch keine Stelle eingetragen", "tel:115", "Bayern (Landesbehörde)"} {
		if !strings.Contains(body, want) {
			t.Errorf("service page lacks %q", want)
		}
	}
	if rec.Code != 200 || f.calls["FindProviders"] != 1 || f.calls["GetService"] != 1 || f.calls["GetOrganisation"] > 2 {
		t.Fatalf("status %d, calls %v", rec.Code, f.calls)
	}
}

// TestUnknownLifeSituationListsValidOnes: 404 with the valid ones.
func TestUnknownLifeSituationListsValidOnes(t *testing.T) {
	s, _ := newFakePortal(t, 10)
	rec := get(s, "/portal/lebenslagen/Hund")
	if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), `href="/portal/lebenslagen/Umzug"`) {
		t.Fatalf("unknown life situation: %d\n%s", rec.Code, rec.Body)
	}
}

// TestFormatting: fees and addresses the German way.
func TestFormatting(t *testing.T) {
	for _, c := range []struct {
		f    *registryv1.Fee
		want string
	}{
		{&registryv1.Fee{AmountCents: 5000, MaxAmountCents: 6000}, "50,00 € bis 60,00 €"},
		{&registryv1.Fee{Free: true}, "kostenlos"},
		{&registryv1.Fee{Text: "nach Aufwand", Description: "Beglaubigung"}, "Beglaubigung: nach Aufwand"},
	} {
		if got := feeText(c.f); got != c.want {
			t.Errorf("feeText(%v) = %q, want %q", c.f, got, c.want)
		}
	}
	a := &registryv1.Address{Name: "Gewerbeamt", Street: "Implerstraße", HouseNumber: "11", PostalCode: "81371", City: "München"}
	if got := addressText(a); got != "Gewerbeamt, Implerstraße 11, 81371 München" {
		t.Errorf("addressText = %q", got)
	}
	a.Street = "Implerstraße 11"
	if got := addressText(a); got != "Gewerbeamt, Implerstraße 11, 81371 München" {
		t.Errorf("addressText with the number in the street = %q", got)
	}
}
