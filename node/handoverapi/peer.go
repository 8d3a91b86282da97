package handoverapi

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/node/connecterr"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
)

// Peer is a handover.Peer over a Connect client of another node's
// HandoverService. Callers keep one client per endpoint (the node's peer
// client cache).
type Peer struct {
	Client federationv1connect.HandoverServiceClient
}

var _ handover.Peer = Peer{}

// DeliverHandover implements handover.Peer.
func (p Peer) DeliverHandover(ctx context.Context, token string) (string, error) {
	res, err := p.Client.DeliverHandover(ctx, connect.NewRequest(&federationv1.DeliverHandoverRequest{Token: token}))
	if err != nil {
		return "", classify(err)
	}
	return res.Msg.GetReceipt(), nil
}

// DeliverEvent implements handover.Peer.
func (p Peer) DeliverEvent(ctx context.Context, token string) (string, error) {
	res, err := p.Client.DeliverEvent(ctx, connect.NewRequest(&federationv1.DeliverEventRequest{Token: token}))
	if err != nil {
		return "", classify(err)
	}
	return res.Msg.GetReceipt(), nil
}

// GetCaseTimeline implements handover.Peer.
func (p Peer) GetCaseTimeline(ctx context.Context, req *federationv1.GetCaseTimelineRequest) (*federationv1.GetCaseTimelineResponse, error) {
	res, err := p.Client.GetCaseTimeline(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, classify(err)
	}
	return res.Msg, nil
}

// classify maps a remote Connect error back into the domain's terms: the
// codes a receiver gives a token it refuses for good (connecterr.Code) wrap
// handover.ErrRefused, so the deliverer stops retrying; every other code
// (Unavailable, Unauthenticated while its registry copy lags, network
// errors as Unknown, a receiver whose disk is full, ...) is left to retry.
func classify(err error) error {
	if connecterr.IsDiskFull(err) {
		return err // resource_exhausted, but only until the receiver has space again
	}
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeAlreadyExists, connect.CodePermissionDenied,
		connect.CodeFailedPrecondition, connect.CodeNotFound, connect.CodeResourceExhausted:
		return fmt.Errorf("%w: %w", handover.ErrRefused, err)
	}
	return err
}
