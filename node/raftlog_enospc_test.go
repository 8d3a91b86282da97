package node_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node/nodetest"
	"github.com/verbund/verbund/node/raftlog/faultfs"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// A Raft log disk that fills between two measurements of the disk guard:
// the guard always measures plenty of free space (Options.DiskFree), but the
// log's segment writes or syncs fail with ENOSPC (faultfs.Inject). The
// stable file (term, vote) in the same directory is left alone on purpose:
// when its write fails too, as on a real full disk, hashicorp/raft v1.8.0
// panics at the node's next term change (setCurrentTerm: "failed to save
// current term"), which takes the whole process down. That is an open
// finding, not covered here: these tests would crash the test binary.

// plentyFree is every node's free space as the disk guard measures it.
func plentyFree(int, string) (uint64, error) { return plenty, nil }

// segFault returns an injection that fails op on Raft log segment files
// with ENOSPC while on is set, counting the failures in hits.
func segFault(op faultfs.Op, on *atomic.Bool, hits *atomic.Int64) func(faultfs.Op, string) error {
	return func(o faultfs.Op, name string) error {
		if o == op && on.Load() && strings.HasPrefix(filepath.Base(name), "seg-") {
			hits.Add(1)
			return syscall.ENOSPC
		}
		return nil
	}
}

// enospcWriter publishes new organisations through the current leader (or,
// with none known, node 0) until stopped, and keeps those acknowledged.
// Any other outcome is counted by its Connect code: none is acknowledged.
type enospcWriter struct {
	t      *testing.T
	c      *nodetest.Cluster
	prefix string
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	acked  []string
	errs   map[string]int
	sample map[string]string // one message per code
}

