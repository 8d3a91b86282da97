package nodetest

import "github.com/verbund/verbund/node"

// Reconfigure changes node i's configuration for its next start (Restart):
// the same data dir and addresses with another setting, as an upgrade
// restarts a node with a new binary.
func (c *Cluster) Reconfigure(i int, fn func(cfg *node.Config)) {
	m := c.Nodes[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	fn(&m.cfg)
}
