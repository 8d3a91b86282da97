package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/keys"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

// routes builds the HTTP handler: the Connect services (which also speak
// gRPC and gRPC-Web), gRPC health, and server reflection.
func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	opts := []connect.HandlerOption{
		connect.WithReadMaxBytes(n.cfg.MaxRequestBytes),
		connect.WithInterceptors(n.errorInterceptor()),
	}
	api := &apiServer{n: n}
	mux.Handle(registryv1connect.NewPublishServiceHandler(api, opts...))
	mux.Handle(registryv1connect.NewQueryServiceHandler(api, opts...))
	mux.Handle(nodev1connect.NewNodeServiceHandler(api, opts...))
	mux.Handle(registryv1connect.NewWatchServiceHandler(api, opts...))
	mux.Handle(nodev1connect.NewClusterServiceHandler(api, opts...))
	hoPath, hoHandler := n.handoverRoute()
	mux.Handle(hoPath, hoHandler)
	names := []string{
		registryv1connect.PublishServiceName,
		registryv1connect.QueryServiceName,
		registryv1connect.WatchServiceName,
		nodev1connect.NodeServiceName,
		nodev1connect.ClusterServiceName,
		federationv1connect.HandoverServiceName,
	}
	mux.Handle(grpchealth.NewHandler(&healthChecker{n: n}))
	reflector := grpcreflect.NewStaticReflector(names...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.HandleFunc("GET /{$}", n.indexPage)
	return mux
}

// errorInterceptor maps domain errors to Connect codes in one place.
func (n *Node) errorInterceptor() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			res, err := next(ctx, req)
			if err != nil {
				err = toConnectError(err)
			}
			return res, err
		}
	}
}

func toConnectError(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	code := connect.CodeInternal
	switch {
	case errors.Is(err, registry.ErrInvalidArgument):
		code = connect.CodeInvalidArgument
	case errors.Is(err, registry.ErrNotFound):
		code = connect.CodeNotFound
	case errors.Is(err, registry.ErrInvalidSignature), errors.Is(err, registry.ErrUnknownKey):
		code = connect.CodeUnauthenticated
	case errors.Is(err, registry.ErrPermissionDenied):
		code = connect.CodePermissionDenied
	case errors.Is(err, registry.ErrPreconditionFailed):
		code = connect.CodeFailedPrecondition
	case errors.Is(err, registry.ErrStale):
		code = connect.CodeAborted
	case errors.Is(err, registry.ErrTooLarge):
		code = connect.CodeResourceExhausted
	case errors.Is(err, registry.ErrNotLeader), errors.Is(err, registry.ErrUnavailable):
		code = connect.CodeUnavailable
	case errors.Is(err, registry.ErrIndeterminate):
		code = connect.CodeUnknown
	case errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = connect.CodeCanceled
	}
	return connect.NewError(code, err)
}

type apiServer struct{ n *Node }

var (
	_ registryv1connect.PublishServiceHandler = (*apiServer)(nil)
	_ registryv1connect.QueryServiceHandler   = (*apiServer)(nil)
	_ nodev1connect.NodeServiceHandler        = (*apiServer)(nil)
	_ registryv1connect.WatchServiceHandler   = (*apiServer)(nil)
	_ nodev1connect.ClusterServiceHandler     = (*apiServer)(nil)
)

// Publish accepts signed commands on any node: the leader proposes them,
// any other node forwards them to the leader (the client is not bounced).
func (a *apiServer) Publish(ctx context.Context, req *connect.Request[registryv1.PublishRequest]) (*connect.Response[registryv1.PublishResponse], error) {
	res, idx, err := a.n.submit(ctx, hops(req.Header()), req.Msg.GetSignedCommands())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&registryv1.PublishResponse{Results: res, Index: idx}), nil
}

// readBarrier prepares a read: for LINEARIZABLE it obtains a read index
// from the leader (itself, or over the network) and waits until the local
// state reflects it; for min_index it waits until that index is applied.
func (n *Node) readBarrier(ctx context.Context, o *registryv1.ReadOptions) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ReadTimeout)
	defer cancel()
	if o.GetMinIndex() > 0 {
		if err := n.state.WaitApplied(ctx, o.GetMinIndex()); err != nil {
			return false, fmt.Errorf("%w: %v", registry.ErrUnavailable, err)
		}
	}
	if o.GetConsistency() != registryv1.Consistency_CONSISTENCY_LINEARIZABLE {
		return false, nil
	}
	var idx uint64
	var err error
	if n.isServer() && n.raft.State() == raft.Leader {
		idx, err = n.leaderReadIndex(ctx)
	} else {
		idx, err = n.forwardReadIndex(ctx, 0)
	}
	if err != nil {
		return false, err
	}
	if err := n.state.WaitApplied(ctx, idx); err != nil {
		return false, fmt.Errorf("%w: %v", registry.ErrUnavailable, err)
	}
	return true, nil
}

