package e2e

import (
	"testing"
	"time"

	"github.com/verbund/verbund/e2e/proc"
)

// TestGenesisNodeRestartsWithItsFlags restarts the node that bootstrapped
// the network with the command line it was first started with
// (--bootstrap --genesis) while another node leads: it must rejoin as a
// voter, not wait to lead itself and give up.
func TestGenesisNodeRestartsWithItsFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster of processes")
	}
	c := proc.StartCluster(t, binary, 3)
	c.Kill(0)
	if err := proc.WaitUntil(30*time.Second, func() error { _, err := c.Leader(0); return err }); err != nil {
		t.Fatalf("no new leader after killing n0: %v", err)
	}
	start := time.Now()
	if err := c.Restart(0); err != nil {
		t.Fatalf("n0 restarted with its first flags: %v", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("n0 took %v to start again (genesis waited for its own leadership?)", took)
	}
	if err := c.WaitReady(30 * time.Second); err != nil {
		t.Fatalf("cluster not ready after n0's restart: %v", err)
	}
	if c.Node(0).Exited() {
		t.Fatalf("n0 exited after its restart:\n%s", c.Node(0).Logs())
	}
}
