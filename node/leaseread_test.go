package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node"
	"github.com/verbund/verbund/node/nodetest"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// TestLinearizableReadChecksLeadershipBeyondLease exercises the leader
// check of a linearizable read where the leader lease cannot cover it:
// the leader (n1) runs with a 10 s lease and heartbeat timeout, its
// followers with 3 s. Cut off, n1 keeps believing it leads for 10-20 s,
// while the followers elect a new leader after 3-6 s and commit v2. A
// linearizable read at n1 in that window must fail or return v2, never the
// v1 its own state still holds: only the quorum round trip of VerifyLeader
// (not the lease, not the per-term barrier, which already ran) tells n1
// that it was deposed.
func TestLinearizableReadChecksLeadershipBeyondLease(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node, waits out long Raft timers")
	}
	const old = 1
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Configure: nodetest.PerNode(map[int]func(*node.Config){
		0:   nodetest.RaftTiming(3*time.Second, 3*time.Second, 500*time.Millisecond),
		old: nodetest.RaftTiming(10*time.Second, 10*time.Second, 10*time.Second),
		2:   nodetest.RaftTiming(3*time.Second, 3*time.Second, 500*time.Millisecond),
	})})
	if err := c.TransferLeadership(old, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	key := c.OperatorKey()
	const id = "091620000077"
	if _, err := publishVia(t, c, old, orgCmd(t, key, id, "v1")); err != nil {
		t.Fatal(err)
	}
	lin := &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}
	// A first linearizable read at n1 runs its per-term barrier, so later
	// reads in this term rely on the leader check alone.
	if res, err := readOrg(c, old, id, lin); err != nil || res.GetOrganisation().GetName() != "v1" {
		t.Fatalf("linearizable read at the leader before the cut: %v %v", res, err)
	}
	cut := time.Now()
	c.Isolate(old)
	var nl *nodetest.Member
	if err := c.WaitFor(15*time.Second, func() error {
		for _, m := range c.Nodes {
			if m.Index != old && m.Node().Raft().State() == raft.Leader {
				nl = m
				return nil
			}
		}
		return fmt.Errorf("no leader in the majority")
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := publishVia(t, c, nl.Index, orgCmd(t, key, id, "v2")); err != nil {
		t.Fatal(err)
	}
	on := c.Nodes[old].Node().Raft()
	if on.State() != raft.Leader {
		t.Fatalf("inconclusive: n1 stepped down %v after the cut, before the read (its lease should hold 10 s)", time.Since(cut).Round(time.Millisecond))
	}
	t.Logf("new leader %s committed v2 %v after the cut; n1 still believes it leads (term %d < %d)",
		nl.ID, time.Since(cut).Round(time.Millisecond), on.CurrentTerm(), nl.Node().Raft().CurrentTerm())
	res, err := readOrg(c, old, id, lin)
	if err == nil && res.GetOrganisation().GetName() != "v2" {
		t.Fatalf("deposed leader answered a linearizable read with %q at index %d (v2 was committed)", res.GetOrganisation().GetName(), res.GetRead().GetIndex())
	}
	t.Logf("linearizable read at the deposed leader: %v (name %q)", err, res.GetOrganisation().GetName())
	c.Heal()
	if err := c.WaitFor(30*time.Second, func() error {
		res, err := readOrg(c, old, id, lin)
		if err != nil {
			return err
		}
		if got := res.GetOrganisation().GetName(); got != "v2" {
			return fmt.Errorf("read %q", got)
		}
		return nil
	}); err != nil {
		t.Fatalf("after heal: %v", err)
	}
}