// leaderReadIndex returns an index at which the state reflects every write
// committed before the call: the leader confirms with a quorum that it still
// leads (so a deposed leader in a minority cannot answer), and waits until
// its own state has applied its commit index. The index returned is the
// leader's applied index, which followers' state machines also reach.
func (n *Node) leaderReadIndex(ctx context.Context) (uint64, error) {
	term := n.raft.CurrentTerm()
	// A new leader only knows the commit index once an entry of its own
	// term is committed: a barrier establishes that once per term.
	if n.readyTerm.Load() != term {
		n.readyMu.Lock()
		if n.readyTerm.Load() != term {
			if err := n.raft.Barrier(n.cfg.ReadTimeout).Error(); err != nil {
				n.readyMu.Unlock()
				return 0, fmt.Errorf("%w: leader barrier: %v", registry.ErrUnavailable, err)
			}
			n.readyTerm.Store(term)
		}
		n.readyMu.Unlock()
	}
	commit := n.raft.CommitIndex()
	// Confirm with a quorum that we still lead, in the same term the barrier
	// ran in: a deposed leader, or one re-elected in between, cannot answer.
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return 0, fmt.Errorf("%w: leadership not confirmed: %v", registry.ErrUnavailable, err)
	}
	if n.raft.CurrentTerm() != term || n.readyTerm.Load() != term {
		return 0, fmt.Errorf("%w: leadership changed during the read", registry.ErrUnavailable)
	}
	if err := n.waitStateAt(ctx, commit); err != nil {
		return 0, fmt.Errorf("%w: %v", registry.ErrUnavailable, err)
	}
	return n.fsm.AppliedIndex(), nil
}

// waitStateAt waits until the registry state reflects every entry up to
// index. The FSM only sees command entries, so its applied index stays
// behind Raft-internal entries (no-op, barrier, configuration) at the end of
// the log; those change no state, so only command entries are waited for.
func (n *Node) waitStateAt(ctx context.Context, index uint64) error {
	for {
		applied := n.fsm.AppliedIndex()
		if applied >= index {
			return nil
		}
		next := uint64(0)
		for i := applied + 1; i <= index; i++ {
			var l raft.Log
			if err := n.logs.GetLog(i, &l); err != nil || l.Type == raft.LogCommand {
				next = i // a command (or compacted away: wait for it too)
				break
			}
		}
		if next == 0 {
			return nil
		}
		if err := n.fsm.WaitApplied(ctx, next); err != nil {
			return err
		}
	}
}

func (n *Node) readInfo(index uint64, lin bool) *registryv1.ReadInfo {
	ri := &registryv1.ReadInfo{Index: index, Linearizable: lin, NodeId: n.cfg.NodeID}
	if !lin {
		ri.StalenessMs = n.staleness().Milliseconds()
	}
	return ri
}

// staleness is how long ago this node last heard from the source of its
// state: 0 on the leader, the last leader contact on a follower, the last
// change feed message on a member (-1 ms: never).
func (n *Node) staleness() time.Duration {
	if !n.isServer() {
		last := n.lastFeed.Load()
		if last == 0 {
			return -time.Millisecond
		}
		return time.Since(time.UnixMilli(last))
	}
	if n.raft.State() == raft.Leader {
		return 0
	}
	lc := n.raft.LastContact()
	if lc.IsZero() {
		return -time.Millisecond
	}
	return time.Since(lc)
}

