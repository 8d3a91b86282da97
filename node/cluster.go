package node

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

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
		APIAddr: n.PeerURL(), RaftAddr: n.RaftAddr(), Version: Version,
	}
	mc.Keyring = n.cfg.GossipKeys
	mc.AllowPlaintext = len(n.cfg.GossipKeys) == 0
	mc.Label = n.cfg.GossipLabel
	mc.Join = n.cfg.Join
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
	if len(n.cfg.Join) > 0 {
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := n.gossip.Join(jctx, n.cfg.Join); err != nil {
			// Not fatal: the rejoin loop keeps trying the seeds.
			n.log.Warn("gossip join failed; retrying in the background", "seeds", n.cfg.Join, "err", err)
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

// reconcileLoop runs on every server; it acts only while this node leads.
func (n *Node) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.ReconcileInterval)
	defer t.Stop()
	r := &reconciler{n: n, missing: map[raft.ServerID]time.Time{}}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n.raft.State() == raft.Leader {
				if err := r.once(); err != nil {
					n.log.Warn("raft membership reconcile", "err", err)
				}
			} else {
				clear(r.missing)
			}
		}
	}
}

type reconciler struct {
	n       *Node
	mu      sync.Mutex
	missing map[raft.ServerID]time.Time // servers in Raft not alive in gossip, since
}

// once brings the Raft configuration in line with gossip: alive servers
// join (as voters up to the configured number, then as non-voters), voter-
// role non-voters are promoted when a voter slot is free, and servers that
// gossip reports left, or dead for longer than the grace period, are removed.
func (r *reconciler) once() error {
	n := r.n
	r.mu.Lock()
	defer r.mu.Unlock()
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	conf := f.Configuration()
	inRaft := map[raft.ServerID]raft.Server{}
	voters := 0
	for _, s := range conf.Servers {
		inRaft[s.ID] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	gossip := map[raft.ServerID]membership.Member{}
	for _, m := range n.gossip.Members() {
		if m.Role == membership.RoleVoter || m.Role == membership.RoleReplica {
			gossip[raft.ServerID(m.NodeID)] = m
		}
	}
	now := time.Now()
	// Remove departed servers first, freeing voter slots.
	for id, s := range inRaft {
		if id == raft.ServerID(n.cfg.NodeID) {
			continue
		}
		m, ok := gossip[id]
		alive := ok && (m.State == membership.StateAlive || m.State == membership.StateSuspect)
		if alive {
			delete(r.missing, id)
			continue
		}
		since, seen := r.missing[id]
		if !seen {
			since = now
			if ok {
				since = m.Since
			}
			r.missing[id] = since
		}
		if (ok && m.State == membership.StateLeft) || now.Sub(since) >= n.cfg.DeadServerGrace {
			n.log.Info("removing server from raft", "id", id, "state", m.State, "since", since)
			if err := n.raft.RemoveServer(id, 0, 10*time.Second).Error(); err != nil {
				return fmt.Errorf("remove %s: %w", id, err)
			}
			delete(r.missing, id)
			if s.Suffrage == raft.Voter {
				voters--
			}
		}
	}
	for id, m := range gossip {
		if m.State != membership.StateAlive || m.RaftAddr == "" {
			continue
		}
		s, in := inRaft[id]
		addr := raft.ServerAddress(m.RaftAddr)
		wantVoter := m.Role == membership.RoleVoter && (voters < n.cfg.Voters || (in && s.Suffrage == raft.Voter))
		switch {
		case !in && wantVoter, in && s.Suffrage != raft.Voter && wantVoter:
			n.log.Info("adding raft voter", "id", id, "addr", addr)
			if err := n.raft.AddVoter(id, addr, 0, 10*time.Second).Error(); err != nil {
				return fmt.Errorf("add voter %s: %w", id, err)
			}
			voters++
		case !in:
			n.log.Info("adding raft non-voter", "id", id, "addr", addr)
			if err := n.raft.AddNonvoter(id, addr, 0, 10*time.Second).Error(); err != nil {
				return fmt.Errorf("add non-voter %s: %w", id, err)
			}
		case in && s.Address != addr:
			n.log.Info("server address changed", "id", id, "from", s.Address, "to", addr)
			var err error
			if s.Suffrage == raft.Voter {
				err = n.raft.AddVoter(id, addr, 0, 10*time.Second).Error()
			} else {
				err = n.raft.AddNonvoter(id, addr, 0, 10*time.Second).Error()
			}
			if err != nil {
				return fmt.Errorf("update %s: %w", id, err)
			}
		}
	}
	return nil
}
