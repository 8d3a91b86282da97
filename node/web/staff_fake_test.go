package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// staffAPI is a node API with fixed data for the staff pages' tests: the
// real Connect handlers (so the pages' clients, codes and messages are
// exercised) over in-memory answers. Fields set to a Connect error make
// that call fail.
type staffAPI struct {
	federationv1connect.UnimplementedHandoverServiceHandler
	registryv1connect.UnimplementedQueryServiceHandler
	nodev1connect.UnimplementedAuthServiceHandler
	nodev1connect.UnimplementedNodeServiceHandler
	nodev1connect.UnimplementedClusterServiceHandler

	mu       sync.Mutex
	cases    map[string]*federationv1.Case
	outbox   []*federationv1.OutboxEntry
	orgs     map[string]*registryv1.Organisation
	services map[string]*registryv1.Service
	members  []*nodev1.Member
	status   *nodev1.GetStatusResponse
	stats    *federationv1.GetHandoverStatsResponse
	coverage *registryv1.GetCoverageResponse
	next     []*registryv1.NextSteps

	// Errors to answer with (nil: answer).
	actionErr, coverageErr, nextErr, statsErr, queryErr error
	// Recorded requests.
	listState   federationv1.CaseState
	rejected    *federationv1.RejectCaseRequest
	forwarded   *federationv1.ForwardCaseRequest
	accepted    []string
	orgQueries  []string
	namePrefix  []string
	actionCalls int
}

func (f *staffAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(federationv1connect.NewHandoverServiceHandler(f))
	mux.Handle(registryv1connect.NewQueryServiceHandler(f))
	mux.Handle(nodev1connect.NewAuthServiceHandler(f))
	mux.Handle(nodev1connect.NewNodeServiceHandler(f))
	mux.Handle(nodev1connect.NewClusterServiceHandler(f))
	return mux
}

func newStaffAPI() *staffAPI {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, berlin)
	f := &staffAPI{
		cases: map[string]*federationv1.Case{},
		orgs: map[string]*registryv1.Organisation{
			"091620000000": {Id: "091620000000", Name: "München", Ars: "091620000000", StateCode: "09"},
			"097610000000": {Id: "097610000000", Name: "Augsburg", Ars: "097610000000", StateCode: "09", ApiEndpoint: "http://127.0.0.1:1"},
			"land-09":      {Id: "land-09", Name: "Bayern"},
		},
		services: map[string]*registryv1.Service{
			"99115005000000": {LeikaKey: "99115005000000", Name: "Wohnsitz anmelden"},
			"99050012104000": {LeikaKey: "99050012104000", Name: "Gewerbe anmelden"},
			"99123456789000": {LeikaKey: "99123456789000", Name: "Hundesteuer anmelden"},
		},
	}
	// The signed handover's protected header: EdDSA with kid "aug-sig-1".
	hdr := "eyJhbGciOiJFZERTQSIsImtpZCI6ImF1Zy1zaWctMSIsInR5cCI6InZlcmJ1bmQtaGFuZG92ZXIrandzIn0"
	add := func(id, from, leika, caseJSON string, st federationv1.CaseState, received time.Time) {
		f.cases[id] = &federationv1.Case{
			Summary: &federationv1.CaseSummary{HandoverId: id, CaseId: "az-" + id, FromOrganisationId: from, TrackingCode: "TC-" + id,
				LeikaKey: leika, Reason: "Umzug", State: st, ReceivedAtUnixMs: received.UnixMilli(), EnvelopeSha256: strings.Repeat("ab", 32)},
			CaseJson:       caseJSON,
			SignedHandover: hdr + ".eyJ9.c2ln",
			Receipt:        "receipt",
			Attachments:    []*federationv1.Attachment{{Name: "Meldeschein.pdf", MediaType: "application/pdf", Data: []byte("%PDF-1.7"), Sha256: strings.Repeat("cd", 32)}},
		}
	}
	add("h-1", "097610000000", "99115005000000", `{"antragsteller":{"name":"Erika Mustermann","geburtsdatum":"1970-01-01"},"frist":"2026-12-01","kinder":["Max","Moritz"],"eilig":true}`,
		federationv1.CaseState_CASE_STATE_RECEIVED, now.Add(-2*time.Hour))
	add("h-2", "land-09", "99050012104000", `{"betrieb":"Bäckerei"}`, federationv1.CaseState_CASE_STATE_ACCEPTED, now.Add(-30*time.Hour))
	add("h-3", "097610000000", "99050012104000", `{"frist":"2027-01-31"}`, federationv1.CaseState_CASE_STATE_COMPLETED, now.Add(-50*time.Hour))
	f.outbox = []*federationv1.OutboxEntry{
		{Id: "o-1", Kind: federationv1.OutboxKind_OUTBOX_KIND_HANDOVER, ToOrganisationId: "097610000000", State: federationv1.OutboxState_OUTBOX_STATE_PENDING,
			Attempts: 4, LastError: "dial tcp 127.0.0.1:1: connection refused", CreatedAtUnixMs: now.Add(-time.Hour).UnixMilli(), TrackingCode: "TC-O1"},
		{Id: "o-2", Kind: federationv1.OutboxKind_OUTBOX_KIND_EVENT, EventType: federationv1.EventType_EVENT_TYPE_ACCEPTED, ToOrganisationId: "land-09",
			State: federationv1.OutboxState_OUTBOX_STATE_DELIVERED, Attempts: 1, CreatedAtUnixMs: now.Add(-3 * time.Hour).UnixMilli(),
			DeliveredAtUnixMs: now.Add(-3*time.Hour + time.Second).UnixMilli(), TrackingCode: "TC-O2"},
		{Id: "o-3", Kind: federationv1.OutboxKind_OUTBOX_KIND_HANDOVER, ToOrganisationId: "land-09", State: federationv1.OutboxState_OUTBOX_STATE_FAILED,
			Attempts: 2, LastError: "envelope expired", CreatedAtUnixMs: now.Add(-5 * time.Hour).UnixMilli(), TrackingCode: "TC-O3"},
	}
	f.next = []*registryv1.NextSteps{{Id: "umzug", LifeSituation: "Umzug", TriggerLeikaKey: "99115005000000",
		NextLeikaKeys: []string{"99123456789000"}, Note: "Wer mit Hund zuzieht, meldet ihn an."}}
	return f
}

