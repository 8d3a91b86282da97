package nodetest

import (
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node"
)

// RaftTiming sets a node's Raft timers. hashicorp/raft requires
// lease <= heartbeat <= election (ValidateConfig); a leader sends
// heartbeats every heartbeat/10 to heartbeat/5, and a follower starts an
// election after heartbeat to 2*heartbeat without contact.
func RaftTiming(heartbeat, election, lease time.Duration) func(*node.Config) {
	return func(cfg *node.Config) {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = heartbeat, election, lease
	}
}

// PerNode returns an Options.Configure that applies set[i] to node i (nodes
// not in set keep the harness defaults).
func PerNode(set map[int]func(*node.Config)) func(int, *node.Config) {
	return func(i int, cfg *node.Config) {
		if f := set[i]; f != nil {
			f(cfg)
		}
	}
}

// TransferLeadership asks the current leader to hand leadership to node i
// and waits until i leads.
func (c *Cluster) TransferLeadership(i int, bound time.Duration) error {
	l := c.Leader()
	if l == nil {
		return fmt.Errorf("no leader")
	}
	if l.Index == i {
		return nil
	}
	id := raft.ServerID(c.Nodes[i].ID)
	f := l.Node().Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	var addr raft.ServerAddress
	for _, s := range f.Configuration().Servers {
		if s.ID == id {
			addr = s.Address
		}
	}
	if addr == "" {
		return fmt.Errorf("%s is not in the raft configuration", id)
	}
	if err := l.Node().Raft().LeadershipTransferToServer(id, addr).Error(); err != nil {
		return fmt.Errorf("transfer leadership to %s: %w", id, err)
	}
	return c.WaitFor(bound, func() error {
		if l := c.Leader(); l == nil || l.Index != i {
			return fmt.Errorf("%s does not lead yet", id)
		}
		return nil
	})
}
