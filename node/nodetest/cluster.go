// Package nodetest starts a cluster of real Verbund nodes inside one test
// process: real Raft over TCP on loopback, real memberlist gossip, badger in
// temporary directories, short timeouts. Every link between nodes (Raft
// RPCs including pre-vote, node-to-node HTTP, gossip) goes through a Net
// that can partition, isolate, drop and delay (and lose the replies of
// chosen procedures), and nodes can be killed and restarted from their data
// directories.
//
// Tests act as the nodes' users do: Connect clients of each node's public
// API (Publish, Query, Member.Handover for case workers, Member.NodeService),
// Onboard to register a node's organisation with its real keys, and
// EnsureSame to check, after hashicorp/raft's harness, that every running
// node holds the same registry state.
package nodetest

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/federation/membership"
	"github.com/verbund/verbund/federation/peertls"
	"github.com/verbund/verbund/node"
	"github.com/verbund/verbund/node/raftlog/faultfs"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// Options shape a cluster.
type Options struct {
	Voters   int // voter-role servers (the first bootstraps)
	Replicas int // non-voting servers
	Members  int // no Raft state, read copy from the change feed
	// Voters in the Raft configuration (default: Voters).
	RaftVoters int
	// SnapshotThreshold: low values force snapshots (and installs) often.
	SnapshotThreshold uint64
	TrailingLogs      uint64
	DeadServerGrace   time.Duration
	Seed              uint64
	// LogLevel for the nodes' logs, which go to t.Log (default warn).
	LogLevel slog.Level
	// TLS runs Raft and node-to-node API calls over mutual TLS with a
	// fresh CA and a certificate per node.
	TLS bool
	// AuditInterval is how often each node publishes its handover audit
	// head to the registry (default: the node's default).
	AuditInterval time.Duration
	// Configure, if set, adjusts node i's configuration after the harness
	// has filled it in (per-node timing, clocks): see overrides.go.
	Configure func(i int, cfg *node.Config)
	// DiskFree, if set, replaces each node's measurement of free disk
	// space (node.Config.DiskFree): node is the node's index. Tests fill
	// and free a node's "disk" through it.
	DiskFree func(node int, path string) (free uint64, err error)
	// DiskReserveBytes is every node's node.Config.DiskReserveBytes (0:
	// the node's default).
	DiskReserveBytes int64
	// BaseDir holds the nodes' data dirs, n0, n1, ... (default: a
	// t.TempDir()). A test can mount a small volume at one of them first.
	BaseDir string
	// PowerLoss puts every server's Raft log on its own in-memory file
	// system (raftlog/faultfs) that keeps only what was synced when
	// PowerCut cuts the node's power (see powerloss.go).
	PowerLoss bool
	// RaftLogNoSync (with PowerLoss) skips every sync of the Raft logs:
	// the control run that the power-loss checks must catch.
	RaftLogNoSync bool
	// StateRollback (with PowerLoss): a power cut also sets a server's
	// registry state back to what it held at its previous power cut, as
	// the registry's unsynced badger writes (SyncWrites off by design)
	// can be lost: the applied index goes backwards.
	StateRollback bool
}

// Cluster is a set of nodes under test.
type Cluster struct {
	caCert, caKey []byte
	t             testing.TB
	opts          Options
	Net           *Net
	Nodes         []*Member
	mu            sync.Mutex
	logs          logCounts
	rollbacks     int // power cuts that set a node's state back (powerloss.go)
}

// Member is one node slot: it keeps its data dir and addresses across
// kills and restarts.
type Member struct {
	Index  int
	ID     string
	Role   string
	Dir    string
	cfg    node.Config
	gossip *membership.FaultyTransport
	// heldGossip is the gossip transport bound at creation, until the
	// first start takes it.
	heldGossip *memberlist.NetTransport
	started    bool
	// logFS holds the Raft log with Options.PowerLoss (nil otherwise);
	// stateImage is a copy of the registry state taken at the last power
	// cut (Options.StateRollback).
	logFS        *faultfs.FS
	stateImage   string
	appliedAtCut uint64

	mu   sync.Mutex
	node *node.Node
	cl   memberClients

	tokOnce  sync.Once
	tokens   *tokenSource
	authHTTP *http.Client
}