func (f *staffAPI) WhoAmI(ctx context.Context, req *connect.Request[nodev1.WhoAmIRequest]) (*connect.Response[nodev1.WhoAmIResponse], error) {
	if req.Header().Get("Authorization") != "Bearer tok-clerk" {
		return nil, connect.NewError(connect.CodeUnauthenticated, nil)
	}
	return connect.NewResponse(&nodev1.WhoAmIResponse{User: &nodev1.User{Username: "clerk", Roles: []nodev1.Role{nodev1.Role_ROLE_CLERK}}, OrganisationId: "091620000000"}), nil
}

func (f *staffAPI) ListInbox(ctx context.Context, req *connect.Request[federationv1.ListInboxRequest]) (*connect.Response[federationv1.ListInboxResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listState = req.Msg.GetState()
	out := &federationv1.ListInboxResponse{}
	for _, id := range []string{"h-1", "h-2", "h-3"} {
		c := f.cases[id]
		if req.Msg.GetState() == 0 || c.GetSummary().GetState() == req.Msg.GetState() {
			out.Cases = append(out.Cases, c.GetSummary())
		}
	}
	return connect.NewResponse(out), nil
}

func (f *staffAPI) GetCase(ctx context.Context, req *connect.Request[federationv1.GetCaseRequest]) (*connect.Response[federationv1.GetCaseResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cases[req.Msg.GetHandoverId()]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, nil)
	}
	return connect.NewResponse(&federationv1.GetCaseResponse{Case: c}), nil
}

func (f *staffAPI) setState(id string, st federationv1.CaseState, ev *federationv1.CaseEvent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actionCalls++
	if f.actionErr != nil {
		return f.actionErr
	}
	c, ok := f.cases[id]
	if !ok {
		return connect.NewError(connect.CodeNotFound, nil)
	}
	c.Summary.State = st
	ev.AtUnixMs = time.Now().UnixMilli()
	ev.DeliveryState = federationv1.OutboxState_OUTBOX_STATE_PENDING
	c.Events = append(c.Events, ev)
	return nil
}

func (f *staffAPI) AcceptCase(ctx context.Context, req *connect.Request[federationv1.AcceptCaseRequest]) (*connect.Response[federationv1.AcceptCaseResponse], error) {
	f.accepted = append(f.accepted, req.Msg.GetHandoverId())
	if err := f.setState(req.Msg.GetHandoverId(), federationv1.CaseState_CASE_STATE_ACCEPTED, &federationv1.CaseEvent{Type: federationv1.EventType_EVENT_TYPE_ACCEPTED}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&federationv1.AcceptCaseResponse{}), nil
}

