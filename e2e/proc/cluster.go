package proc

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
)

// Operator is the organisation of a Cluster's first node (it bootstraps
// Raft and signs the genesis).
const Operator = "verbund-operator"

// voterOrgs are the organisations of the further voters.
var voterOrgs = []string{"091620000000", "097610000000", "095640000000", "091840000000"}

// Cluster is a network of voters run as processes on loopback: node 0
// bootstraps and registers the operator, the others join through its
// gossip address and are added to Raft by the leader. Nodes keep their
// data directory and addresses across kills and restarts.
type Cluster struct {
	t    testing.TB
	bin  string
	mu   sync.Mutex
	args [][]string
	proc []*Process
	dirs []string
	hc   *http.Client
}

// StartCluster starts voters (1..5) nodes of bin, each with extra flags
// appended, and waits until they are Ready.
func StartCluster(t testing.TB, bin string, voters int, extra ...string) *Cluster {
	t.Helper()
	return StartClusterGenesis(t, bin, voters, nil, extra...)
}

// StartClusterGenesis is StartCluster with genesisExtra appended to node
// 0's flags only (e.g. --sample-data, which only the genesis node takes).
func StartClusterGenesis(t testing.TB, bin string, voters int, genesisExtra []string, extra ...string) *Cluster {
	t.Helper()
	if voters < 1 || voters > len(voterOrgs)+1 {
		t.Fatalf("proc: %d voters (1..%d)", voters, len(voterOrgs)+1)
	}
	c := &Cluster{t: t, bin: bin, hc: &http.Client{Timeout: 10 * time.Second}}
	var seed string
	for i := range voters {
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("n%d", i))
		addrs := make([]string, 3)
		for k := range addrs {
			a, err := FreeAddr()
			if err != nil {
				t.Fatal(err)
			}
			addrs[k] = a
		}
		args := []string{"node", "--node-id", fmt.Sprintf("n%d", i), "--data-dir", dir, "--role", "voter",
			"--http-addr", addrs[0], "--raft-addr", addrs[1], "--gossip-addr", addrs[2],
			"--dead-server-grace", "1h", "--log-level", "warn",
			"--rate-limits", "off"} // every client and node calls from 127.0.0.1 without TLS
		if i == 0 {
			args = append(args, "--org", Operator, "--bootstrap", "--genesis")
			args = append(args, genesisExtra...)
			seed = addrs[2]
		} else {
			args = append(args, "--org", voterOrgs[i-1], "--join", seed)
		}
		args = append(args, extra...)
		c.args = append(c.args, args)
		c.dirs = append(c.dirs, dir)
		c.proc = append(c.proc, StartT(t, bin, args...))
	}
	t.Cleanup(func() {
		for i := range c.proc {
			c.Node(i).Kill()
		}
	})
	if err := c.WaitReady(60 * time.Second); err != nil {
		t.Fatalf("cluster not ready: %v", err)
	}
	return c
}

// Len is the number of nodes.
func (c *Cluster) Len() int { return len(c.args) }

// Node returns node i's current process.
func (c *Cluster) Node(i int) *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proc[i]
}

// API is node i's API base URL.
func (c *Cluster) API(i int) string { return c.Node(i).API }

// Dir is node i's data directory.
func (c *Cluster) Dir(i int) string { return c.dirs[i] }

// OperatorKey is the path of the operator's signing key (node 0's).
func (c *Cluster) OperatorKey() string { return filepath.Join(c.dirs[0], "keys", "signing.jwk") }

// Kill SIGKILLs node i.
func (c *Cluster) Kill(i int) { c.Node(i).Kill() }

// Pause SIGSTOPs node i; Resume SIGCONTs it.
func (c *Cluster) Pause(i int) error  { return c.Node(i).Pause() }
func (c *Cluster) Resume(i int) error { return c.Node(i).Resume() }

