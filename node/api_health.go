package node

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

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
