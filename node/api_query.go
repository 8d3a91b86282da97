package node

import (
	"context"
	"slices"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

// queryAPI serves the QueryService: each read passes the read barrier
// (readindex.go) its options ask for, then reads the local state.
type queryAPI struct {
	n *Node
}

var _ registryv1connect.QueryServiceHandler = queryAPI{}

func (a queryAPI) GetOrganisation(ctx context.Context, req *connect.Request[registryv1.GetOrganisationRequest]) (*connect.Response[registryv1.GetOrganisationResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	o, idx, err := a.n.reader.Organisation(req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&registryv1.GetOrganisationResponse{Organisation: o, Read: a.n.readInfo(idx, lin)}), nil
}

func (a queryAPI) ListOrganisations(ctx context.Context, req *connect.Request[registryv1.ListOrganisationsRequest]) (*connect.Response[registryv1.ListOrganisationsResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	m := req.Msg
	f := registry.OrgFilter{
		Kind: m.GetKind(), StateCode: m.GetStateCode(), NamePrefix: m.GetNamePrefix(),
		ARSPrefix: m.GetArsPrefix(), PageSize: int(m.GetPageSize()), PageToken: m.GetPageToken(),
	}
	if m.GetQuery() != "" {
		orgs, idx, err := a.n.reader.SearchPlaces(m.GetQuery(), f)
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(&registryv1.ListOrganisationsResponse{Organisations: orgs, Read: a.n.readInfo(idx, lin)}), nil
	}
	orgs, next, idx, err := a.n.reader.ListOrganisations(f)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&registryv1.ListOrganisationsResponse{Organisations: orgs, NextPageToken: next, Read: a.n.readInfo(idx, lin)}), nil
}

func (a queryAPI) GetService(ctx context.Context, req *connect.Request[registryv1.GetServiceRequest]) (*connect.Response[registryv1.GetServiceResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	s, idx, err := a.n.reader.Service(req.Msg.GetLeikaKey())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&registryv1.GetServiceResponse{Service: s, Read: a.n.readInfo(idx, lin)}), nil
}

func (a queryAPI) SearchServices(ctx context.Context, req *connect.Request[registryv1.SearchServicesRequest]) (*connect.Response[registryv1.SearchServicesResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	res, err := a.n.reader.Search(req.Msg.GetText(), req.Msg.GetLifeSituation(), int(req.Msg.GetLimit()))
	if err != nil {
		return nil, err
	}
	out := &registryv1.SearchServicesResponse{Read: a.n.readInfo(res.Index, lin)}
	for _, h := range res.Hits {
		out.Hits = append(out.Hits, &registryv1.ServiceHit{Service: h.Service, Score: h.Score, Distinction: h.Distinction})
	}
	for _, l := range res.ValidLifeSituations {
		out.ValidLifeSituations = append(out.ValidLifeSituations, &registryv1.LifeSituation{Name: l.Name, ServiceCount: uint32(l.Services)})
	}
	return connect.NewResponse(out), nil
}

func (a queryAPI) FindProviders(ctx context.Context, req *connect.Request[registryv1.FindProvidersRequest]) (*connect.Response[registryv1.FindProvidersResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	find := a.n.reader.FindProviders
	if req.Msg.GetIncludeProof() {
		find = a.n.reader.FindProvidersWithProof
	}
	p, err := find(req.Msg.GetLeikaKey(), req.Msg.GetArea(), int(req.Msg.GetLimit()))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&registryv1.FindProvidersResponse{
		Providers: p.Matches, AreaOrganisation: p.Area, Service: p.Service, Read: a.n.readInfo(p.ReadFrom, lin),
	}), nil
}

func (a queryAPI) GetOffering(ctx context.Context, req *connect.Request[registryv1.GetOfferingRequest]) (*connect.Response[registryv1.GetOfferingResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	o, idx, err := a.n.reader.Offering(req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&registryv1.GetOfferingResponse{Offering: o, Read: a.n.readInfo(idx, lin)}), nil
}

func (a queryAPI) ListLifeSituations(ctx context.Context, req *connect.Request[registryv1.ListLifeSituationsRequest]) (*connect.Response[registryv1.ListLifeSituationsResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	ls, idx, err := a.n.reader.LifeSituations()
	if err != nil {
		return nil, err
	}
	out := &registryv1.ListLifeSituationsResponse{Read: a.n.readInfo(idx, lin)}
	for _, l := range ls {
		out.LifeSituations = append(out.LifeSituations, &registryv1.LifeSituation{Name: l.Name, ServiceCount: uint32(l.Services)})
	}
	return connect.NewResponse(out), nil
}

func (a queryAPI) ListAuthorisations(ctx context.Context, req *connect.Request[registryv1.ListAuthorisationsRequest]) (*connect.Response[registryv1.ListAuthorisationsResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	m := req.Msg
	as, next, idx, err := a.n.reader.ListAuthorisations(registry.AuthorisationFilter{
		GrantorID: m.GetGrantorId(), GranteeID: m.GetGranteeId(), Area: m.GetArea(),
		PageSize: int(m.GetPageSize()), PageToken: m.GetPageToken(),
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&registryv1.ListAuthorisationsResponse{Authorisations: as, NextPageToken: next, Read: a.n.readInfo(idx, lin)}), nil
}

func (a queryAPI) ListOfferings(ctx context.Context, req *connect.Request[registryv1.ListOfferingsRequest]) (*connect.Response[registryv1.ListOfferingsResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	m := req.Msg
	os, next, idx, err := a.n.reader.ListOfferings(registry.OfferingFilter{
		OrganisationID: m.GetOrganisationId(), Area: m.GetArea(),
		PageSize: int(m.GetPageSize()), PageToken: m.GetPageToken(),
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&registryv1.ListOfferingsResponse{Offerings: os, NextPageToken: next, Read: a.n.readInfo(idx, lin)}), nil
}

func (a queryAPI) GetHistory(ctx context.Context, req *connect.Request[registryv1.GetHistoryRequest]) (*connect.Response[registryv1.GetHistoryResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	es, next, idx, err := a.n.reader.History(req.Msg.GetOrganisationId(), int(req.Msg.GetPageSize()), req.Msg.GetPageToken())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&registryv1.GetHistoryResponse{Entries: es, NextPageToken: next, Read: a.n.readInfo(idx, lin)}), nil
}

func (a queryAPI) GetCommand(ctx context.Context, req *connect.Request[registryv1.GetCommandRequest]) (*connect.Response[registryv1.GetCommandResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	jws, at, idx, err := a.n.reader.Command(req.Msg.GetIssuer(), req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&registryv1.GetCommandResponse{SignedCommand: jws, Index: at, Read: a.n.readInfo(idx, lin)}), nil
}

func (a queryAPI) ListNextSteps(ctx context.Context, req *connect.Request[registryv1.ListNextStepsRequest]) (*connect.Response[registryv1.ListNextStepsResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	ns, idx, err := a.n.reader.ListNextSteps(req.Msg.GetTriggerLeikaKey(), req.Msg.GetLifeSituation(), req.Msg.GetArea())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&registryv1.ListNextStepsResponse{NextSteps: ns, Read: a.n.readInfo(idx, lin)}), nil
}

func (a queryAPI) GetCoverage(ctx context.Context, req *connect.Request[registryv1.GetCoverageRequest]) (*connect.Response[registryv1.GetCoverageResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	c, err := a.n.reader.Coverage(req.Msg.GetLeikaKey(), req.Msg.GetStateCode())
	if err != nil {
		return nil, err
	}
	out := &registryv1.GetCoverageResponse{
		Service: c.Service, Municipalities: uint32(len(c.Rows)), Covered: uint32(c.Covered), Online: uint32(c.Online),
		Read: a.n.readInfo(c.Index, lin),
	}
	out.Rows = make([]*registryv1.CoverageRow, 0, len(c.Rows))
	for _, r := range c.Rows {
		m := r.Municipality
		row := &registryv1.CoverageRow{Ars: m.GetArs(), Name: m.GetName(), Location: m.GetLocation()}
		if p := r.Best; p != nil {
			row.ProviderId = p.GetOrganisation().GetId()
			row.ProviderName = p.GetOrganisation().GetName()
			row.Match = p.GetMatch()
			row.Channels = registry.ChannelKinds(p.GetOffering())
			row.Online = slices.Contains(row.Channels, registryv1.ChannelKind_CHANNEL_KIND_ONLINE)
		}
		out.Rows = append(out.Rows, row)
	}
	return connect.NewResponse(out), nil
}
