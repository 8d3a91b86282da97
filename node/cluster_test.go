package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node"
	"github.com/verbund/verbund/node/nodetest"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

func orgCmd(t *testing.T, key jose.JSONWebKey, id, name string) string {
	t.Helper()
	jws, err := registry.SignCommand(registry.NewCommand("test-operator", &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
		Id: id, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: name,
	}}}), key)
	if err != nil {
		t.Fatal(err)
	}
	return jws
}

func publishVia(t *testing.T, c *nodetest.Cluster, i int, jws string) (uint64, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.Publish(i).Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: []string{jws}}))
	if err != nil {
		return 0, err
	}
	if r := res.Msg.GetResults()[0]; r.GetErrorCode() != "" {
		return 0, fmt.Errorf("%s: %s", r.GetErrorCode(), r.GetErrorMessage())
	}
	return res.Msg.GetIndex(), nil
}

func readOrg(c *nodetest.Cluster, i int, id string, ro *registryv1.ReadOptions) (*registryv1.GetOrganisationResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.Query(i).GetOrganisation(ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{Id: id, Read: ro}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// TestClusterRolesAndForwarding: 3 voters, a replica and a member. Writes
// sent to any node are forwarded to the leader; every node serves them;
// linearizable reads work on followers and members.
func TestClusterRolesAndForwarding(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Replicas: 1, Members: 1})
	l := c.WaitLeader(10 * time.Second)
	cfg := l.Node().Raft().GetConfiguration()
	voters, nonvoters := 0, 0
	for _, s := range cfg.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters++
		} else {
			nonvoters++
		}
	}
	if voters != 3 || nonvoters != 1 {
		t.Fatalf("raft configuration: %d voters, %d non-voters; want 3, 1", voters, nonvoters)
	}
	key := c.OperatorKey()
	for i := range c.Nodes {
		id := fmt.Sprintf("0916200%05d", i)
		idx, err := publishVia(t, c, i, orgCmd(t, key, id, fmt.Sprintf("via node %d", i)))
		if err != nil {
			t.Fatalf("publish via node %d (%s): %v", i, c.Nodes[i].Role, err)
		}
		for j := range c.Nodes {
			// Read your own write anywhere with min_index.
			res, err := readOrg(c, j, id, &registryv1.ReadOptions{MinIndex: idx})
			if err != nil {
				t.Fatalf("read %s on node %d (%s) at min index %d: %v", id, j, c.Nodes[j].Role, idx, err)
			}
			if res.GetRead().GetIndex() < idx {
				t.Fatalf("node %d read index %d < %d", j, res.GetRead().GetIndex(), idx)
			}
			// And linearizably, with no index in hand.
			res, err = readOrg(c, j, id, &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE})
			if err != nil || !res.GetRead().GetLinearizable() {
				t.Fatalf("linearizable read on node %d (%s): %v %v", j, c.Nodes[j].Role, res, err)
			}
		}
	}
}

// TestLeaderKillFailover kills the leader, checks a new one is elected within
// a bound, writes through a survivor, and restarts the old leader, which
// catches up.
func TestLeaderKillFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Members: 1})
	old := c.WaitLeader(10 * time.Second)
	key := c.OperatorKey()
	killed := time.Now()
	c.Kill(old.Index)
	nl := c.WaitLeader(10 * time.Second)
	t.Logf("failover after leader kill: %v (new leader %s)", time.Since(killed).Round(time.Millisecond), nl.ID)
	survivor := (old.Index + 1) % 3
	idx, err := publishVia(t, c, survivor, orgCmd(t, key, "091620000999", "during outage"))
	if err != nil {
		t.Fatalf("write during outage via node %d: %v", survivor, err)
	}
	c.Restart(old.Index)
	for i := range c.Nodes {
		if _, err := readOrg(c, i, "091620000999", &registryv1.ReadOptions{MinIndex: idx}); err != nil {
			t.Fatalf("node %d after restart: %v", i, err)
		}
	}
}

// TestIsolatedLeaderServesNoStaleRead: a leader cut off in a minority must
// not answer a linearizable read, while the majority elects a new leader and
// commits a newer write.
func TestIsolatedLeaderServesNoStaleRead(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3})
	old := c.WaitLeader(10 * time.Second)
	key := c.OperatorKey()
	if _, err := publishVia(t, c, old.Index, orgCmd(t, key, "091620000001", "v1")); err != nil {
		t.Fatal(err)
	}
	c.Isolate(old.Index)
	// The majority elects a new leader and commits v2.
	var nl *nodetest.Member
	if err := c.WaitFor(10*time.Second, func() error {
		for _, m := range c.Nodes {
			if m.Index != old.Index && m.Node().Raft().State() == raft.Leader {
				nl = m
				return nil
			}
		}
		return fmt.Errorf("no leader in the majority")
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := publishVia(t, c, nl.Index, orgCmd(t, key, "091620000001", "v2")); err != nil {
		t.Fatal(err)
	}
	// The old leader may still think it leads; a linearizable read on it
	// must fail rather than return v1.
	res, err := readOrg(c, old.Index, "091620000001", &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE})
	if err == nil {
		t.Fatalf("isolated old leader answered a linearizable read: %q at index %d", res.GetOrganisation().GetName(), res.GetRead().GetIndex())
	}
	// A local read there is allowed, and says how stale it may be.
	res, err = readOrg(c, old.Index, "091620000001", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("isolated node local read: %q, staleness %dms", res.GetOrganisation().GetName(), res.GetRead().GetStalenessMs())
	c.Heal()
	c.WaitLeader(10 * time.Second)
	if err := c.WaitFor(10*time.Second, func() error {
		res, err := readOrg(c, old.Index, "091620000001", &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE})
		if err != nil {
			return err
		}
		if res.GetOrganisation().GetName() != "v2" {
			return fmt.Errorf("read %q", res.GetOrganisation().GetName())
		}
		return nil
	}); err != nil {
		t.Fatalf("after heal: %v", err)
	}
}

