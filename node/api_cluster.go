package node

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/federation/membership"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	"github.com/verbund/verbund/registry"
)

// clusterAPI serves the ClusterService: read index for linearizable reads
// on other nodes, the member list, and cluster administration (who may call
// what: access.go).
type clusterAPI struct{ n *Node }

var _ nodev1connect.ClusterServiceHandler = clusterAPI{}

func (a clusterAPI) ReadIndex(ctx context.Context, req *connect.Request[nodev1.ReadIndexRequest]) (*connect.Response[nodev1.ReadIndexResponse], error) {
	n := a.n
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ReadTimeout)
	defer cancel()
	idx, err := n.readIndex(ctx, hops(req.Header()))
	if err != nil {
		return nil, err
	}
	out := &nodev1.ReadIndexResponse{Index: idx}
	if n.isServer() {
		_, id := n.raft.LeaderWithID()
		out.LeaderId = string(id)
	}
	return connect.NewResponse(out), nil
}

func (a clusterAPI) ListMembers(ctx context.Context, req *connect.Request[nodev1.ListMembersRequest]) (*connect.Response[nodev1.ListMembersResponse], error) {
	n := a.n
	suffrage := map[string]string{}
	leader := ""
	if n.isServer() {
		if f := n.raft.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				suffrage[string(s.ID)] = s.Suffrage.String()
			}
		}
		_, id := n.raft.LeaderWithID()
		leader = string(id)
	} else if hops(req.Header()) == 0 {
		// A member has no Raft configuration: it asks a server for the
		// suffrage of each node and the leader.
		suffrage, leader = n.serversView(ctx)
	}
	out := &nodev1.ListMembersResponse{}
	if n.gossip == nil {
		out.Members = append(out.Members, &nodev1.Member{
			NodeId: n.cfg.NodeID, OrganisationId: n.cfg.OrgID, Role: n.cfg.Role, State: "alive",
			ApiAddress: n.APIURL(), RaftAddress: n.RaftAddr(), Version: Version,
			RaftSuffrage: suffrage[n.cfg.NodeID], Leader: leader == n.cfg.NodeID,
		})
		return connect.NewResponse(out), nil
	}
	seen := map[string]bool{}
	for _, m := range n.gossip.Members() {
		seen[m.NodeID] = true
		out.Members = append(out.Members, &nodev1.Member{
			NodeId: m.NodeID, OrganisationId: m.OrgID, Role: string(m.Role), State: string(m.State),
			ApiAddress: publicAPI(m), RaftAddress: m.RaftAddr, GossipAddress: m.GossipAddr, Version: m.Version,
			RaftSuffrage: suffrage[m.NodeID], Leader: leader != "" && leader == m.NodeID,
		})
	}
	// Raft servers gossip has never seen (or forgot).
	for id, s := range suffrage {
		if !seen[id] {
			out.Members = append(out.Members, &nodev1.Member{NodeId: id, State: "unknown", RaftSuffrage: s, Leader: leader == id})
		}
	}
	return connect.NewResponse(out), nil
}

// publicAPI is the API address clients use for member m: the one it
// gossips, or its peer (mTLS) API for a node too old to gossip it.
func publicAPI(m membership.Member) string {
	if m.PublicAPI != "" {
		return m.PublicAPI
	}
	return m.APIAddr
}

// serversView asks a live server for its view of the Raft configuration
// (suffrage by node id, and the leader), for a member's ListMembers. It
// returns empty values if no server answers within a second.
func (n *Node) serversView(ctx context.Context) (map[string]string, string) {
	suffrage := map[string]string{}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for _, s := range n.liveServers() {
		req := connect.NewRequest(&nodev1.ListMembersRequest{})
		req.Header().Set(hopHeader, "1")
		res, err := n.peers.get(s.APIAddr).cluster.ListMembers(ctx, req)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			continue
		}
		leader := ""
		for _, m := range res.Msg.GetMembers() {
			if m.GetRaftSuffrage() != "" {
				suffrage[m.GetNodeId()] = m.GetRaftSuffrage()
			}
			if m.GetLeader() {
				leader = m.GetNodeId()
			}
		}
		return suffrage, leader
	}
	return suffrage, ""
}

