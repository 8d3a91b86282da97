package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"

	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

// fake implements the query, publish, node and cluster services over test data.
type fake struct {
	nodev1connect.UnimplementedNodeServiceHandler      // RotateKeys, RevokeKey
	nodev1connect.UnimplementedClusterServiceHandler   // all but ListMembers
	registryv1connect.UnimplementedQueryServiceHandler // governance queries

	pub     jose.JSONWebKey // verifies published commands
	pageCap int             // if > 0, at most this many organisations per page

	mu           sync.Mutex
	publishCalls int
	listCalls    int
	published    []*registryv1.Command
	applied      map[string]uint64 // command id → index
	index        uint64
	reads        []*registryv1.ReadOptions // ReadOptions of every query, in order
	listReqs     []*registryv1.ListOrganisationsRequest
	areas        []string // FindProviders areas, in order
}

var (
	_ registryv1connect.QueryServiceHandler   = (*fake)(nil)
	_ registryv1connect.PublishServiceHandler = (*fake)(nil)
	_ nodev1connect.NodeServiceHandler        = (*fake)(nil)
	_ nodev1connect.ClusterServiceHandler     = (*fake)(nil)
)

// serve starts an httptest server with the fake's handlers.
func (f *fake) serve(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(registryv1connect.NewQueryServiceHandler(f))
	mux.Handle(registryv1connect.NewPublishServiceHandler(f))
	mux.Handle(nodev1connect.NewNodeServiceHandler(f))
	mux.Handle(nodev1connect.NewClusterServiceHandler(f))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func (f *fake) readInfo(r *registryv1.ReadOptions) *registryv1.ReadInfo {
	f.mu.Lock()
	f.reads = append(f.reads, r)
	f.mu.Unlock()
	return &registryv1.ReadInfo{
		Index:        12345,
		NodeId:       "n1",
		Linearizable: r.GetConsistency() == registryv1.Consistency_CONSISTENCY_LINEARIZABLE,
	}
}

func (f *fake) lastRead() *registryv1.ReadOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reads) == 0 {
		return nil
	}
	return f.reads[len(f.reads)-1]
}

var testOrgs = []*registryv1.Organisation{
	{
		Id: "091620000000", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY,
		Name: "Landeshauptstadt München", StateCode: "09", Ars: "091620000000", Ags: "09162000",
		Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, PostalCode: "80331", Population: 1510378,
		Location:    &registryv1.GeoPoint{Lat: 48.1374, Lon: 11.5755},
		ApiEndpoint: "https://verbund.muenchen.example.de",
		Keys: []*registryv1.PublicKey{{
			Kid: "muc-sig-1", Use: "sig", Alg: "EdDSA", JwkJson: "{}", Status: registryv1.KeyStatus_KEY_STATUS_ACTIVE,
		}},
		Revision: 17, UpdatedAtUnixMs: 1700000000000, UpdatedBy: "verbund-betrieb",
	},
	{
		Id: "091840000000", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT,
		Name: "Landkreis München", StateCode: "09", Ars: "091840000000",
		Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED,
	},
	{
		Id: "ssc-oberland", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE,
		Name: "Servicezentrum Oberland", StateCode: "09", Ars: "091730000000",
		Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
	},
	{
		Id: "by-lfst", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY,
		Name: "Bayerisches Landesamt für Steuern", StateCode: "09",
		Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
	},
	{
		Id: "051110000000", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY,
		Name: "Landeshauptstadt Düsseldorf", StateCode: "05", Ars: "051110000000",
		Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
	},
}

var testServices = []*registryv1.Service{
	{
		LeikaKey: "99115005000000", Name: "Wohnsitz anmelden",
		Description:    "Wer in eine neue Wohnung zieht, muss sich innerhalb von zwei Wochen bei der Meldebehörde anmelden.",
		Keywords:       []string{"Anmeldung", "Meldebescheinigung"},
		LifeSituations: []string{"Umzug"},
		Revision:       3,
	},
	{
		LeikaKey: "99102013104000", Name: "Reisepass beantragen",
		LifeSituations: []string{"Reisen", "Ausweisdokumente"},
	},
}

