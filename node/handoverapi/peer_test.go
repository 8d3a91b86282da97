package handoverapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/federation/handover"
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