func (a *apiServer) GetOrganisation(ctx context.Context, req *connect.Request[registryv1.GetOrganisationRequest]) (*connect.Response[registryv1.GetOrganisationResponse], error) {
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

func (a *apiServer) ListOrganisations(ctx context.Context, req *connect.Request[registryv1.ListOrganisationsRequest]) (*connect.Response[registryv1.ListOrganisationsResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	m := req.Msg
	orgs, next, idx, err := a.n.reader.ListOrganisations(registry.OrgFilter{
		Kind: m.GetKind(), StateCode: m.GetStateCode(), NamePrefix: m.GetNamePrefix(),
		ARSPrefix: m.GetArsPrefix(), PageSize: int(m.GetPageSize()), PageToken: m.GetPageToken(),
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&registryv1.ListOrganisationsResponse{Organisations: orgs, NextPageToken: next, Read: a.n.readInfo(idx, lin)}), nil
}

func (a *apiServer) GetService(ctx context.Context, req *connect.Request[registryv1.GetServiceRequest]) (*connect.Response[registryv1.GetServiceResponse], error) {
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

func (a *apiServer) SearchServices(ctx context.Context, req *connect.Request[registryv1.SearchServicesRequest]) (*connect.Response[registryv1.SearchServicesResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	hits, idx, err := a.n.reader.SearchServices(req.Msg.GetText(), req.Msg.GetLifeSituation(), int(req.Msg.GetLimit()))
	if err != nil {
		return nil, err
	}
	out := &registryv1.SearchServicesResponse{Read: a.n.readInfo(idx, lin)}
	for _, h := range hits {
		out.Hits = append(out.Hits, &registryv1.ServiceHit{Service: h.Service, Score: h.Score})
	}
	return connect.NewResponse(out), nil
}

func (a *apiServer) FindProviders(ctx context.Context, req *connect.Request[registryv1.FindProvidersRequest]) (*connect.Response[registryv1.FindProvidersResponse], error) {
	lin, err := a.n.readBarrier(ctx, req.Msg.GetRead())
	if err != nil {
		return nil, err
	}
	p, err := a.n.reader.FindProviders(req.Msg.GetLeikaKey(), req.Msg.GetArea(), int(req.Msg.GetLimit()))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&registryv1.FindProvidersResponse{
		Providers: p.Matches, AreaOrganisation: p.Area, Service: p.Service, Read: a.n.readInfo(p.ReadFrom, lin),
	}), nil
}

func (a *apiServer) GetOffering(ctx context.Context, req *connect.Request[registryv1.GetOfferingRequest]) (*connect.Response[registryv1.GetOfferingResponse], error) {
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

func (a *apiServer) ListLifeSituations(ctx context.Context, req *connect.Request[registryv1.ListLifeSituationsRequest]) (*connect.Response[registryv1.ListLifeSituationsResponse], error) {
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

func (a *apiServer) GetStatus(ctx context.Context, req *connect.Request[nodev1.GetStatusRequest]) (*connect.Response[nodev1.GetStatusResponse], error) {
	n := a.n
	if !n.isServer() {
		sig, _ := keys.Published(n.keys().sig)
		enc, _ := keys.Published(n.keys().enc)
		return connect.NewResponse(&nodev1.GetStatusResponse{
			Keys: []*registryv1.PublicKey{sig, enc}, PeerUrl: n.PeerURL(), Role: n.cfg.Role,
			NodeId: n.cfg.NodeID, OrganisationId: n.cfg.OrgID, RaftState: "Member",
			AppliedIndex: n.replica.AppliedIndex(), Version: Version, StartedAtUnixMs: n.started.UnixMilli(),
			Stats: map[string]string{"staleness_ms": fmt.Sprint(n.staleness().Milliseconds())},
		}), nil
	}
	addr, id := n.raft.LeaderWithID()
	sig, _ := keys.Published(n.keys().sig)
	enc, _ := keys.Published(n.keys().enc)
	return connect.NewResponse(&nodev1.GetStatusResponse{
		Keys:            []*registryv1.PublicKey{sig, enc},
		PeerUrl:         n.PeerURL(),
		Role:            n.cfg.Role,
		NodeId:          n.cfg.NodeID,
		OrganisationId:  n.cfg.OrgID,
		RaftState:       n.raft.State().String(),
		LeaderId:        string(id),
		LeaderAddress:   string(addr),
		AppliedIndex:    n.fsm.AppliedIndex(),
		CommitIndex:     n.raft.CommitIndex(),
		Version:         Version,
		StartedAtUnixMs: n.started.UnixMilli(),
		Stats:           n.raft.Stats(),
	}), nil
}

// healthChecker reports SERVING once the node has a leader it can reach
// (or is the leader) and NOT_SERVING otherwise.
type healthChecker struct{ n *Node }

func (h *healthChecker) Check(_ context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	switch req.Service {
	case "", registryv1connect.PublishServiceName, registryv1connect.QueryServiceName, nodev1connect.NodeServiceName,
		registryv1connect.WatchServiceName, nodev1connect.ClusterServiceName:
	default:
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
	}
	if !h.n.isServer() {
		if st := h.n.staleness(); st < 0 || st > followStaleWindow {
			return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
		}
	} else if addr, _ := h.n.raft.LeaderWithID(); addr == "" {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

func (n *Node) indexPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Verbund node %s (organisation %s), version %s\n\nConnect/gRPC/gRPC-Web API at %s\nServices: %s, %s, %s\nApplied Raft index: %d\n",
		n.cfg.NodeID, n.cfg.OrgID, Version, n.APIURL(), registryv1connect.PublishServiceName, registryv1connect.QueryServiceName, nodev1connect.NodeServiceName, n.state.AppliedIndex())
}