var testOffering = &registryv1.Offering{
	Id: "091620000000:99115005000000", OrganisationId: "091620000000", LeikaKey: "99115005000000",
	Areas: []string{"091620000000"}, Name: "Wohnsitz anmelden",
	Channels: []*registryv1.Channel{
		{Kind: registryv1.ChannelKind_CHANNEL_KIND_ONLINE, Url: "https://stadt.example.de/anmelden", Available_24_7: true},
		{Kind: registryv1.ChannelKind_CHANNEL_KIND_APPOINTMENT, Url: "https://termine.example.de/"},
		{Kind: registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON, Address: &registryv1.Address{Name: "Bürgerbüro Mitte", Street: "Marienplatz 8", PostalCode: "80331", City: "München"}, OpeningHours: "Mo–Fr 07:30–12:00"},
		{Kind: registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON, Address: &registryv1.Address{Name: "Bürgerbüro Pasing", City: "München"}},
		{Kind: registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON, Address: &registryv1.Address{Name: "Bürgerbüro Ost", City: "München"}},
	},
	Fees:           []*registryv1.Fee{{Description: "Anmeldung", Free: true}},
	Documents:      []*registryv1.Document{{Name: "Wohnungsgeberbestätigung", Required: true}},
	ProcessingTime: &registryv1.ProcessingTime{AppointmentMinutes: 15},
	InfoUrl:        "https://stadt.example.de/info",
	Revision:       42,
}

var testSSCOffering = &registryv1.Offering{
	Id: "ssc-oberland:99115005000000", OrganisationId: "ssc-oberland", LeikaKey: "99115005000000",
	Areas: []string{"09162", "09173"},
	Channels: []*registryv1.Channel{
		{Kind: registryv1.ChannelKind_CHANNEL_KIND_ONLINE, Url: "https://ssc-oberland.example.de/"},
		{Kind: registryv1.ChannelKind_CHANNEL_KIND_PHONE, Phone: "+49 8041 0000"},
	},
	Fees:           []*registryv1.Fee{{Description: "Bearbeitung", AmountCents: 5000, MaxAmountCents: 6000, Currency: "EUR"}},
	ProcessingTime: &registryv1.ProcessingTime{MinDays: 1, MaxDays: 3, Text: "nach Eingang der Unterlagen"},
}

func (f *fake) GetOrganisation(ctx context.Context, req *connect.Request[registryv1.GetOrganisationRequest]) (*connect.Response[registryv1.GetOrganisationResponse], error) {
	ri := f.readInfo(req.Msg.GetRead())
	if req.Msg.GetId() == "slow-org" { // answers only when the client gives up
		<-ctx.Done()
		return nil, connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
	}
	for _, o := range testOrgs {
		if o.GetId() == req.Msg.GetId() {
			return connect.NewResponse(&registryv1.GetOrganisationResponse{Organisation: o, Read: ri}), nil
		}
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("organisation %s not found", req.Msg.GetId()))
}

func (f *fake) ListOrganisations(_ context.Context, req *connect.Request[registryv1.ListOrganisationsRequest]) (*connect.Response[registryv1.ListOrganisationsResponse], error) {
	ri := f.readInfo(req.Msg.GetRead())
	f.mu.Lock()
	f.listCalls++
	f.listReqs = append(f.listReqs, req.Msg)
	f.mu.Unlock()
	m := req.Msg
	var match []*registryv1.Organisation
	for _, o := range testOrgs {
		if q := m.GetQuery(); q != "" && !fakePlaceMatch(o, q) {
			continue
		}
		if (m.GetKind() == 0 || o.GetKind() == m.GetKind()) &&
			(m.GetStateCode() == "" || o.GetStateCode() == m.GetStateCode()) &&
			strings.HasPrefix(strings.ToLower(o.GetName()), strings.ToLower(m.GetNamePrefix())) &&
			strings.HasPrefix(o.GetArs(), m.GetArsPrefix()) {
			match = append(match, o)
		}
	}
	start := 0
	if t := m.GetPageToken(); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("bad page token"))
		}
		start = n
	}
	size := int(m.GetPageSize())
	if size == 0 {
		size = 100
	}
	if f.pageCap > 0 {
		size = min(size, f.pageCap)
	}
	end := min(start+size, len(match))
	resp := &registryv1.ListOrganisationsResponse{Organisations: match[start:end], Read: ri}
	if end < len(match) {
		resp.NextPageToken = strconv.Itoa(end)
	}
	return connect.NewResponse(resp), nil
}

