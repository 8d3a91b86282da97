package node

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/keys"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// nodeAPI serves the NodeService: this node's status and its
// organisation's keys (rotation and revocation: who may call them is in
// access.go; the work is in keyrotation.go).
type nodeAPI struct{ n *Node }

var _ nodev1connect.NodeServiceHandler = nodeAPI{}

func (a nodeAPI) GetStatus(ctx context.Context, req *connect.Request[nodev1.GetStatusRequest]) (*connect.Response[nodev1.GetStatusResponse], error) {
	n := a.n
	ks := n.keys.current()
	sig, _ := keys.Published(ks.sig)
	enc, _ := keys.Published(ks.enc)
	out := &nodev1.GetStatusResponse{
		Keys:            []*registryv1.PublicKey{sig, enc},
		PeerUrl:         n.PeerURL(),
		Role:            n.cfg.Role,
		NodeId:          n.cfg.NodeID,
		OrganisationId:  n.cfg.OrgID,
		AppliedIndex:    n.state.AppliedIndex(),
		Version:         Version,
		StartedAtUnixMs: n.started.UnixMilli(),
		ExpiryWarnings:  n.expiryWarnings(n.cfg.Clock()),
	}
	if !n.isServer() {
		out.RaftState = "Member"
		out.Stats = map[string]string{"staleness_ms": fmt.Sprint(n.staleness().Milliseconds())}
		return connect.NewResponse(out), nil
	}
	addr, id := n.raft.LeaderWithID()
	out.RaftState = n.raft.State().String()
	out.LeaderId, out.LeaderAddress = string(id), string(addr)
	out.CommitIndex = n.raft.CommitIndex()
	out.Stats = n.raft.Stats()
	return connect.NewResponse(out), nil
}

func (a nodeAPI) RotateKeys(ctx context.Context, req *connect.Request[nodev1.RotateKeysRequest]) (*connect.Response[nodev1.RotateKeysResponse], error) {
	res, err := a.n.RotateKeys(ctx, time.Duration(req.Msg.GetGraceSeconds())*time.Second, req.Msg.GetRevokePrevious())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res), nil
}

func (a nodeAPI) RevokeKey(ctx context.Context, req *connect.Request[nodev1.RevokeKeyRequest]) (*connect.Response[nodev1.RevokeKeyResponse], error) {
	idx, err := a.n.RevokeKey(ctx, req.Msg.GetKid())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nodev1.RevokeKeyResponse{Index: idx}), nil
}