func (f *staffAPI) RejectCase(ctx context.Context, req *connect.Request[federationv1.RejectCaseRequest]) (*connect.Response[federationv1.RejectCaseResponse], error) {
	f.rejected = req.Msg
	if err := f.setState(req.Msg.GetHandoverId(), federationv1.CaseState_CASE_STATE_REJECTED, &federationv1.CaseEvent{Type: federationv1.EventType_EVENT_TYPE_REJECTED, Problem: req.Msg.GetProblem()}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&federationv1.RejectCaseResponse{}), nil
}

func (f *staffAPI) ForwardCase(ctx context.Context, req *connect.Request[federationv1.ForwardCaseRequest]) (*connect.Response[federationv1.ForwardCaseResponse], error) {
	f.forwarded = req.Msg
	if err := f.setState(req.Msg.GetHandoverId(), federationv1.CaseState_CASE_STATE_FORWARDED, &federationv1.CaseEvent{Type: federationv1.EventType_EVENT_TYPE_FORWARDED, ForwardedTo: req.Msg.GetRecipientOrganisationId()}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&federationv1.ForwardCaseResponse{}), nil
}

func (f *staffAPI) CompleteCase(ctx context.Context, req *connect.Request[federationv1.CompleteCaseRequest]) (*connect.Response[federationv1.CompleteCaseResponse], error) {
	if err := f.setState(req.Msg.GetHandoverId(), federationv1.CaseState_CASE_STATE_COMPLETED, &federationv1.CaseEvent{Type: federationv1.EventType_EVENT_TYPE_COMPLETED}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&federationv1.CompleteCaseResponse{}), nil
}

func (f *staffAPI) ListOutbox(ctx context.Context, req *connect.Request[federationv1.ListOutboxRequest]) (*connect.Response[federationv1.ListOutboxResponse], error) {
	return connect.NewResponse(&federationv1.ListOutboxResponse{Entries: f.outbox}), nil
}

func (f *staffAPI) GetHandoverStats(ctx context.Context, req *connect.Request[federationv1.GetHandoverStatsRequest]) (*connect.Response[federationv1.GetHandoverStatsResponse], error) {
	if f.statsErr != nil {
		return nil, f.statsErr
	}
	return connect.NewResponse(f.stats), nil
}

func (f *staffAPI) GetOrganisation(ctx context.Context, req *connect.Request[registryv1.GetOrganisationRequest]) (*connect.Response[registryv1.GetOrganisationResponse], error) {
	o, ok := f.orgs[req.Msg.GetId()]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, nil)
	}
	return connect.NewResponse(&registryv1.GetOrganisationResponse{Organisation: o}), nil
}

func (f *staffAPI) GetService(ctx context.Context, req *connect.Request[registryv1.GetServiceRequest]) (*connect.Response[registryv1.GetServiceResponse], error) {
	s, ok := f.services[req.Msg.GetLeikaKey()]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, nil)
	}
	return connect.NewResponse(&registryv1.GetServiceResponse{Service: s}), nil
}