func (f *fake) GetService(_ context.Context, req *connect.Request[registryv1.GetServiceRequest]) (*connect.Response[registryv1.GetServiceResponse], error) {
	ri := f.readInfo(req.Msg.GetRead())
	for _, s := range testServices {
		if s.GetLeikaKey() == req.Msg.GetLeikaKey() {
			return connect.NewResponse(&registryv1.GetServiceResponse{Service: s, Read: ri}), nil
		}
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("service %s not found", req.Msg.GetLeikaKey()))
}

func (f *fake) SearchServices(_ context.Context, req *connect.Request[registryv1.SearchServicesRequest]) (*connect.Response[registryv1.SearchServicesResponse], error) {
	ri := f.readInfo(req.Msg.GetRead())
	text := strings.ToLower(req.Msg.GetText())
	resp := &registryv1.SearchServicesResponse{Read: ri}
	for _, s := range testServices {
		hay := strings.ToLower(s.GetName() + " " + strings.Join(s.GetKeywords(), " ") + " " + strings.Join(s.GetLifeSituations(), " "))
		if !strings.Contains(hay, text) {
			continue
		}
		if ls := req.Msg.GetLifeSituation(); ls != "" && !containsFold(s.GetLifeSituations(), ls) {
			continue
		}
		resp.Hits = append(resp.Hits, &registryv1.ServiceHit{Service: s, Score: 1.5})
	}
	return connect.NewResponse(resp), nil
}