func (a clusterAPI) TransferLeadership(ctx context.Context, req *connect.Request[nodev1.TransferLeadershipRequest]) (*connect.Response[nodev1.TransferLeadershipResponse], error) {
	n := a.n
	if !n.isServer() || n.raft.State() != raft.Leader {
		return a.relayTransfer(ctx, req)
	}
	var f raft.Future
	if id := req.Msg.GetNodeId(); id != "" {
		var addr raft.ServerAddress
		for _, s := range n.voters() {
			if string(s.ID) == id {
				addr = s.Address
			}
		}
		if addr == "" {
			return nil, fmt.Errorf("%w: %s is not a voter", registry.ErrInvalidArgument, id)
		}
		f = n.raft.LeadershipTransferToServer(raft.ServerID(id), addr)
	} else {
		f = n.raft.LeadershipTransfer()
	}
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("%w: %v", registry.ErrUnavailable, err)
	}
	_, id := n.raft.LeaderWithID()
	return connect.NewResponse(&nodev1.TransferLeadershipResponse{LeaderId: string(id)}), nil
}

// relayTransfer passes a leadership transfer on to the leader, with the
// caller's token attached: the leader's guard judges the network
// operator's admin again (access.go, operatorAdmin on the peer listener).
func (a clusterAPI) relayTransfer(ctx context.Context, req *connect.Request[nodev1.TransferLeadershipRequest]) (*connect.Response[nodev1.TransferLeadershipResponse], error) {
	n := a.n
	authz, hop := req.Header().Get("Authorization"), hops(req.Header())
	if authz == "" || hop >= maxHops {
		return nil, fmt.Errorf("%w: ask the leader", registry.ErrNotLeader)
	}
	target, id, err := n.forwardTarget("")
	if err != nil {
		return nil, err
	}
	fwd := connect.NewRequest(req.Msg)
	fwd.Header().Set("Authorization", authz)
	fwd.Header().Set(hopHeader, strconv.Itoa(hop+1))
	res, err := n.peers.get(target).cluster.TransferLeadership(ctx, fwd)
	if err != nil {
		if !connect.IsWireError(err) {
			return nil, fmt.Errorf("relay to the leader: %w", peerFailure(id, err))
		}
		return nil, fmt.Errorf("relay to the leader (node %s): %w", id, fromPeer(err))
	}
	return connect.NewResponse(res.Msg), nil
}

func (a clusterAPI) RotateGossipKey(ctx context.Context, req *connect.Request[nodev1.RotateGossipKeyRequest]) (*connect.Response[nodev1.RotateGossipKeyResponse], error) {
	n := a.n
	if n.gossip == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("gossip is not enabled on this node"))
	}
	key, err := base64.StdEncoding.DecodeString(req.Msg.GetKey())
	if err != nil {
		return nil, fmt.Errorf("%w: key is not base64", registry.ErrInvalidArgument)
	}
	switch req.Msg.GetOperation() {
	case nodev1.KeyOperation_KEY_OPERATION_INSTALL:
		err = n.gossip.InstallKey(key)
	case nodev1.KeyOperation_KEY_OPERATION_USE:
		err = n.gossip.UseKey(key)
	case nodev1.KeyOperation_KEY_OPERATION_REMOVE:
		err = n.gossip.RemoveKey(key)
	default:
		return nil, fmt.Errorf("%w: operation must be install, use or remove", registry.ErrInvalidArgument)
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	}
	return connect.NewResponse(&nodev1.RotateGossipKeyResponse{Keys: int32(len(n.gossip.ListKeys()))}), nil
}