// Restart kills node i if it runs and starts it again from its data
// directory with the command line it was first started with, as an operator
// would (a node with existing Raft state never bootstraps again, and genesis
// finds the operator already registered).
func (c *Cluster) Restart(i int) error {
	old := c.Node(i)
	old.Kill()
	args := c.args[i]
	p, err := Start(c.bin, args...)
	if err != nil {
		return err
	}
	c.t.Cleanup(p.Kill)
	c.mu.Lock()
	c.proc[i] = p
	c.mu.Unlock()
	return nil
}

// RestartAll starts every node that is not running again, all at once, each
// with the command line it was first started with (as after a power cut or
// a stop of the whole network), and returns once each printed its API
// address.
func (c *Cluster) RestartAll() error {
	errs := make(chan error, c.Len())
	for i := range c.Len() {
		go func() {
			if !c.Node(i).Exited() {
				errs <- nil
				return
			}
			errs <- c.Restart(i)
		}()
	}
	var first error
	for range c.Len() {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// StopAll sends SIGTERM to every running node at once and waits for them
// to exit (bounded); KillAll SIGKILLs them.
func (c *Cluster) StopAll(bound time.Duration) error {
	errs := make(chan error, c.Len())
	for i := range c.Len() {
		go func() { errs <- c.Node(i).Terminate(bound) }()
	}
	var first error
	for range c.Len() {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// KillAll SIGKILLs every node.
func (c *Cluster) KillAll() {
	for i := range c.Len() {
		c.Kill(i)
	}
}

// Status asks node i for its status, bounded by timeout (a paused node
// does not answer).
func (c *Cluster) Status(i int, timeout time.Duration) (*nodev1.GetStatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := nodev1connect.NewNodeServiceClient(c.hc, c.API(i)).GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// Leader returns the index of a node that reports itself Raft leader
// (skipping paused or dead nodes), or an error.
func (c *Cluster) Leader(skip ...int) (int, error) {
	var errs []error
	for i := range c.args {
		if contains(skip, i) || c.Node(i).Exited() || c.Node(i).Paused() {
			continue
		}
		st, err := c.Status(i, time.Second)
		if err != nil {
			errs = append(errs, fmt.Errorf("n%d: %w", i, err))
			continue
		}
		if st.GetRaftState() == "Leader" {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no leader among the running nodes %v", errs)
}

// WaitReady waits until a running node leads, the Raft configuration holds
// every node as a voter, and every running node has applied the leader's
// commit index as it was when checked.
func (c *Cluster) WaitReady(bound time.Duration) error {
	return WaitUntil(bound, func() error {
		l, err := c.Leader()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ms, err := nodev1connect.NewClusterServiceClient(c.hc, c.API(l)).ListMembers(ctx, connect.NewRequest(&nodev1.ListMembersRequest{}))
		if err != nil {
			return err
		}
		voters := 0
		for _, m := range ms.Msg.GetMembers() {
			if m.GetRaftSuffrage() == "Voter" {
				voters++
			}
		}
		if voters != c.Len() {
			return fmt.Errorf("%d voters in Raft, want %d", voters, c.Len())
		}
		ls, err := c.Status(l, 2*time.Second)
		if err != nil {
			return err
		}
		for i := range c.args {
			if c.Node(i).Exited() || c.Node(i).Paused() {
				continue
			}
			st, err := c.Status(i, 2*time.Second)
			if err != nil {
				return fmt.Errorf("n%d: %w", i, err)
			}
			if st.GetAppliedIndex() < ls.GetCommitIndex() && st.GetCommitIndex() < ls.GetCommitIndex() {
				return fmt.Errorf("n%d at %d, leader committed %d", i, st.GetAppliedIndex(), ls.GetCommitIndex())
			}
		}
		return nil
	})
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Args is the command line node i was first started with (a copy).
func (c *Cluster) Args(i int) []string { return append([]string(nil), c.args[i]...) }