func containsFold(xs []string, s string) bool {
	for _, x := range xs {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// fakePlaceMatch is a simple stand-in for the registry's place search:
// a postcode prefix, or every query word starts a word of the name
// (lower-cased, no umlaut folding).
func fakePlaceMatch(o *registryv1.Organisation, q string) bool {
	if strings.Trim(q, "0123456789") == "" {
		return strings.HasPrefix(o.GetPostalCode(), q)
	}
	words := strings.Fields(strings.ToLower(o.GetName()))
	for _, w := range strings.Fields(strings.ToLower(q)) {
		if !slices.ContainsFunc(words, func(n string) bool { return strings.HasPrefix(n, w) }) {
			return false
		}
	}
	return true
}

func (f *fake) FindProviders(_ context.Context, req *connect.Request[registryv1.FindProvidersRequest]) (*connect.Response[registryv1.FindProvidersResponse], error) {
	ri := f.readInfo(req.Msg.GetRead())
	f.mu.Lock()
	f.areas = append(f.areas, req.Msg.GetArea())
	f.mu.Unlock()
	if req.Msg.GetLeikaKey() != "99115005000000" {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("service %s not found", req.Msg.GetLeikaKey()))
	}
	return connect.NewResponse(&registryv1.FindProvidersResponse{
		Service:          testServices[0],
		AreaOrganisation: testOrgs[0],
		Read:             ri,
		Providers: []*registryv1.Provider{
			{Organisation: testOrgs[0], Offering: testOffering, Match: registryv1.MatchKind_MATCH_KIND_OWN_MUNICIPALITY, MatchedArea: "091620000000", Rank: 1},
			{Organisation: testOrgs[2], Offering: testSSCOffering, Match: registryv1.MatchKind_MATCH_KIND_DELEGATED, MatchedArea: "09162", DistanceKm: 48.25, Rank: 2},
		},
	}), nil
}

func (f *fake) GetOffering(_ context.Context, req *connect.Request[registryv1.GetOfferingRequest]) (*connect.Response[registryv1.GetOfferingResponse], error) {
	ri := f.readInfo(req.Msg.GetRead())
	for _, o := range []*registryv1.Offering{testOffering, testSSCOffering} {
		if o.GetId() == req.Msg.GetId() {
			return connect.NewResponse(&registryv1.GetOfferingResponse{Offering: o, Read: ri}), nil
		}
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("offering %s not found", req.Msg.GetId()))
}

func (f *fake) ListLifeSituations(_ context.Context, req *connect.Request[registryv1.ListLifeSituationsRequest]) (*connect.Response[registryv1.ListLifeSituationsResponse], error) {
	ri := f.readInfo(req.Msg.GetRead())
	return connect.NewResponse(&registryv1.ListLifeSituationsResponse{Read: ri, LifeSituations: []*registryv1.LifeSituation{
		{Name: "Ausweisdokumente", ServiceCount: 1}, {Name: "Reisen", ServiceCount: 1}, {Name: "Umzug", ServiceCount: 1},
	}}), nil
}

// Publish verifies every command against the test key, like a replica would.
func (f *fake) Publish(_ context.Context, req *connect.Request[registryv1.PublishRequest]) (*connect.Response[registryv1.PublishResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.publishCalls++
	if f.applied == nil {
		f.applied = map[string]uint64{}
	}
	resp := &registryv1.PublishResponse{}
	for _, raw := range req.Msg.GetSignedCommands() {
		sc, err := registry.ParseCommand(raw)
		if err == nil {
			err = sc.Verify(f.pub)
		}
		if err != nil {
			r := &registryv1.CommandResult{ErrorCode: registry.ErrorCode(err), ErrorMessage: err.Error()}
			if sc != nil {
				r.CommandId = sc.Command.GetId()
			}
			resp.Results = append(resp.Results, r)
			continue
		}
		id := sc.Command.GetId()
		if idx, dup := f.applied[id]; dup {
			resp.Results = append(resp.Results, &registryv1.CommandResult{CommandId: id, Index: idx, Duplicate: true})
			continue
		}
		f.index++
		f.applied[id] = f.index
		f.published = append(f.published, sc.Command)
		resp.Results = append(resp.Results, &registryv1.CommandResult{CommandId: id, Index: f.index})
	}
	resp.Index = f.index
	return connect.NewResponse(resp), nil
}

func (f *fake) GetStatus(context.Context, *connect.Request[nodev1.GetStatusRequest]) (*connect.Response[nodev1.GetStatusResponse], error) {
	return connect.NewResponse(&nodev1.GetStatusResponse{
		NodeId: "n1", OrganisationId: "091620000000", RaftState: "Leader", LeaderId: "n1",
		LeaderAddress: "10.0.0.1:7000", AppliedIndex: 12345, CommitIndex: 12345, Version: "v0.1.0-test",
		Stats: map[string]string{"num_peers": "2", "last_snapshot_index": "12000"},
		ExpiryWarnings: []*nodev1.ExpiryWarning{
			{What: "node_certificate", Id: "n1", NotAfterUnixMs: 1_700_000_000_000, RemainingSeconds: -3 * 3600},
			{What: "signing_key", Id: "muc-sig-1", NotAfterUnixMs: 1_800_000_000_000, RemainingSeconds: 2*86400 + 5*3600},
		},
	}), nil
}

// testMembers are two nodes of different software versions, n1 the leader.
var testMembers = []*nodev1.Member{
	{NodeId: "n1", OrganisationId: "verbund-operator", Role: "voter", State: "alive", RaftSuffrage: "Voter", Leader: true,
		Version: "0.1.0-dev", ApiAddress: "http://127.0.0.1:18081", RaftAddress: "127.0.0.1:17001", GossipAddress: "127.0.0.1:17101"},
	{NodeId: "n4", OrganisationId: "095640000000", Role: "member", State: "alive",
		Version: "0.2.0", ApiAddress: "http://127.0.0.1:18084", GossipAddress: "127.0.0.1:17104"},
}

func (f *fake) ListMembers(context.Context, *connect.Request[nodev1.ListMembersRequest]) (*connect.Response[nodev1.ListMembersResponse], error) {
	return connect.NewResponse(&nodev1.ListMembersResponse{Members: testMembers}), nil
}
