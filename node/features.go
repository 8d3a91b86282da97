package node

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/federation/membership"

	"github.com/verbund/verbund/registry"
)

// The version gate on the node side (registry/features.go holds the table
// and the state). Every server advertises in gossip the highest feature
// level its software supports; the leader raises the cluster's recorded
// level to the lowest level advertised by the servers in the Raft
// configuration, once all of them advertise one above it. A server that
// predates the gate advertises nothing and counts as level 1; a server
// gossip does not know holds the level where it is.

// supportedFeatureLevel is the level this node advertises.
func (n *Node) supportedFeatureLevel() uint32 {
	if n.cfg.FeatureLevel != 0 {
		return n.cfg.FeatureLevel
	}
	return registry.SupportedFeatureLevel()
}

// featureLoop runs on every server and acts only while this node leads.
func (n *Node) featureLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n.raft.State() != raft.Leader {
				continue
			}
			if err := n.raiseFeatureLevel(); err != nil {
				n.log.Warn("feature level", "err", err)
			}
		}
	}
}

// clusterFeatureLevel is the lowest level the servers of the Raft
// configuration advertise, and false if some server's level is unknown
// (not in gossip).
func (n *Node) clusterFeatureLevel() (uint32, bool, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return 0, false, err
	}
	level := n.supportedFeatureLevel()
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(n.cfg.NodeID) {
			continue
		}
		m, ok := n.memberByNodeID(string(s.ID))
		if !ok {
			return 0, false, nil
		}
		l := m.FeatureLevel
		if l == 0 {
			l = registry.BaseFeatureLevel // a node that predates the gate
		}
		level = min(level, l)
	}
	return level, true, nil
}

// raiseFeatureLevel proposes the raise if every server supports a level
// above the recorded one.
func (n *Node) raiseFeatureLevel() error {
	target, known, err := n.clusterFeatureLevel()
	if err != nil || !known {
		return err
	}
	cur, err := n.fsm.FeatureLevel()
	if err != nil {
		return err
	}
	if target <= cur {
		return nil
	}
	data, err := registry.RaiseFeatureLevelEntry(target, n.cfg.Clock().UnixMilli())
	if err != nil {
		return err
	}
	fut := n.raft.Apply(data, 10*time.Second)
	if err := fut.Error(); err != nil {
		return fmt.Errorf("propose feature level %d: %w", target, err)
	}
	n.log.Info("raised the cluster feature level: every server supports it", "from", cur, "to", target, "index", fut.Index())
	return nil
}

// mayJoinRaft reports whether a server may be added to the Raft
// configuration: it must support the recorded feature level, or it would
// meet command kinds it does not know (and its state would diverge).
func (n *Node) mayJoinRaft(m membership.Member) bool {
	cur, err := n.fsm.FeatureLevel()
	if err != nil {
		return false
	}
	l := m.FeatureLevel
	if l == 0 {
		l = registry.BaseFeatureLevel
	}
	if l < cur {
		n.log.Warn("not adding a server to raft: its software is older than the cluster's feature level (upgrade it)", "id", m.NodeID, "version", m.Version, "supports", l, "cluster_level", cur)
		return false
	}
	return true
}

// FeatureLevel is the cluster's feature level as this node's state records it.
func (n *Node) FeatureLevel() (uint32, error) { return n.reader.FeatureLevel() }
