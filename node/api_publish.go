package node

import (
	"context"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// publishAPI serves the PublishService.
type publishAPI struct{ n *Node }

var _ registryv1connect.PublishServiceHandler = publishAPI{}

// Publish accepts signed commands on any node: the leader proposes them,
// any other node forwards them to the leader (the client is not bounced).
func (a publishAPI) Publish(ctx context.Context, req *connect.Request[registryv1.PublishRequest]) (*connect.Response[registryv1.PublishResponse], error) {
	res, idx, err := a.n.submit(ctx, hops(req.Header()), req.Msg.GetSignedCommands())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&registryv1.PublishResponse{Results: res, Index: idx}), nil
}
