package node_test

// Power loss and a Raft log that lies (issue 9). The Raft logs live on
// faultfs (nodetest.Options.PowerLoss): a power cut keeps only what was
// synced. The tests here:
//
//   - TestPowerLoss: the Jepsen-style run (porcupine, lost writes, EnsureSame)
//     with power-cut nemesis kinds: a follower voter, the leader, a non-voter
//     (replica, standby or member: a member has no Raft log), every node at
//     once; the registry state goes back to an older copy on cut servers
//     (its badger writes are not synced by design). TestPowerLossSoak is
//     the long version (make soak).
//   - TestPowerLossControl: the same cuts with the Raft log's syncs
//     skipped must be caught, on every run.
//   - TestRaftLogCorruptionRecovery: a flipped byte in a follower's log:
//     refused start naming file, offset and index; RecoverRaftLog; the node
//     catches up and every acknowledged write is there.
//   - TestSingleVoterCorruptLogRefused: the only voter's log is corrupt:
//     refused (recovery there is a snapshot restore).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/node"
	"github.com/verbund/verbund/node/nodetest"
	"github.com/verbund/verbund/node/raftlog"
	"github.com/verbund/verbund/node/raftlog/faultfs"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

var powerCutKinds = []string{"power-cut-follower", "power-cut-leader", "power-cut-nonvoter", "power-cut-all"}

var tearNames = []string{faultfs.TearNone: "tear-none", faultfs.TearPrefix: "tear-prefix", faultfs.TearSectors: "tear-sectors"}

// powerPhase is the nemesis for the power-cut kinds (false: not one).
// The victims are cut at once, stay down for a moment, and must start
// again: a refused start fails the run.
func (j *jepsen) powerPhase(rng *rand.Rand, kind string) bool {
	c := j.c
	var victims []int
	switch kind {
	case "power-cut-follower", "power-cut-leader", "power-cut-nonvoter":
		voters, _ := j.mustRaftConfig()
		l := c.WaitLeader(10 * time.Second)
		switch kind {
		case "power-cut-leader":
			victims = []int{l.Index}
		case "power-cut-follower":
			var fs []int
			for _, i := range voters {
				if i != l.Index {
					fs = append(fs, i)
				}
			}
			victims = []int{fs[rng.IntN(len(fs))]}
		default:
			others := j.others(voters)
			victims = []int{others[rng.IntN(len(others))]}
		}
	case "power-cut-all":
		for i := range c.Nodes {
			victims = append(victims, i)
		}
	default:
		return false
	}
	tear := faultfs.Tear(rng.IntN(3))
	d := j.dur(rng, 100*time.Millisecond, 1200*time.Millisecond)
	j.logf("power cut %s (%s), down for %v", j.ids(victims), tearNames[tear], d)
	before := c.StateRollbacks()
	for _, i := range victims {
		c.CutPower(i, rng, tear)
	}
	j.sleep(d)
	for _, i := range victims {
		if err := c.PowerOn(i); err != nil {
			j.t.Fatalf("power cut: %s refused to start after a power cut with synced logs: %v", c.Nodes[i].ID, err)
		}
		j.event("power-cut-" + c.Nodes[i].Role)
	}
	if c.StateRollbacks() > before {
		j.event("state-rolled-back")
	}
	return true
}

// TestPowerLoss runs the Jepsen-style suite with power cuts (see the file
// comment): 0 acknowledged writes lost, linearizable, every node the same.
func TestPowerLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	seed := envUint(t, "VERBUND_JEPSEN_SEED", 1)
	kinds := slices.Concat(powerCutKinds, powerCutKinds) // each twice: a node cut again goes back to its previous image
	r := runJepsen(t, jepsenOpts{
		Seed: seed, Clients: 6, Keys: 4, Think: 60 * time.Millisecond, RetryFor: 4 * time.Second,
		CheckTimeout: 2 * time.Minute, Grace: time.Hour, Kinds: kinds, PowerLoss: true,
	})
	t.Logf("summary: %s", r)
	for _, ev := range []string{"power-cut-voter", "power-cut-member", "state-rolled-back"} {
		if r.Events[ev] == 0 {
			t.Errorf("no %s during the run", ev)
		}
	}
}

// TestPowerLossSoak is TestPowerLoss for several seeds, minutes each, the
// power cuts mixed with every other nemesis kind. Only with VERBUND_SOAK=1
// (make soak); VERBUND_SOAK_SEEDS (default 3), VERBUND_SOAK_DURATION
// (default 2m), VERBUND_SOAK_SEED.
func TestPowerLossSoak(t *testing.T) {
	seeds, dur, base := soakParams(t)
	var summaries []string
	for s := range seeds {
		seed := base + s
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			// Power cuts weigh double against each other kind.
			kinds := slices.Concat(powerCutKinds, powerCutKinds, nemesisKinds)
			kinds = slices.DeleteFunc(kinds, func(k string) bool { return k == "replace-voter" }) // Grace is an hour here
			r := runJepsen(t, jepsenOpts{
				Seed: seed, Clients: 6, Keys: 5, Duration: dur, Think: 40 * time.Millisecond, RetryFor: 5 * time.Second,
				CheckTimeout: 10 * time.Minute, Grace: time.Hour, Kinds: kinds, PowerLoss: true,
			})
			fail := ""
			if t.Failed() {
				fail = " FAILED"
			}
			summaries = append(summaries, r.String()+fail)
			t.Logf("summary: %s", r)
		})
	}
	for _, s := range summaries {
		t.Logf("power-loss soak%s", "\n"+s)
	}
}

