package node_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/node"
	"github.com/verbund/verbund/node/nodetest"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// TestVersionGateRaisedWhenEveryServerSupportsIt runs three real in-process
// voters advertising feature level 1 (the old version), upgrades n0 and n1
// (restart, advertising 2) while n2 stays old. A
// command kind of level 2 (put_service, registered at level 2 for this test
// only) is refused with feature_level through every node, and nothing is
// applied anywhere. n2 is then "upgraded" (restarted on its data dir,
// advertising 2): the leader raises the level, every replica records 2,
// and the same command is applied everywhere. A fourth server advertising
// level 1 is then kept out of the Raft configuration until it is upgraded.
func TestVersionGateRaisedWhenEveryServerSupportsIt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	// Three servers of the "old" version (level 1).
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Configure: func(i int, cfg *node.Config) { cfg.FeatureLevel = 1 }})
	defer registry.SetKindLevelForTest("put_service", 2)()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const leika = "99050012104999"
	cmd := registry.NewCommand("test-operator", &registryv1.Mutation{Op: &registryv1.Mutation_PutService{PutService: &registryv1.Service{LeikaKey: leika, Name: "Neue Art"}}})
	jws, err := registry.SignCommand(cmd, c.OperatorKey())
	if err != nil {
		t.Fatal(err)
	}
	publish := func(via int) *registryv1.CommandResult {
		t.Helper()
		res, err := c.Publish(via).Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: []string{jws}}))
		if err != nil {
			t.Fatalf("publish via n%d: %v", via, err)
		}
		return res.Msg.GetResults()[0]
	}
	levels := func() []uint32 {
		var out []uint32
		for _, m := range c.Nodes {
			l, err := m.Node().FeatureLevel()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, l)
		}
		return out
	}
	t.Logf("levels at start: %v; table: %v", levels(), registry.KindLevels()["put_service"])
	// Rolling upgrade of n0 and n1 (restart on the same data dir,
	// advertising 2); n2 stays old. Give the leader several reconcile
	// rounds: it must not raise.
	for i := range 2 {
		c.Reconfigure(i, func(cfg *node.Config) { cfg.FeatureLevel = 2 })
		c.Restart(i)
		if c.WaitLeader(20*time.Second) == nil {
			t.Fatal("no leader")
		}
	}
	// An upgraded server leads: it must still wait for n2.
	if err := c.TransferLeadership(0, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	for via := range c.Nodes {
		r := publish(via)
		if r.GetErrorCode() != registry.CodeFeatureLevel {
			t.Fatalf("via n%d with an old server: %v (levels %v), want %q", via, r, levels(), registry.CodeFeatureLevel)
		}
		if via == 0 {
			t.Logf("refused: %s", r.GetErrorMessage())
		}
	}
	if err := c.WaitCaughtUp(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	for i, m := range c.Nodes {
		if _, _, err := m.Node().Reader().Service(leika); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("n%d has the service while the level is 1: %v", i, err)
		}
	}
	if l := levels(); l[0] != 1 || l[1] != 1 || l[2] != 1 {
		t.Fatalf("levels with an old server: %v, want all 1", l)
	}

	// Upgrade n2: same data dir, now advertising 2.
	c.Reconfigure(2, func(cfg *node.Config) { cfg.FeatureLevel = 2 })
	start := time.Now()
	c.Restart(2)
	if err := c.WaitFor(30*time.Second, func() error {
		if l := levels(); l[0] != 2 || l[1] != 2 || l[2] != 2 {
			return fmt.Errorf("levels %v", l)
		}
		return nil
	}); err != nil {
		t.Fatalf("level not raised after the upgrade: %v", err)
	}
	t.Logf("level 2 recorded on every replica %v after n2's restart", time.Since(start).Round(time.Millisecond))
	for via := range c.Nodes {
		if r := publish(via); r.GetErrorCode() != "" {
			t.Fatalf("via n%d after the raise: %s: %s", via, r.GetErrorCode(), r.GetErrorMessage())
		}
	}
	if err := c.WaitCaughtUp(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	var revs []uint64
	for i, m := range c.Nodes {
		s, _, err := m.Node().Reader().Service(leika)
		if err != nil {
			t.Fatalf("n%d: %v", i, err)
		}
		revs = append(revs, s.GetRevision())
	}
	if revs[0] != revs[1] || revs[1] != revs[2] {
		t.Fatalf("replicas disagree on the service revision: %v", revs)
	}
	t.Logf("replicas agree: level %v, service revision %d", levels(), revs[0])

	// A server older than the recorded level is not added to Raft (it
	// would not know the kinds the level allows); upgraded, it is.
	inRaft := func(id string) bool {
		f := c.WaitLeader(10 * time.Second).Node().Raft().GetConfiguration()
		if f.Error() != nil {
			return false
		}
		for _, s := range f.Configuration().Servers {
			if string(s.ID) == id {
				return true
			}
		}
		return false
	}
	i := c.AddNode(node.RoleVoter) // advertises 1 (Configure)
	time.Sleep(4 * time.Second)
	if inRaft(c.Nodes[i].ID) {
		t.Fatalf("%s (feature level 1) was added to a level-2 cluster", c.Nodes[i].ID)
	}
	c.Reconfigure(i, func(cfg *node.Config) { cfg.FeatureLevel = 2 })
	c.Restart(i)
	if err := c.WaitFor(30*time.Second, func() error {
		if !inRaft(c.Nodes[i].ID) {
			return fmt.Errorf("%s not in raft", c.Nodes[i].ID)
		}
		return nil
	}); err != nil {
		t.Fatalf("upgraded server not added: %v", err)
	}
}