// TestClusterOverTLS: Raft and node-to-node API calls over mutual TLS; a
// member follows the feed and writes are forwarded over the peer listener.
func TestClusterOverTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Members: 1, TLS: true})
	key := c.OperatorKey()
	for _, i := range []int{1, 3} { // a follower and the member forward
		id := fmt.Sprintf("0916200%05d", i)
		idx, err := publishVia(t, c, i, orgCmd(t, key, id, "over tls"))
		if err != nil {
			t.Fatalf("publish via %d: %v", i, err)
		}
		if _, err := readOrg(c, 3, id, &registryv1.ReadOptions{MinIndex: idx, Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}); err != nil {
			t.Fatalf("member read: %v", err)
		}
	}
	if got := c.Nodes[1].Node().PeerURL(); got[:8] != "https://" {
		t.Fatalf("peer URL %q is not https", got)
	}
}

// TestMemberCutOffKeepsServing: a member partitioned from every server keeps
// answering reads from its copy, reports growing staleness, and catches up
// when the partition heals.
func TestMemberCutOffKeepsServing(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Members: 1})
	key := c.OperatorKey()
	if _, err := publishVia(t, c, 0, orgCmd(t, key, "091620000050", "before")); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitCaughtUp(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	c.Isolate(3)
	idx, err := publishVia(t, c, 0, orgCmd(t, key, "091620000050", "after"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	res, err := readOrg(c, 3, "091620000050", nil)
	if err != nil {
		t.Fatalf("cut-off member refused a local read: %v", err)
	}
	if res.GetOrganisation().GetName() != "before" || res.GetRead().GetStalenessMs() < 1000 {
		t.Fatalf("cut-off member: %q, staleness %dms (want the old value, >= 1000ms)", res.GetOrganisation().GetName(), res.GetRead().GetStalenessMs())
	}
	t.Logf("cut-off member serves %q at index %d, staleness %dms", res.GetOrganisation().GetName(), res.GetRead().GetIndex(), res.GetRead().GetStalenessMs())
	// A linearizable read cannot be served while cut off.
	if _, err := readOrg(c, 3, "091620000050", &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}); err == nil {
		t.Fatal("cut-off member served a linearizable read")
	}
	c.Heal()
	healed := time.Now()
	// The member's feed retries with jittered backoff (up to 1.5 x 2 s, so
	// that thousands of members do not reconnect at once after a heal), and
	// a min_index read waits ReadTimeout (2 s here): poll within a bound.
	if err := c.WaitFor(10*time.Second, func() error {
		res, err := readOrg(c, 3, "091620000050", &registryv1.ReadOptions{MinIndex: idx})
		if err != nil {
			return err
		}
		if name := res.GetOrganisation().GetName(); name != "after" {
			return fmt.Errorf("member serves %q at index %d, want \"after\"", name, res.GetRead().GetIndex())
		}
		return nil
	}); err != nil {
		t.Fatalf("member after heal: %v", err)
	}
	t.Logf("member caught up %v after the heal", time.Since(healed).Round(time.Millisecond))
}

// TestNewMemberReceivesFullRegistry measures how long a new member takes to
// receive the whole registry with the sample data (11,004 municipalities).
func TestNewMemberReceivesFullRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node with sample data")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3})
	node.ImportSampleData(t, c.Nodes[0].Node(), c.Nodes[1].Node()) // the operator signs; sent through another node
	want := c.AppliedIndex()                                       // everything the import wrote
	start := time.Now()
	i := c.AddNode("member")
	if err := c.WaitFor(60*time.Second, func() error {
		if got := c.Nodes[i].Node().AppliedIndex(); got < want {
			return fmt.Errorf("member at %d of %d", got, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	orgs, _, _, err := c.Nodes[i].Node().Reader().ListOrganisations(registry.OrgFilter{Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, PageSize: 1000})
	if err != nil || len(orgs) != 1000 {
		t.Fatalf("member lists %d municipalities: %v", len(orgs), err)
	}
	n, tok := 0, ""
	for {
		page, next, _, err := c.Nodes[i].Node().Reader().ListOrganisations(registry.OrgFilter{Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, PageSize: 1000, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		n += len(page)
		if tok = next; tok == "" {
			break
		}
	}
	if n != 11004 {
		t.Fatalf("member has %d municipalities, want 11004", n)
	}
	// The place index (feature level 2) came with the state.
	if places, _, err := c.Nodes[i].Node().Reader().SearchPlaces("augsburg", registry.OrgFilter{Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY}); err != nil ||
		len(places) == 0 || places[0].GetId() != "097610000000" {
		t.Fatalf("member's place search for Augsburg: %v, %v", places, err)
	}
	p, err := c.Nodes[i].Node().Reader().FindProviders("99050012104000", "091620000000", 5)
	if err != nil || len(p.Matches) == 0 {
		t.Fatalf("member FindProviders: %v %v", p, err)
	}
	t.Logf("new member received the full registry (11,004 municipalities, index %d) in %v", want, took.Round(time.Millisecond))
}
