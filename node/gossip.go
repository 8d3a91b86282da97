package node

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/verbund/verbund/federation/membership"
)

// startGossip joins the gossip network if configured. Gossip announces the
// node's role and addresses; the leader turns that into Raft membership.
// Gossip is never trusted on its own: Raft and API traffic between nodes is
// authenticated separately (TLS with the network's CA).
func (n *Node) startGossip(ctx context.Context) error {
	if n.cfg.GossipAddr == "" {
		return nil
	}
	host, portStr, err := net.SplitHostPort(n.cfg.GossipAddr)
	if err != nil {
		return fmt.Errorf("gossip addr: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("gossip port: %w", err)
	}
	mc := membership.DefaultConfig()
	mc.NodeName = n.cfg.NodeID
	mc.BindAddr, mc.BindPort = host, port
	mc.Meta = membership.Meta{
		NodeID: n.cfg.NodeID, OrgID: n.cfg.OrgID, Role: membership.Role(n.cfg.Role),
		APIAddr: n.PeerURL(), RaftAddr: n.RaftAddr(), Version: Version, PublicAPI: n.APIURL(),
		FeatureLevel: n.supportedFeatureLevel(),
	}
	mc.Keyring = n.cfg.GossipKeys
	mc.AllowPlaintext = len(n.cfg.GossipKeys) == 0
	mc.Label = n.cfg.GossipLabel
	mc.Join = n.cfg.Join
	if n.book != nil && n.isServer() {
		// After a restart, also rejoin the servers last gossiped with (a
		// bootstrap node has no --join seeds of its own).
		mc.Join = append(append([]string(nil), n.cfg.Join...), n.book.gossipSeeds(n.cfg.NodeID)...)
	}
	if n.cfg.GossipProfile != "" {
		mc.Profile = n.cfg.GossipProfile
	}
	if n.cfg.GossipRejoinInterval != 0 {
		mc.RejoinInterval = n.cfg.GossipRejoinInterval
	}
	mc.Logger = n.log.With("component", "gossip")
	mc.Transport = n.cfg.GossipTransport
	if n.gossip, err = membership.New(mc, nil); err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	if len(mc.Join) > 0 {
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := n.gossip.Join(jctx, mc.Join); err != nil {
			// Not fatal: the rejoin loop keeps trying the seeds.
			n.log.Warn("gossip join failed; retrying in the background", "seeds", mc.Join, "err", err)
		}
	}
	return nil
}

// memberByNodeID finds a gossip member by node id.
func (n *Node) memberByNodeID(id string) (membership.Member, bool) {
	if n.gossip == nil {
		return membership.Member{}, false
	}
	for _, m := range n.gossip.Members() {
		if m.NodeID == id {
			return m, true
		}
	}
	return membership.Member{}, false
}

// liveServers are the alive Raft servers gossip knows, other than this node.
func (n *Node) liveServers() []membership.Member {
	if n.gossip == nil {
		return nil
	}
	var out []membership.Member
	for _, m := range n.gossip.Alive() {
		if (m.Role == membership.RoleVoter || m.Role == membership.RoleReplica) && m.APIAddr != "" && m.NodeID != n.cfg.NodeID {
			out = append(out, m)
		}
	}
	return out
}