// TestPowerLossControl is the control run: the Raft logs' syncs are
// skipped, so a power cut loses what the nodes acknowledged. Every run must
// be caught: a follower, the leader, then every voter at once; each cut
// node must refuse to start with ErrRaftLogBehind (the state applied
// entries the log no longer holds), and the refused followers recover with
// RecoverRaftLog before the next run.
func TestPowerLossControl(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Members: 1, PowerLoss: true, RaftLogNoSync: true})
	w := startAckWriter(t, c, 3)
	rng := rand.New(rand.NewPCG(9, 9))
	runs, caught := 0, 0
	cut := func(what string, victims []int) {
		runs++
		w.waitAcked(t, 20)
		tear := faultfs.Tear(rng.IntN(3))
		for _, i := range victims {
			c.CutPower(i, rng, tear)
		}
		refused := 0
		for _, i := range victims {
			err := c.PowerOn(i)
			if errors.Is(err, node.ErrRaftLogBehind) {
				refused++
				t.Logf("control run %d (%s, %s): %s refused: %v", runs, what, tearNames[tear], c.Nodes[i].ID, err)
				continue
			}
			t.Errorf("control run %d (%s, %s): %s started on a log that lost its unsynced entries (err %v)", runs, what, tearNames[tear], c.Nodes[i].ID, err)
		}
		if refused != len(victims) {
			t.Fatalf("control run %d (%s) not caught", runs, what) // the nodes run on lost logs: stop here
		}
		caught++
	}
	recoverNodes := func(victims []int) {
		for _, i := range victims {
			if _, err := node.RecoverRaftLog(c.Nodes[i].Dir, c.LogFS(i), time.Now()); err != nil {
				t.Fatal(err)
			}
			if err := c.TryRestart(i); err != nil {
				t.Fatalf("restart %s after recovery: %v", c.Nodes[i].ID, err)
			}
		}
		if err := c.WaitCaughtUp(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	l := c.WaitLeader(10 * time.Second)
	f := (l.Index + 1) % 3
	cut("a follower voter", []int{f})
	recoverNodes([]int{f})
	l = c.WaitLeader(10 * time.Second)
	cut("the leader", []int{l.Index})
	recoverNodes([]int{l.Index})
	cut("every voter", []int{0, 1, 2})
	w.stop()
	t.Logf("control caught %d/%d runs (%d writes acknowledged before the last run)", caught, runs, len(w.acked()))
	if caught != runs {
		t.Fatalf("control caught only %d/%d runs", caught, runs)
	}
}

// TestRaftLogCorruptionRecovery: 3 voters and a member take acknowledged
// writes; a follower is stopped and one byte in the middle of its Raft log
// flipped. It must refuse to start, naming the file, the offset and the
// index; after RecoverRaftLog it starts with an empty log (and state),
// catches up, and every acknowledged write is on every node.
func TestRaftLogCorruptionRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Members: 1, PowerLoss: true})
	w := startAckWriter(t, c, 3)
	w.waitAcked(t, 60)
	l := c.WaitLeader(10 * time.Second)
	f := (l.Index + 1) % 3
	c.Kill(f)
	w.waitAcked(t, len(w.acked())+30) // the others go on without it
	file, off := flipMiddle(t, c.LogFS(f), filepath.Join(c.Nodes[f].Dir, "raft", "wal"))

	err := c.TryRestart(f)
	var ce *raftlog.CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, raftlog.ErrCorrupt) {
		t.Fatalf("start on a log with a flipped byte at %s:%d: err %v, want a *raftlog.CorruptError", file, off, err)
	}
	t.Logf("refused start: %v", err)
	if ce.File != file || ce.Offset > off || ce.Index == 0 {
		t.Errorf("refusal names %s offset %d index %d; the byte flipped is %s offset %d", ce.File, ce.Offset, ce.Index, file, off)
	}
	if want := "verbund recover raft-log --data " + c.Nodes[f].Dir; !strings.Contains(err.Error(), want) {
		t.Errorf("refusal does not name the recovery %q: %v", want, err)
	}

	rec, err := node.RecoverRaftLog(c.Nodes[f].Dir, c.LogFS(f), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Moved) == 0 || rec.Term == 0 || rec.StateDir == "" {
		t.Fatalf("recovery moved %v and the state to %q, kept term %d", rec.Moved, rec.StateDir, rec.Term)
	}
	if err := c.TryRestart(f); err != nil {
		t.Fatalf("start after recovery: %v", err)
	}
	w.waitAcked(t, len(w.acked())+30)
	acked := w.stop()
	checkAcked(t, c, acked)
	t.Logf("%d writes acknowledged, 0 lost; %s recovered (%d segment(s) moved aside, term %d kept)", len(acked), c.Nodes[f].ID, len(rec.Moved), rec.Term)
}

