package handoverapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/node/connecterr"
	"github.com/verbund/verbund/node/diskspace"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
)

// refusing answers every delivery with its code.
type refusing struct {
	federationv1connect.UnimplementedHandoverServiceHandler
	code connect.Code
}

func (r *refusing) DeliverHandover(context.Context, *connect.Request[federationv1.DeliverHandoverRequest]) (*connect.Response[federationv1.DeliverHandoverResponse], error) {
	return nil, connect.NewError(r.code, errors.New("refused"))
}

// TestPeerClassifiesRemoteErrors: the codes a receiver gives a token it
// refuses for good come back as handover.ErrRefused (the deliverer stops);
// every other code is left to retry.
func TestPeerClassifiesRemoteErrors(t *testing.T) {
	h := &refusing{}
	mux := http.NewServeMux()
	mux.Handle(federationv1connect.NewHandoverServiceHandler(h))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	p := Peer{Client: federationv1connect.NewHandoverServiceClient(srv.Client(), srv.URL)}
	for code, final := range map[connect.Code]bool{
		connect.CodeInvalidArgument: true, connect.CodeAlreadyExists: true, connect.CodePermissionDenied: true,
		connect.CodeFailedPrecondition: true, connect.CodeNotFound: true, connect.CodeResourceExhausted: true,
		connect.CodeUnavailable: false, connect.CodeUnauthenticated: false, connect.CodeInternal: false,
		connect.CodeDeadlineExceeded: false, connect.CodeUnknown: false,
	} {
		h.code = code
		_, err := p.DeliverHandover(context.Background(), "token")
		if err == nil || errors.Is(err, handover.ErrRefused) != final || connect.CodeOf(err) != code {
			t.Errorf("%v: %v (refused=%v), want refused=%v", code, err, errors.Is(err, handover.ErrRefused), final)
		}
	}
}

// diskFull answers every delivery as a receiver whose disk guard refuses:
// the domain error, mapped by the node's interceptor.
type diskFull struct {
	federationv1connect.UnimplementedHandoverServiceHandler
}

func (diskFull) DeliverHandover(context.Context, *connect.Request[federationv1.DeliverHandoverRequest]) (*connect.Response[federationv1.DeliverHandoverResponse], error) {
	return nil, &diskspace.FullError{Path: "/data/recipient", Free: 1 << 20, Reserve: 256 << 20}
}

// TestPeerRetriesDiskFull: a receiver refusing a delivery for lack of disk
// space answers resource_exhausted (the code of a token too large, which is
// final), marked so that the sender retries it later instead of giving up.
func TestPeerRetriesDiskFull(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle(federationv1connect.NewHandoverServiceHandler(diskFull{}, connect.WithInterceptors(connecterr.Interceptor())))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	p := Peer{Client: federationv1connect.NewHandoverServiceClient(srv.Client(), srv.URL)}
	_, err := p.DeliverHandover(context.Background(), "token")
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("got %v, want resource_exhausted", err)
	}
	if errors.Is(err, handover.ErrRefused) {
		t.Fatalf("a full disk at the receiver classified as a final refusal: %v", err)
	}
	if !connecterr.IsDiskFull(err) || !strings.Contains(err.Error(), "/data/recipient") {
		t.Fatalf("error %v: not marked disk full, or the receiver's data dir not named", err)
	}
}
