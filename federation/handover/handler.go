package handover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/federation/envelope"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
)

// MaxRequestBytes bounds any HandoverService request: the largest
// envelope plus room for the protobuf/JSON framing.
const MaxRequestBytes = envelope.MaxEnvelopeSize + 64<<10

// PeerProcedures are the procedures other nodes call. They authenticate by
// the signatures in their tokens and must be reachable from the network.
// Every other procedure is the organisation's own case-worker API and must
// be protected by the node (authentication, or loopback only).
var PeerProcedures = map[string]bool{
	federationv1connect.HandoverServiceDeliverHandoverProcedure: true,
	federationv1connect.HandoverServiceDeliverEventProcedure:    true,
	federationv1connect.HandoverServiceGetCaseTimelineProcedure: true,
}

// RestrictPeers returns a handler option that refuses every procedure but
// PeerProcedures (PermissionDenied) for requests fromPeer reports as coming
// from another node, e.g. over the mutual-TLS peer listener. Without it,
// another organisation's node could make this node sign handovers.
func RestrictPeers(fromPeer func(ctx context.Context) bool) connect.HandlerOption {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if p := req.Spec().Procedure; !PeerProcedures[p] && fromPeer(ctx) {
				return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s is not open to other nodes", p))
			}
			return next(ctx, req)
		}
	}))
}

// Handler returns the Connect handler of the HandoverService and the path
// prefix to mount it at. Errors are already Connect errors with the codes
// of connectCode. Extra options (interceptors for authentication, ...) are
// appended.
func (s *Service) Handler(opts ...connect.HandlerOption) (string, http.Handler) {
	all := append([]connect.HandlerOption{
		connect.WithReadMaxBytes(MaxRequestBytes),
		connect.WithInterceptors(errorInterceptor{}),
	}, opts...)
	path, h := federationv1connect.NewHandoverServiceHandler(&api{s: s}, all...)
	return path, &sizeGuard{s: s, next: h}
}

// sizeGuard counts requests refused for their size (Connect refuses them
// before any handler code runs) as rejections.
type sizeGuard struct {
	s    *Service
	next http.Handler
}

func (g *sizeGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > MaxRequestBytes {
		g.s.stats.reject("too_large")
		g.s.log.Warn("delivery rejected", "reason", "too_large", "bytes", r.ContentLength, "path", r.URL.Path)
		_ = connect.NewErrorWriter().Write(w, r, connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("request of %d bytes (max %d)", r.ContentLength, MaxRequestBytes)))
		return
	}
	if r.Body != nil && r.ContentLength < 0 {
		r.Body = &countingBody{ReadCloser: r.Body, limit: MaxRequestBytes, onExceed: func() {
			g.s.stats.reject("too_large")
		}}
	}
	g.next.ServeHTTP(w, r)
}

type countingBody struct {
	io.ReadCloser
	n        int64
	limit    int64
	fired    atomic.Bool
	onExceed func()
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if b.n > b.limit && b.fired.CompareAndSwap(false, true) {
		b.onExceed()
	}
	return n, err
}

type errorInterceptor struct{}

func (errorInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		return res, toConnect(err)
	}
}

func (errorInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (errorInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

type api struct{ s *Service }

var _ federationv1connect.HandoverServiceHandler = (*api)(nil)

func wrap[T any](m *T, err error) (*connect.Response[T], error) {
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(m), nil
}

func (a *api) SendHandover(ctx context.Context, r *connect.Request[federationv1.SendHandoverRequest]) (*connect.Response[federationv1.SendHandoverResponse], error) {
	return wrap(a.s.SendHandover(ctx, r.Msg))
}

func (a *api) DeliverHandover(ctx context.Context, r *connect.Request[federationv1.DeliverHandoverRequest]) (*connect.Response[federationv1.DeliverHandoverResponse], error) {
	receipt, err := a.s.DeliverHandover(ctx, r.Msg.GetToken())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&federationv1.DeliverHandoverResponse{Receipt: receipt}), nil
}

func (a *api) DeliverEvent(ctx context.Context, r *connect.Request[federationv1.DeliverEventRequest]) (*connect.Response[federationv1.DeliverEventResponse], error) {
	receipt, err := a.s.DeliverEvent(ctx, r.Msg.GetToken())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&federationv1.DeliverEventResponse{Receipt: receipt}), nil
}

func (a *api) ListInbox(ctx context.Context, r *connect.Request[federationv1.ListInboxRequest]) (*connect.Response[federationv1.ListInboxResponse], error) {
	return wrap(a.s.ListInbox(ctx, r.Msg))
}

func (a *api) GetCase(ctx context.Context, r *connect.Request[federationv1.GetCaseRequest]) (*connect.Response[federationv1.GetCaseResponse], error) {
	return wrap(a.s.GetCase(ctx, r.Msg))
}

func (a *api) AcceptCase(ctx context.Context, r *connect.Request[federationv1.AcceptCaseRequest]) (*connect.Response[federationv1.AcceptCaseResponse], error) {
	return wrap(a.s.AcceptCase(ctx, r.Msg))
}

func (a *api) RejectCase(ctx context.Context, r *connect.Request[federationv1.RejectCaseRequest]) (*connect.Response[federationv1.RejectCaseResponse], error) {
	return wrap(a.s.RejectCase(ctx, r.Msg))
}

func (a *api) CompleteCase(ctx context.Context, r *connect.Request[federationv1.CompleteCaseRequest]) (*connect.Response[federationv1.CompleteCaseResponse], error) {
	return wrap(a.s.CompleteCase(ctx, r.Msg))
}

func (a *api) ForwardCase(ctx context.Context, r *connect.Request[federationv1.ForwardCaseRequest]) (*connect.Response[federationv1.ForwardCaseResponse], error) {
	return wrap(a.s.ForwardCase(ctx, r.Msg))
}

func (a *api) TrackCase(ctx context.Context, r *connect.Request[federationv1.TrackCaseRequest]) (*connect.Response[federationv1.TrackCaseResponse], error) {
	return wrap(a.s.TrackCase(ctx, r.Msg))
}

func (a *api) GetCaseTimeline(ctx context.Context, r *connect.Request[federationv1.GetCaseTimelineRequest]) (*connect.Response[federationv1.GetCaseTimelineResponse], error) {
	return wrap(a.s.GetCaseTimeline(ctx, r.Msg))
}

func (a *api) ListOutbox(ctx context.Context, r *connect.Request[federationv1.ListOutboxRequest]) (*connect.Response[federationv1.ListOutboxResponse], error) {
	return wrap(a.s.ListOutbox(ctx, r.Msg))
}

// VerifyAudit answers ok=false with the reason rather than an RPC error
// when the chain does not verify.
func (a *api) VerifyAudit(ctx context.Context, _ *connect.Request[federationv1.VerifyAuditRequest]) (*connect.Response[federationv1.VerifyAuditResponse], error) {
	rep, err := a.s.VerifyAudit(ctx)
	if err != nil && !errors.Is(err, ErrAudit) {
		return nil, err
	}
	out := &federationv1.VerifyAuditResponse{
		Ok: err == nil, Entries: rep.Entries,
		Head: &federationv1.AuditHead{Sequence: rep.Head.Seq, Hash: rep.Head.Hash, AtUnixMs: rep.Head.At},
	}
	if err != nil {
		out.Error = err.Error()
	}
	for _, p := range rep.Published {
		out.Published = append(out.Published, &federationv1.AuditHead{Sequence: p.Seq, Hash: p.Hash, AtUnixMs: p.At})
	}
	return connect.NewResponse(out), nil
}