// TestSingleVoterCorruptLogRefused: a one-voter cluster whose only log is
// corrupt refuses to start (its recovery is a snapshot restore).
func TestSingleVoterCorruptLogRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 1, PowerLoss: true})
	w := startAckWriter(t, c, 2)
	w.waitAcked(t, 40)
	w.stop()
	c.Kill(0)
	file, off := flipMiddle(t, c.LogFS(0), filepath.Join(c.Nodes[0].Dir, "raft", "wal"))
	err := c.TryRestart(0)
	if !errors.Is(err, raftlog.ErrCorrupt) {
		t.Fatalf("start on a log with a flipped byte at %s:%d: err %v, want ErrCorrupt", file, off, err)
	}
	if !strings.Contains(err.Error(), "single-node cluster can only go back to a snapshot") {
		t.Errorf("refusal does not say what a single node can do: %v", err)
	}
	t.Logf("refused start: %v", err)
}

// flipMiddle flips one byte in the middle of the largest segment in dir.
func flipMiddle(t *testing.T, fsys *faultfs.FS, dir string) (string, int64) {
	t.Helper()
	names, err := fsys.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var file string
	var size int64
	for _, n := range names {
		if !strings.HasPrefix(n, "seg-") {
			continue
		}
		f, err := fsys.OpenFile(filepath.Join(dir, n), os.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		if s, _ := f.Size(); s > size {
			file, size = filepath.Join(dir, n), s
		}
		f.Close()
	}
	if file == "" {
		t.Fatalf("no segment in %s: %v", dir, names)
	}
	f, err := fsys.OpenFile(file, os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off := size / 2
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return file, off
}

// ackWriter publishes new organisations (one key each, never changed)
// through random nodes and keeps the ids of the acknowledged ones.
type ackWriter struct {
	c    *nodetest.Cluster
	key  jose.JSONWebKey
	done atomic.Bool
	wg   sync.WaitGroup

	mu  sync.Mutex
	ids []string
}

func startAckWriter(t *testing.T, c *nodetest.Cluster, clients int) *ackWriter {
	w := &ackWriter{c: c, key: c.OperatorKey()}
	for id := range clients {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(id), 77))
			for n := 0; !w.done.Load(); n++ {
				org := fmt.Sprintf("pl-%d-%d", id, n)
				m := &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
					Id: org, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: "Power " + org,
				}}}
				jws, err := registry.SignCommand(registry.NewCommand("test-operator", m), w.key)
				if err != nil {
					t.Error(err)
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				res, err := c.Publish(rng.IntN(len(c.Nodes))).Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: []string{jws}}))
				cancel()
				if err == nil && len(res.Msg.GetResults()) == 1 && res.Msg.GetResults()[0].GetErrorCode() == "" {
					w.mu.Lock()
					w.ids = append(w.ids, org)
					w.mu.Unlock()
				}
				time.Sleep(time.Duration(5+rng.IntN(20)) * time.Millisecond)
			}
		}()
	}
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *ackWriter) acked() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.ids)
}

// waitAcked waits until n writes are acknowledged in all.
func (w *ackWriter) waitAcked(t *testing.T, n int) {
	t.Helper()
	if err := w.c.WaitFor(30*time.Second, func() error {
		if got := len(w.acked()); got < n {
			return fmt.Errorf("%d writes acknowledged, waiting for %d", got, n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func (w *ackWriter) stop() []string {
	w.done.Store(true)
	w.wg.Wait()
	return w.acked()
}

// checkAcked requires every acknowledged organisation to be readable
// linearizably (through a rotating node) and present in every node's local
// state, and every node to hold the same registry (EnsureSame).
func checkAcked(t *testing.T, c *nodetest.Cluster, acked []string) {
	t.Helper()
	if err := c.WaitCaughtUp(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	lost := 0
	for k, id := range acked {
		i := k % len(c.Nodes)
		if _, err := readOrg(c, i, id, &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}); err != nil {
			lost++
			t.Errorf("acknowledged %s: linearizable read through %s: %v", id, c.Nodes[i].ID, err)
		}
		for _, m := range c.Nodes {
			if _, _, err := m.Node().Reader().Organisation(id); err != nil {
				lost++
				t.Errorf("acknowledged %s missing on %s: %v", id, m.ID, err)
			}
		}
	}
	c.EnsureSame(t)
	t.Logf("%d acknowledged writes checked on %d nodes: %d missing", len(acked), len(c.Nodes), lost)
}
