// Package handoverapi is the Connect edge of the handover domain
// (federation/handover): the HandoverService handler, which translates
// requests into the Service's Go methods and its errors into Connect codes
// (node/connecterr), and Peer, which carries the Service's calls to other
// nodes over a Connect client and maps their answers back into the domain's
// terms. It does not decide who may call what: that is the node's access
// policy (node/access.go). It imports federation/handover and not node, so
// the handover package's wire tests can use it.
package handoverapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/node/connecterr"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
)

// NewHandler returns the HandoverService handler for s and the path prefix
// to mount it at. Requests larger than handover.MaxRequestBytes are refused
// (ResourceExhausted) and counted as rejections; errors carry the codes of
// connecterr.Code. Extra options are appended.
func NewHandler(s *handover.Service, opts ...connect.HandlerOption) (string, http.Handler) {
	all := append([]connect.HandlerOption{
		connect.WithReadMaxBytes(handover.MaxRequestBytes),
		connect.WithInterceptors(connecterr.Interceptor()),
	}, opts...)
	path, h := federationv1connect.NewHandoverServiceHandler(&server{s: s}, all...)
	return path, &sizeGuard{s: s, next: h}
}

// sizeGuard counts requests refused for their size (Connect refuses them
// before any handler code runs) as rejections.
type sizeGuard struct {
	s    *handover.Service
	next http.Handler
}

func (g *sizeGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > handover.MaxRequestBytes {
		g.s.NoteRejected("too_large", "bytes", r.ContentLength, "path", r.URL.Path)
		_ = connect.NewErrorWriter().Write(w, r, connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("request of %d bytes (max %d)", r.ContentLength, handover.MaxRequestBytes)))
		return
	}
	if r.Body != nil && r.ContentLength < 0 {
		r.Body = &countingBody{ReadCloser: r.Body, limit: handover.MaxRequestBytes, onExceed: func() {
			g.s.NoteRejected("too_large", "path", r.URL.Path)
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

// server translates HandoverService requests into Service calls.
type server struct{ s *handover.Service }

var _ federationv1connect.HandoverServiceHandler = (*server)(nil)

func wrap[T any](m *T, err error) (*connect.Response[T], error) {
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(m), nil
}

func (a *server) SendHandover(ctx context.Context, r *connect.Request[federationv1.SendHandoverRequest]) (*connect.Response[federationv1.SendHandoverResponse], error) {
	return wrap(a.s.SendHandover(ctx, r.Msg))
}

func (a *server) DeliverHandover(ctx context.Context, r *connect.Request[federationv1.DeliverHandoverRequest]) (*connect.Response[federationv1.DeliverHandoverResponse], error) {
	receipt, err := a.s.DeliverHandover(ctx, r.Msg.GetToken())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&federationv1.DeliverHandoverResponse{Receipt: receipt}), nil
}

func (a *server) DeliverEvent(ctx context.Context, r *connect.Request[federationv1.DeliverEventRequest]) (*connect.Response[federationv1.DeliverEventResponse], error) {
	receipt, err := a.s.DeliverEvent(ctx, r.Msg.GetToken())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&federationv1.DeliverEventResponse{Receipt: receipt}), nil
}

func (a *server) ListInbox(ctx context.Context, r *connect.Request[federationv1.ListInboxRequest]) (*connect.Response[federationv1.ListInboxResponse], error) {
	return wrap(a.s.ListInbox(ctx, r.Msg))
}

func (a *server) GetCase(ctx context.Context, r *connect.Request[federationv1.GetCaseRequest]) (*connect.Response[federationv1.GetCaseResponse], error) {
	return wrap(a.s.GetCase(ctx, r.Msg))
}

func (a *server) AcceptCase(ctx context.Context, r *connect.Request[federationv1.AcceptCaseRequest]) (*connect.Response[federationv1.AcceptCaseResponse], error) {
	return wrap(a.s.AcceptCase(ctx, r.Msg))
}

func (a *server) RejectCase(ctx context.Context, r *connect.Request[federationv1.RejectCaseRequest]) (*connect.Response[federationv1.RejectCaseResponse], error) {
	return wrap(a.s.RejectCase(ctx, r.Msg))
}

func (a *server) CompleteCase(ctx context.Context, r *connect.Request[federationv1.CompleteCaseRequest]) (*connect.Response[federationv1.CompleteCaseResponse], error) {
	return wrap(a.s.CompleteCase(ctx, r.Msg))
}

func (a *server) ForwardCase(ctx context.Context, r *connect.Request[federationv1.ForwardCaseRequest]) (*connect.Response[federationv1.ForwardCaseResponse], error) {
	return wrap(a.s.ForwardCase(ctx, r.Msg))
}

func (a *server) TrackCase(ctx context.Context, r *connect.Request[federationv1.TrackCaseRequest]) (*connect.Response[federationv1.TrackCaseResponse], error) {
	return wrap(a.s.TrackCase(ctx, r.Msg))
}

func (a *server) GetCaseTimeline(ctx context.Context, r *connect.Request[federationv1.GetCaseTimelineRequest]) (*connect.Response[federationv1.GetCaseTimelineResponse], error) {
	return wrap(a.s.GetCaseTimeline(ctx, r.Msg))
}

func (a *server) ListOutbox(ctx context.Context, r *connect.Request[federationv1.ListOutboxRequest]) (*connect.Response[federationv1.ListOutboxResponse], error) {
	return wrap(a.s.ListOutbox(ctx, r.Msg))
}

// VerifyAudit answers ok=false with the reason rather than an RPC error
// when the chain does not verify.
func (a *server) VerifyAudit(ctx context.Context, _ *connect.Request[federationv1.VerifyAuditRequest]) (*connect.Response[federationv1.VerifyAuditResponse], error) {
	rep, err := a.s.VerifyAudit(ctx)
	if err != nil && !errors.Is(err, handover.ErrAudit) {
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

// GetHandoverStats returns this node's hourly handover statistics since
// since_unix_ms (0: the last 30 days).
func (a *server) GetHandoverStats(ctx context.Context, req *connect.Request[federationv1.GetHandoverStatsRequest]) (*connect.Response[federationv1.GetHandoverStatsResponse], error) {
	var since time.Time
	if ms := req.Msg.GetSinceUnixMs(); ms > 0 {
		since = time.UnixMilli(ms)
	} else if ms < 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("since_unix_ms must not be negative"))
	}
	return wrap(a.s.GetHandoverStats(ctx, since))
}