// Node returns the running node, or nil while it is down.
func (m *Member) Node() *node.Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.node
}

// API is the member's API base URL.
func (m *Member) API() string { return "http://" + m.cfg.HTTPAddr }

// Start creates and starts a cluster and waits until it has a leader and
// every server is in the Raft configuration.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Voters < 1 {
		opts.Voters = 3
	}
	if opts.RaftVoters == 0 {
		opts.RaftVoters = opts.Voters
	}
	if opts.DeadServerGrace == 0 {
		opts.DeadServerGrace = time.Hour // fault tests restart nodes; no removal churn
	}
	if opts.LogLevel == 0 {
		opts.LogLevel = slog.LevelWarn
	}
	c := &Cluster{t: t, opts: opts, Net: newNet(opts.Seed)}
	if opts.TLS {
		var err error
		if c.caCert, c.caKey, err = peertls.NewCA("nodetest CA", 24*time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	roles := []string{}
	for i := 0; i < opts.Voters; i++ {
		roles = append(roles, node.RoleVoter)
	}
	for i := 0; i < opts.Replicas; i++ {
		roles = append(roles, node.RoleReplica)
	}
	for i := 0; i < opts.Members; i++ {
		roles = append(roles, node.RoleMember)
	}
	base := opts.BaseDir
	if base == "" {
		base = t.TempDir()
	}
	var seed string
	for i, role := range roles {
		m, err := c.newMember(i, role, filepath.Join(base, fmt.Sprintf("n%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			m.cfg.Bootstrap, m.cfg.Genesis = true, true
			seed = m.cfg.GossipAddr
		} else {
			m.cfg.Join = []string{seed}
		}
		c.Nodes = append(c.Nodes, m)
	}
	t.Cleanup(c.Shutdown)
	for _, m := range c.Nodes {
		if err := c.startMember(m); err != nil {
			t.Fatalf("start %s: %v", m.ID, err)
		}
	}
	servers := opts.Voters + opts.Replicas
	if err := c.WaitFor(30*time.Second, func() error {
		l := c.Leader()
		if l == nil {
			return fmt.Errorf("no leader")
		}
		f := l.Node().Raft().GetConfiguration()
		if err := f.Error(); err != nil {
			return err
		}
		if got := len(f.Configuration().Servers); got != servers {
			return fmt.Errorf("%d servers in raft, want %d", got, servers)
		}
		return c.caughtUp(l)
	}); err != nil {
		t.Fatalf("cluster did not form: %v", err)
	}
	return c
}

// caughtUp checks that every running node reflects everything any node
// has applied, and holds the leader's log. The leader's own applied index
// is not the bar: a leader fresh from an election applies the entries of
// earlier terms only after it commits one of its own, so for a moment it
// can trail a follower.
func (c *Cluster) caughtUp(l *Member) error {
	want := c.AppliedIndex()
	for _, m := range c.Nodes {
		n := m.Node()
		if n == nil {
			continue
		}
		if got := n.AppliedIndex(); got < want {
			return fmt.Errorf("%s at index %d, most advanced node at %d", m.ID, got, want)
		}
		if r := n.Raft(); r != nil {
			if got := r.LastIndex(); got < l.Node().Raft().LastIndex() {
				return fmt.Errorf("%s raft log at %d, leader at %d", m.ID, got, l.Node().Raft().LastIndex())
			}
		}
	}
	return nil
}

// AppliedIndex is the highest index any running node has applied: every
// entry up to it is committed.
func (c *Cluster) AppliedIndex() uint64 {
	var hi uint64
	for _, m := range c.Nodes {
		if n := m.Node(); n != nil {
			hi = max(hi, n.AppliedIndex())
		}
	}
	return hi
}

// WaitCaughtUp waits until every running node has applied what the most
// advanced node has and holds the leader's log.
func (c *Cluster) WaitCaughtUp(bound time.Duration) error {
	return c.WaitFor(bound, func() error {
		l := c.Leader()
		if l == nil {
			return fmt.Errorf("no leader")
		}
		return c.caughtUp(l)
	})
}

func (c *Cluster) newMember(i int, role, dir string) (*Member, error) {
	m := &Member{Index: i, ID: fmt.Sprintf("n%d", i), Role: role, Dir: dir}
	cfg := node.DefaultConfig()
	cfg.NodeID = m.ID
	cfg.OrgID = fmt.Sprintf("org-n%d", i)
	if i == 0 {
		cfg.OrgID = "test-operator"
	}
	cfg.Role = role
	cfg.DataDir = dir
	cfg.TokenTTL = harnessTokenTTL
	if err := addHarnessUser(dir); err != nil {
		return nil, fmt.Errorf("harness user: %w", err)
	}
	cfg.Voters = c.opts.RaftVoters
	var err error
	if cfg.HTTPAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	if cfg.RaftAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	cfg.RaftAdvertise = cfg.RaftAddr
	// The gossip transport stays bound until the node takes it, so no
	// other test process can grab the port in between.
	gt, err := membership.NewNetTransport("127.0.0.1", 0, nil)
	if err != nil {
		return nil, err
	}
	m.heldGossip = gt
	cfg.GossipAddr = fmt.Sprintf("127.0.0.1:%d", gt.GetAutoBindPort())
	cfg.GossipProfile = membership.ProfileLocal
	cfg.GossipRejoinInterval = 500 * time.Millisecond
	cfg.HeartbeatTimeout = 200 * time.Millisecond
	cfg.ElectionTimeout = 200 * time.Millisecond
	cfg.LeaderLeaseTimeout = 100 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	cfg.ReconcileInterval = 100 * time.Millisecond
	cfg.DeadServerGrace = c.opts.DeadServerGrace
	cfg.ReadTimeout = 2 * time.Second
	// Every client and node here calls from 127.0.0.1 (and without TLS
	// node-to-node calls arrive on the public listener): no rate limits.
	cfg.RateLimits.Off = true
	if c.opts.SnapshotThreshold > 0 {
		cfg.SnapshotThreshold = c.opts.SnapshotThreshold
		cfg.SnapshotInterval = 200 * time.Millisecond
	}
	if c.opts.TrailingLogs > 0 {
		cfg.TrailingLogs = c.opts.TrailingLogs
	}
	if c.opts.AuditInterval > 0 {
		cfg.AuditInterval = c.opts.AuditInterval
	}
	cfg.DiskReserveBytes = c.opts.DiskReserveBytes
	if f := c.opts.DiskFree; f != nil {
		cfg.DiskFree = func(path string) (uint64, error) { return f(i, path) }
	}
	cfg.WrapRaftTransport = func(t raft.Transport) raft.Transport { return &raftTransport{inner: t, net: c.Net, self: i} }
	var inner http.RoundTripper = http.DefaultTransport
	if c.opts.TLS {
		certPEM, keyPEM, err := peertls.IssueNodeCert(c.caCert, c.caKey, m.ID, []string{"127.0.0.1", "localhost"}, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		if cfg.TLS, err = peertls.FromPEM(c.caCert, certPEM, keyPEM); err != nil {
			return nil, err
		}
		if cfg.PeerAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		inner = cfg.TLS.HTTPTransport()
	}
	cfg.PeerHTTPClient = &http.Client{Transport: &roundTripper{inner: inner, net: c.Net, self: i}}
	cfg.Logger = c.newLogger(c.t, m.ID)
	if c.opts.PowerLoss && role != node.RoleMember {
		m.logFS = faultfs.New()
		cfg.RaftLogFS = m.logFS
		if c.opts.RaftLogNoSync {
			cfg.RaftLogFS = noSyncFS{m.logFS}
		}
	}
	if c.opts.Configure != nil {
		c.opts.Configure(i, &cfg)
	}
	m.cfg = cfg
	c.Net.register(i, cfg.RaftAddr, cfg.HTTPAddr)
	if cfg.PeerAddr != "" {
		c.Net.register(i, cfg.RaftAddr, cfg.PeerAddr)
	}
	return m, nil
}

// startMember starts m's node. Ports picked free may be taken by another
// process before the node binds them: a first start then moves to fresh
// HTTP and Raft ports, a restart (whose addresses are in the Raft
// configuration) retries the same ones.
func (c *Cluster) startMember(m *Member) error {
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = c.startMemberOnce(m); err == nil || !strings.Contains(err.Error(), "address already in use") {
			return err
		}
		if !m.started {
			if m.cfg.HTTPAddr, err = freeAddr(); err != nil {
				return err
			}
			if m.cfg.RaftAddr, err = freeAddr(); err != nil {
				return err
			}
			m.cfg.RaftAdvertise = m.cfg.RaftAddr
			c.Net.register(m.Index, m.cfg.RaftAddr, m.cfg.HTTPAddr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func (c *Cluster) startMemberOnce(m *Member) error {
	var inner *memberlist.NetTransport
	if m.heldGossip != nil {
		inner, m.heldGossip = m.heldGossip, nil
	} else {
		host, port := splitHostPort(m.cfg.GossipAddr)
		var err error
		if inner, err = membership.NewNetTransport(host, port, nil); err != nil {
			return err
		}
	}
	m.gossip = membership.NewFaultyTransport(inner)
	cfg := m.cfg
	cfg.GossipTransport = m.gossip
	c.applyGossipBlocks(m)
	n, err := node.New(cfg)
	if err != nil {
		shutdownUnused(m.gossip)
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		n.Kill()
		shutdownUnused(m.gossip)
		return err
	}
	m.mu.Lock()
	m.node = n
	m.started = true
	m.mu.Unlock()
	return nil
}

// shutdownUnused shuts down a gossip transport no memberlist consumes (the
// node did not start): other nodes' gossip may have connected to it, and
// memberlist's listener blocks handing such a connection over, so the
// transport's Shutdown would wait forever unless someone drains it.
func shutdownUnused(t *membership.FaultyTransport) {
	done := make(chan struct{})
	go func() {
		for {
			select {
			case conn := <-t.StreamCh():
				_ = conn.Close()
			case <-t.PacketCh():
			case <-done:
				return
			}
		}
	}()
	_ = t.Shutdown()
	close(done)
}

// AddNode starts one more node with the given role, joining through node
// 0's gossip address, and returns its index.
func (c *Cluster) AddNode(role string) int {
	c.t.Helper()
	c.mu.Lock()
	i := len(c.Nodes)
	m, err := c.newMember(i, role, filepath.Join(filepath.Dir(c.Nodes[0].Dir), fmt.Sprintf("n%d", i)))
	if err != nil {
		c.mu.Unlock()
		c.t.Fatal(err)
	}
	m.cfg.Join = []string{c.Nodes[0].cfg.GossipAddr}
	c.Nodes = append(c.Nodes, m)
	c.mu.Unlock()
	if err := c.startMember(m); err != nil {
		c.t.Fatalf("start %s: %v", m.ID, err)
	}
	return i
}

// Kill stops node i abruptly (no leadership hand-over, no gossip leave).
func (c *Cluster) Kill(i int) {
	m := c.Nodes[i]
	m.mu.Lock()
	n := m.node
	m.node = nil
	m.mu.Unlock()
	if n != nil {
		_ = n.Kill()
	}
}

// Restart starts node i again from its data dir.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if err := c.TryRestart(i); err != nil {
		c.t.Fatalf("restart %s: %v", c.Nodes[i].ID, err)
	}
}

// TryRestart is Restart returning the start error (a node that refuses its
// storage) instead of failing the test; the node stays down then.
func (c *Cluster) TryRestart(i int) error {
	m := c.Nodes[i]
	if m.Node() != nil {
		c.Kill(i)
	}
	m.cfg.Bootstrap, m.cfg.Genesis = false, false // state exists; never re-bootstrap
	return c.startMember(m)
}

// Partition splits the nodes into groups that cannot reach each other.
// Nodes not named in any group keep all their links.
func (c *Cluster) Partition(groups ...[]int) {
	for gi, g := range groups {
		for gj, h := range groups {
			if gi == gj {
				continue
			}
			for _, i := range g {
				for _, j := range h {
					c.Net.Block(i, j)
				}
			}
		}
	}
	for _, m := range c.Nodes {
		c.applyGossipBlocks(m)
	}
}

// Isolate cuts node i off from every other node.
func (c *Cluster) Isolate(i int) {
	var rest []int
	for j := range c.Nodes {
		if j != i {
			rest = append(rest, j)
		}
	}
	c.Partition([]int{i}, rest)
}

// Bridge: a and b cannot reach each other; nodes in neither keep all their
// links, so they bridge the two sides.
func (c *Cluster) Bridge(a, b []int) {
	c.Partition(a, b)
}

// Heal restores every link.
func (c *Cluster) Heal() {
	c.Net.HealAll()
	for _, m := range c.Nodes {
		if m.gossip != nil {
			m.gossip.Heal()
		}
	}
}

func (c *Cluster) applyGossipBlocks(m *Member) {
	if m.gossip == nil {
		return
	}
	m.gossip.Heal()
	for _, o := range c.Nodes {
		if o == m {
			continue
		}
		c.Net.mu.RLock()
		blocked := c.Net.blocked[[2]int{m.Index, o.Index}] || c.Net.blocked[[2]int{o.Index, m.Index}]
		c.Net.mu.RUnlock()
		if blocked {
			m.gossip.Block(o.cfg.GossipAddr)
		}
	}
}

// Leader returns the member that is Raft leader (the one with the highest
// term if a deposed leader still believes it leads), or nil.
func (c *Cluster) Leader() *Member {
	var best *Member
	var bestTerm uint64
	for _, m := range c.Nodes {
		n := m.Node()
		if n == nil || n.Raft() == nil || n.Raft().State() != raft.Leader {
			continue
		}
		term := n.Raft().CurrentTerm()
		if best == nil || term > bestTerm {
			best, bestTerm = m, term
		}
	}
	return best
}

// WaitLeader waits for a leader and fails the test if none appears in
// bound: a cluster that never elects again must fail, not hang.
func (c *Cluster) WaitLeader(bound time.Duration) *Member {
	c.t.Helper()
	var l *Member
	if err := c.WaitFor(bound, func() error {
		if l = c.Leader(); l == nil {
			return fmt.Errorf("no leader")
		}
		return nil
	}); err != nil {
		c.t.Fatalf("no leader within %v after the faults were healed", bound)
	}
	return l
}

// WaitFor polls cond until it returns nil or the bound passes.
func (c *Cluster) WaitFor(bound time.Duration, cond func() error) error {
	deadline := time.Now().Add(bound)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// OperatorKey is the network operator's signing key (node 0's).
func (c *Cluster) OperatorKey() jose.JSONWebKey {
	k, err := loadKey(filepath.Join(c.Nodes[0].Dir, "keys", "signing.jwk"))
	if err != nil {
		c.t.Fatal(err)
	}
	return k
}

// Publish and Query clients for node i (plain HTTP, not through the Net:
// clients are outside the cluster).
func (c *Cluster) Publish(i int) registryv1connect.PublishServiceClient {
	return registryv1connect.NewPublishServiceClient(clientHTTP, c.Nodes[i].API())
}

func (c *Cluster) Query(i int) registryv1connect.QueryServiceClient {
	return registryv1connect.NewQueryServiceClient(clientHTTP, c.Nodes[i].API())
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	var wg sync.WaitGroup
	for i := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); c.Kill(i) }()
	}
	wg.Wait()
	for _, m := range c.Nodes {
		if m.heldGossip != nil { // never started: release its port
			_ = m.heldGossip.Shutdown()
			m.heldGossip = nil
		}
	}
}

type tlog struct {
	t      testing.TB
	prefix string
}

func (w *tlog) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // logging after the test ended
	w.t.Log(w.prefix + " " + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func splitHostPort(a string) (string, int) {
	u, _ := url.Parse("x://" + a)
	var p int
	fmt.Sscan(u.Port(), &p)
	return u.Hostname(), p
}