func startENOSPCWriter(t *testing.T, c *nodetest.Cluster, prefix string) *enospcWriter {
	w := &enospcWriter{t: t, c: c, prefix: prefix, stop: make(chan struct{}), errs: map[string]int{}, sample: map[string]string{}}
	key := c.OperatorKey()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for k := 0; ; k++ {
			select {
			case <-w.stop:
				return
			default:
			}
			via := 0
			if l := c.Leader(); l != nil {
				via = l.Index
			}
			id := fmt.Sprintf("%s%08d", prefix, k)
			_, err := publishVia(t, c, via, orgCmd(t, key, id, "enospc "+id))
			w.mu.Lock()
			if err == nil {
				w.acked = append(w.acked, id)
			} else {
				code := connect.CodeOf(err).String()
				w.errs[code]++
				if _, ok := w.sample[code]; !ok {
					w.sample[code] = err.Error()
				}
			}
			w.mu.Unlock()
			if err != nil {
				time.Sleep(20 * time.Millisecond)
			} else {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	return w
}

func (w *enospcWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// waitAcked waits until n more writes than now are acknowledged.
func (w *enospcWriter) waitAcked(what string, n int, bound time.Duration) {
	w.t.Helper()
	base := w.count()
	if err := w.c.WaitFor(bound, func() error {
		if got := w.count() - base; got < n {
			return fmt.Errorf("%d of %d writes acknowledged", got, n)
		}
		return nil
	}); err != nil {
		w.t.Fatalf("%s: %v", what, err)
	}
}

func (w *enospcWriter) finish() []string {
	close(w.stop)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	for code, n := range w.errs {
		w.t.Logf("writes not acknowledged: %d x %s (e.g. %s)", n, code, w.sample[code])
	}
	return append([]string(nil), w.acked...)
}

// checkAllAcked waits until every running node has caught up with the
// leader, reads every acknowledged write linearizably through every node,
// and checks that all nodes hold the same state.
func checkAllAcked(t *testing.T, c *nodetest.Cluster, acked []string) {
	t.Helper()
	if err := c.WaitCaughtUp(15 * time.Second); err != nil {
		t.Fatalf("not caught up: %v", err)
	}
	lin := &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}
	for i := range c.Nodes {
		// A node just restarted learns the leader's API address by gossip,
		// a moment after Raft: until then it answers unavailable.
		if err := c.WaitFor(10*time.Second, func() error {
			_, err := readOrg(c, i, acked[0], lin)
			if connect.CodeOf(err) == connect.CodeUnavailable {
				return err
			}
			return nil
		}); err != nil {
			t.Fatalf("node %d answers no linearizable read: %v", i, err)
		}
		for _, id := range acked {
			res, err := readOrg(c, i, id, lin)
			if err == nil && !res.GetRead().GetLinearizable() {
				err = errors.New("answered, but not linearizable")
			}
			if err != nil {
				t.Fatalf("acknowledged write %s: linearizable read on node %d: %v", id, i, err)
			}
		}
	}
	st := c.EnsureSame(t)
	t.Logf("%d acknowledged writes readable linearizably on %d nodes, same state at index %d", len(acked), st.Servers, st.Index)
}

// notDown fails the test if node i is down or its Raft has shut down.
func notDown(t *testing.T, c *nodetest.Cluster, i int) {
	t.Helper()
	n := c.Nodes[i].Node()
	if n == nil {
		t.Fatalf("node %d is down", i)
	}
	if st := n.Raft().State(); st == raft.Shutdown {
		t.Fatalf("node %d: Raft shut down", i)
	}
}

// TestRaftLogENOSPCFollower: three voters, a client writing through the
// leader. A follower's Raft log segment writes fail with ENOSPC while the
// disk guard sees plenty of space. The follower neither crashes nor leaves
// the cluster, its log stops advancing, and the leader and the third voter
// keep committing. Once the writes succeed again the follower catches up
// without a restart (raftlog cuts a failed write off and stays usable),
// and every acknowledged write is readable linearizably on every node.
func TestRaftLogENOSPCFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Seed: 21, PowerLoss: true, DiskFree: plentyFree})
	l := c.WaitLeader(10 * time.Second)
	f := (l.Index + 1) % 3
	var on atomic.Bool
	var hits atomic.Int64
	c.LogFS(f).Inject(segFault(faultfs.OpWrite, &on, &hits))

	w := startENOSPCWriter(t, c, "0921")
	w.waitAcked("before the fault", 10, 10*time.Second)

	on.Store(true)
	if err := c.WaitFor(5*time.Second, func() error {
		if hits.Load() == 0 {
			return errors.New("no segment write of the follower failed yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	last := c.Nodes[f].Node().Raft().LastIndex()
	w.waitAcked("with the follower's log writes failing", 30, 10*time.Second)
	if got := c.Nodes[f].Node().Raft().LastIndex(); got != last {
		t.Fatalf("follower n%d appended with every segment write failing: last index %d -> %d", f, last, got)
	}
	notDown(t, c, f)
	if st := c.Nodes[f].Node().Raft().State(); st == raft.Leader {
		t.Fatalf("follower n%d with failing writes became leader", f)
	}
	t.Logf("follower n%d: %d segment writes failed with ENOSPC, log held at %d", f, hits.Load(), last)

	on.Store(false)
	w.waitAcked("after the fault", 10, 10*time.Second)
	acked := w.finish()
	checkAllAcked(t, c, acked)
}

// TestRaftLogSyncFailureFollower: a follower's Raft log syncs fail (ENOSPC
// from fdatasync, as on a thin-provisioned or network volume). raftlog
// then refuses every later write with ErrFailed, also after the syncs
// succeed again: the follower does not crash but stays behind while the
// others commit, until it is restarted (process restart, page cache kept);
// then it catches up with every acknowledged write.
func TestRaftLogSyncFailureFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Seed: 22, PowerLoss: true, DiskFree: plentyFree})
	l := c.WaitLeader(10 * time.Second)
	f := (l.Index + 1) % 3
	var on atomic.Bool
	var hits atomic.Int64
	c.LogFS(f).Inject(segFault(faultfs.OpSync, &on, &hits))

	w := startENOSPCWriter(t, c, "0922")
	w.waitAcked("before the fault", 10, 10*time.Second)

	on.Store(true)
	if err := c.WaitFor(5*time.Second, func() error {
		if hits.Load() == 0 {
			return errors.New("no segment sync of the follower failed yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	on.Store(false) // one failed sync is enough: the store is failed now
	last := c.Nodes[f].Node().Raft().LastIndex()
	w.waitAcked("with the follower's log failed", 30, 10*time.Second)
	notDown(t, c, f)
	if got := c.Nodes[f].Node().Raft().LastIndex(); got != last {
		t.Fatalf("follower n%d appended after a failed sync (store should refuse with ErrFailed): last index %d -> %d", f, last, got)
	}
	leaderLast := c.WaitLeader(5 * time.Second).Node().Raft().LastIndex()
	t.Logf("follower n%d: %d sync(s) failed; syncs work again, but its log stays at %d (leader at %d): sticky ErrFailed, no self-recovery",
		f, hits.Load(), last, leaderLast)

	c.Restart(f)
	w.waitAcked("after the follower's restart", 10, 10*time.Second)
	acked := w.finish()
	checkAllAcked(t, c, acked)
}

// TestRaftLogENOSPCLeader: the leader's Raft log segment writes fail with
// ENOSPC. hashicorp/raft answers the pending writes with the error and
// steps down; the leader does not crash. Another voter takes over and
// commits; no write is acknowledged that the cluster does not hold. Once
// the old leader's writes succeed again it catches up without a restart.
func TestRaftLogENOSPCLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Seed: 23, PowerLoss: true, DiskFree: plentyFree})
	l := c.WaitLeader(10 * time.Second)
	var on atomic.Bool
	var hits atomic.Int64
	c.LogFS(l.Index).Inject(segFault(faultfs.OpWrite, &on, &hits))

	w := startENOSPCWriter(t, c, "0923")
	w.waitAcked("before the fault", 10, 10*time.Second)

	on.Store(true)
	if err := c.WaitFor(10*time.Second, func() error {
		if hits.Load() == 0 {
			return errors.New("no segment write of the leader failed yet")
		}
		if nl := c.Leader(); nl == nil {
			return errors.New("no leader")
		} else if nl == l {
			return fmt.Errorf("n%d, whose log writes fail, is still leader", l.Index)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	notDown(t, c, l.Index)
	w.waitAcked("with the old leader's log writes failing", 30, 10*time.Second)
	t.Logf("leader n%d: %d segment writes failed with ENOSPC; another leader took over", l.Index, hits.Load())

	on.Store(false)
	w.waitAcked("after the fault", 10, 10*time.Second)
	acked := w.finish()
	checkAllAcked(t, c, acked)
}

// TestRaftLogSyncFailureLeader: the leader's Raft log sync fails once. Its
// store refuses every later write with ErrFailed: the pending write is
// answered with the error, the leader steps down without crashing, and
// another voter takes over and commits. The old leader stays behind (also
// after syncs work again) until it is restarted; then it catches up with
// every acknowledged write.
func TestRaftLogSyncFailureLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Seed: 24, PowerLoss: true, DiskFree: plentyFree})
	l := c.WaitLeader(10 * time.Second)
	var on atomic.Bool
	var hits atomic.Int64
	c.LogFS(l.Index).Inject(segFault(faultfs.OpSync, &on, &hits))

	w := startENOSPCWriter(t, c, "0924")
	w.waitAcked("before the fault", 10, 10*time.Second)

	on.Store(true)
	if err := c.WaitFor(10*time.Second, func() error {
		if hits.Load() == 0 {
			return errors.New("no segment sync of the leader failed yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	on.Store(false) // one failed sync is enough: the store is failed now
	last := c.Nodes[l.Index].Node().Raft().LastIndex()
	if err := c.WaitFor(10*time.Second, func() error {
		if nl := c.Leader(); nl == nil {
			return errors.New("no leader")
		} else if nl == l {
			return fmt.Errorf("n%d, whose log failed, is still leader", l.Index)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	w.waitAcked("with the old leader's log failed", 30, 10*time.Second)
	notDown(t, c, l.Index)
	if got := c.Nodes[l.Index].Node().Raft().LastIndex(); got != last {
		t.Fatalf("n%d appended after a failed sync (store should refuse with ErrFailed): last index %d -> %d", l.Index, last, got)
	}
	t.Logf("leader n%d: %d sync(s) failed; it stepped down and its log stays at %d (leader at %d) until restarted",
		l.Index, hits.Load(), last, c.WaitLeader(5*time.Second).Node().Raft().LastIndex())

	c.Restart(l.Index)
	w.waitAcked("after the old leader's restart", 10, 10*time.Second)
	acked := w.finish()
	checkAllAcked(t, c, acked)
}