func (f *staffAPI) ListOrganisations(ctx context.Context, req *connect.Request[registryv1.ListOrganisationsRequest]) (*connect.Response[registryv1.ListOrganisationsResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.Msg.GetQuery() != "" {
		f.orgQueries = append(f.orgQueries, req.Msg.GetQuery())
		if f.queryErr != nil {
			return nil, f.queryErr
		}
	}
	text := req.Msg.GetQuery() + req.Msg.GetNamePrefix()
	if req.Msg.GetNamePrefix() != "" {
		f.namePrefix = append(f.namePrefix, req.Msg.GetNamePrefix())
	}
	out := &registryv1.ListOrganisationsResponse{}
	for _, id := range []string{"091620000000", "097610000000", "land-09"} {
		if strings.HasPrefix(strings.ToLower(f.orgs[id].GetName()), strings.ToLower(text)) {
			out.Organisations = append(out.Organisations, f.orgs[id])
		}
	}
	return connect.NewResponse(out), nil
}

func (f *staffAPI) ListNextSteps(ctx context.Context, req *connect.Request[registryv1.ListNextStepsRequest]) (*connect.Response[registryv1.ListNextStepsResponse], error) {
	if f.nextErr != nil {
		return nil, f.nextErr
	}
	out := &registryv1.ListNextStepsResponse{}
	for _, n := range f.next {
		if n.GetTriggerLeikaKey() == req.Msg.GetTriggerLeikaKey() {
			out.NextSteps = append(out.NextSteps, n)
		}
	}
	return connect.NewResponse(out), nil
}

func (f *staffAPI) FindProviders(ctx context.Context, req *connect.Request[registryv1.FindProvidersRequest]) (*connect.Response[registryv1.FindProvidersResponse], error) {
	if req.Msg.GetArea() != "091620000000" {
		return nil, connect.NewError(connect.CodeInvalidArgument, nil)
	}
	return connect.NewResponse(&registryv1.FindProvidersResponse{Providers: []*registryv1.Provider{{
		Organisation: f.orgs["091620000000"], Match: registryv1.MatchKind_MATCH_KIND_OWN_MUNICIPALITY,
		Offering: &registryv1.Offering{Channels: []*registryv1.Channel{
			{Kind: registryv1.ChannelKind_CHANNEL_KIND_ONLINE, Url: "https://stadt.muenchen.de/hund"},
			{Kind: registryv1.ChannelKind_CHANNEL_KIND_PHONE, Phone: "089 233-00", Url: "javascript:alert(1)"},
			{Kind: registryv1.ChannelKind_CHANNEL_KIND_PHONE, Phone: "089 999-99"}, // a second phone: not repeated
		}},
	}}}), nil
}

func (f *staffAPI) SearchServices(ctx context.Context, req *connect.Request[registryv1.SearchServicesRequest]) (*connect.Response[registryv1.SearchServicesResponse], error) {
	out := &registryv1.SearchServicesResponse{}
	for _, s := range f.services {
		if strings.Contains(strings.ToLower(s.GetName()), strings.ToLower(req.Msg.GetText())) {
			out.Hits = append(out.Hits, &registryv1.ServiceHit{Service: s})
		}
	}
	return connect.NewResponse(out), nil
}

func (f *staffAPI) GetCoverage(ctx context.Context, req *connect.Request[registryv1.GetCoverageRequest]) (*connect.Response[registryv1.GetCoverageResponse], error) {
	if f.coverageErr != nil {
		return nil, f.coverageErr
	}
	return connect.NewResponse(f.coverage), nil
}

func (f *staffAPI) ListMembers(ctx context.Context, req *connect.Request[nodev1.ListMembersRequest]) (*connect.Response[nodev1.ListMembersResponse], error) {
	return connect.NewResponse(&nodev1.ListMembersResponse{Members: f.members}), nil
}

func (f *staffAPI) GetStatus(ctx context.Context, req *connect.Request[nodev1.GetStatusRequest]) (*connect.Response[nodev1.GetStatusResponse], error) {
	return connect.NewResponse(f.status), nil
}

// staffClient drives the pages as a signed-in clerk: it carries the
// session and CSRF cookies and does not follow redirects.
type staffClient struct {
	t    *testing.T
	h    http.Handler
	csrf string
}

func newStaffClient(t *testing.T, f *staffAPI) (*staffClient, *Server) {
	t.Helper()
	s, err := New(Config{API: f.handler(), OrgID: "091620000000", NodeID: "n-muc",
		Now: func() time.Time { return time.Date(2026, 12, 4, 10, 0, 0, 0, berlin) }})
	if err != nil {
		t.Fatal(err)
	}
	return &staffClient{t: t, h: s.Handler(), csrf: strings.Repeat("c", 43)}, s
}

func (c *staffClient) do(method, target string, form url.Values) *httptest.ResponseRecorder {
	c.t.Helper()
	var req *http.Request
	if form != nil {
		form.Set("csrf", c.csrf)
		req = httptest.NewRequest(method, target, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req = httptest.NewRequest(method, target, nil)
	}
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: "tok-clerk"})
	req.AddCookie(&http.Cookie{Name: csrfCookie, Value: c.csrf})
	rec := httptest.NewRecorder()
	c.h.ServeHTTP(rec, req)
	return rec
}

func (c *staffClient) get(target string) (int, string) {
	c.t.Helper()
	rec := c.do("GET", target, nil)
	return rec.Code, rec.Body.String()
}

func (c *staffClient) post(target string, form url.Values) *httptest.ResponseRecorder {
	c.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	return c.do("POST", target, form)
}
