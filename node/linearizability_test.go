package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/anishathalye/porcupine"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node/nodetest"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Helpers to write histories by hand.
func hRead(c int, key string, call, ret int64, value string, rev uint64) porcupine.Operation {
	out := nodetest.RegOutput{Found: value != "", Value: value, Rev: rev}
	return porcupine.Operation{ClientId: c, Input: nodetest.RegInput{Kind: nodetest.OpRead, Key: key}, Call: call, Output: out, Return: ret}
}

func hPut(c int, key, value string, call, ret int64, o nodetest.Outcome, rev uint64) porcupine.Operation {
	return porcupine.Operation{ClientId: c, Input: nodetest.RegInput{Kind: nodetest.OpPut, Key: key, Value: value}, Call: call,
		Output: nodetest.RegOutput{Outcome: o, Rev: rev}, Return: ret}
}

// hCAS: expect "" means the precondition "absent".
func hCAS(c int, key, expect string, expectRev uint64, value string, call, ret int64, o nodetest.Outcome, rev uint64) porcupine.Operation {
	in := nodetest.RegInput{Kind: nodetest.OpCAS, Key: key, Value: value, ExpectValue: expect, ExpectRev: expectRev, Absent: expect == ""}
	return porcupine.Operation{ClientId: c, Input: in, Call: call, Output: nodetest.RegOutput{Outcome: o, Rev: rev}, Return: ret}
}

func analyze(ops []porcupine.Operation) *nodetest.Analysis {
	h := nodetest.NewHistory()
	for _, op := range ops {
		h.Record(op.ClientId, op.Input.(nodetest.RegInput), op.Call, op.Output.(nodetest.RegOutput), op.Return, nodetest.OpMeta{})
	}
	return h.Analyze()
}

// TestCheckerModel shows that the checker and the model accept correct
// histories, including indeterminate writes, and reject stale reads, lost
// writes, wrong conditional-write outcomes and revisions that go backwards.
func TestCheckerModel(t *testing.T) {
	const (
		OK   = nodetest.OutOK
		PF   = nodetest.OutPreconditionFailed
		Unk  = nodetest.OutUnknown
		Refd = nodetest.OutRefused
	)
	for _, tc := range []struct {
		name     string
		ops      []porcupine.Operation
		want     porcupine.CheckResult
		problems bool // Analyze finds problems without the checker
	}{
		{"sequential", []porcupine.Operation{
			hRead(0, "k", 0, 1, "", 0),
			hPut(0, "k", "a", 2, 3, OK, 10),
			hRead(1, "k", 4, 5, "a", 10),
			hCAS(1, "k", "a", 10, "b", 6, 7, OK, 12),
			hRead(0, "k", 8, 9, "b", 12),
		}, porcupine.Ok, false},
		{"concurrent read may see either value", []porcupine.Operation{
			hPut(0, "k", "a", 0, 1, OK, 10),
			hPut(0, "k", "b", 2, 10, OK, 12),
			hRead(1, "k", 3, 4, "b", 12),
			hRead(2, "k", 3, 11, "b", 12),
		}, porcupine.Ok, false},
		{"stale read after a newer write completed", []porcupine.Operation{
			hPut(0, "k", "a", 0, 10, OK, 10),
			hPut(0, "k", "b", 20, 30, OK, 20),
			hRead(1, "k", 40, 50, "a", 10),
		}, porcupine.Illegal, true},
		{"stale read: absent after an acknowledged write", []porcupine.Operation{
			hPut(0, "k", "a", 0, 10, OK, 10),
			hRead(1, "k", 40, 50, "", 0),
		}, porcupine.Illegal, true},
		{"reads going back in time", []porcupine.Operation{
			hPut(0, "k", "a", 0, 10, OK, 10),
			hPut(0, "k", "b", 20, 100, Unk, 0),
			hRead(1, "k", 30, 40, "b", 20),
			hRead(2, "k", 50, 60, "a", 10),
		}, porcupine.Illegal, true},
		{"indeterminate write never seen", []porcupine.Operation{
			hPut(0, "k", "a", 0, 10, OK, 10),
			hPut(1, "k", "x", 20, 30, Unk, 0),
			hRead(2, "k", 40, 50, "a", 10),
			hPut(0, "k", "b", 60, 70, OK, 15),
			hRead(2, "k", 80, 90, "b", 15),
		}, porcupine.Ok, false},
		{"indeterminate write seen later", []porcupine.Operation{
			hPut(0, "k", "a", 0, 10, OK, 10),
			hPut(1, "k", "x", 20, 30, Unk, 0),
			hRead(2, "k", 40, 50, "a", 10),
			hRead(2, "k", 60, 70, "x", 14),
		}, porcupine.Ok, false},
		{"indeterminate write seen, then overwritten, then seen again", []porcupine.Operation{
			hPut(1, "k", "x", 0, 5, Unk, 0),
			hRead(2, "k", 10, 20, "x", 14),
			hPut(0, "k", "b", 30, 40, OK, 16),
			hRead(2, "k", 50, 60, "x", 14),
		}, porcupine.Illegal, true},
		{"refused write seen", []porcupine.Operation{
			hPut(1, "k", "x", 0, 5, Refd, 0),
			hRead(2, "k", 10, 20, "x", 14),
		}, porcupine.Illegal, true},
		{"cas succeeded although the value had changed", []porcupine.Operation{
			hPut(0, "k", "a", 0, 10, OK, 10),
			hPut(0, "k", "b", 20, 30, OK, 12),
			hCAS(1, "k", "a", 10, "c", 40, 50, OK, 14),
		}, porcupine.Illegal, false},
		{"cas refused although its precondition held", []porcupine.Operation{
			hPut(0, "k", "a", 0, 10, OK, 10),
			hCAS(1, "k", "a", 10, "c", 40, 50, PF, 0),
		}, porcupine.Illegal, false},
		{"cas refused, concurrent write explains it", []porcupine.Operation{
			hPut(0, "k", "a", 0, 10, OK, 10),
			hCAS(1, "k", "a", 10, "c", 40, 50, PF, 0),
			hPut(2, "k", "b", 30, 60, Unk, 0),
		}, porcupine.Ok, false},
		{"cas absent twice, both acknowledged", []porcupine.Operation{
			hCAS(0, "k", "", 0, "a", 0, 10, OK, 10),
			hCAS(1, "k", "", 0, "b", 5, 15, OK, 11),
		}, porcupine.Illegal, false},
		{"cas absent twice, one refused", []porcupine.Operation{
			hCAS(0, "k", "", 0, "a", 0, 10, OK, 10),
			hCAS(1, "k", "", 0, "b", 5, 15, PF, 0),
			hRead(1, "k", 20, 30, "a", 10),
		}, porcupine.Ok, false},
		{"indeterminate cas applies only if its precondition held", []porcupine.Operation{
			hPut(0, "k", "a", 0, 10, OK, 10),
			hPut(0, "k", "b", 20, 30, OK, 12),
			hCAS(1, "k", "a", 10, "c", 40, 50, Unk, 0),
			hRead(2, "k", 60, 70, "c", 14),
		}, porcupine.Illegal, false},
		{"revisions must grow in real-time order", []porcupine.Operation{
			hPut(0, "k", "a", 0, 10, OK, 20),
			hPut(0, "k", "b", 20, 30, OK, 10),
			hRead(1, "k", 40, 50, "b", 10),
		}, porcupine.Illegal, true},
		{"two writes in one Raft entry share its index as revision", []porcupine.Operation{
			hPut(0, "k", "a", 0, 10, OK, 20),
			hPut(1, "k", "b", 0, 10, OK, 20),
			hRead(2, "k", 20, 30, "b", 20),
		}, porcupine.Ok, false},
		{"cas on a shared revision succeeds against the other value", []porcupine.Operation{
			hPut(0, "k", "a", 0, 10, OK, 20),
			hPut(1, "k", "b", 0, 10, OK, 20),
			hRead(2, "k", 20, 30, "b", 20),
			hCAS(0, "k", "a", 20, "c", 40, 50, OK, 21),
		}, porcupine.Illegal, false},
		{"read with a revision its write did not get", []porcupine.Operation{
			hPut(0, "k", "a", 0, 10, OK, 10),
			hRead(1, "k", 20, 30, "a", 11),
		}, porcupine.Illegal, true},
		{"keys are independent", []porcupine.Operation{
			hPut(0, "k", "a", 0, 10, OK, 10),
			hPut(0, "j", "b", 20, 30, OK, 12),
			hRead(1, "k", 40, 50, "a", 10),
			hRead(1, "j", 40, 50, "b", 12),
		}, porcupine.Ok, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := analyze(tc.ops)
			if got := (len(a.Problems) > 0); got != tc.problems {
				t.Errorf("direct problems: %v, want some: %v", a.Problems, tc.problems)
			}
			r := a.Check(10*time.Second, t.TempDir())
			if r.Verdict != tc.want {
				t.Fatalf("checker: %s, want %s", r.Verdict, tc.want)
			}
		})
	}
}

func TestCheckerLostWrites(t *testing.T) {
	a := analyze([]porcupine.Operation{
		hPut(0, "k", "a", 0, 10, nodetest.OutOK, 10),
		hPut(0, "k", "b", 20, 30, nodetest.OutOK, 12),
		hPut(0, "j", "c", 20, 30, nodetest.OutOK, 13),
	})
	if lost := a.LostWrites(map[string]nodetest.RegOutput{"k": {Found: true, Value: "b", Rev: 12}, "j": {Found: true, Value: "c", Rev: 13}}); len(lost) != 0 {
		t.Fatalf("lost: %v", lost)
	}
	lost := a.LostWrites(map[string]nodetest.RegOutput{"k": {Found: true, Value: "a", Rev: 10}, "j": {}})
	if len(lost) != 2 {
		t.Fatalf("want 2 lost writes (k=b rolled back, j=c missing), got %v", lost)
	}
}

// TestCheckerCatchesStaleLocalRead is the control run on a real cluster: a
// LOCAL read on a leader isolated in a minority returns the old value after
// the majority acknowledged a newer one. The checker must call that history
// not linearizable (otherwise a passing Jepsen run would prove nothing).
func TestCheckerCatchesStaleLocalRead(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3})
	j := &jepsen{t: t, c: c, key: c.OperatorKey(), h: nodetest.NewHistory(), keys: []string{"stale-k"}, hc: &http.Client{Timeout: 10 * time.Second}, refusals: map[string]int{}, unknown: map[string]int{}, index: map[string]int{}}
	for _, m := range c.Nodes {
		j.pub = append(j.pub, c.Publish(m.Index))
		j.qry = append(j.qry, c.Query(m.Index))
	}
	old := c.WaitLeader(10 * time.Second)
	if out := j.writeVia(old.Index, 0, nodetest.RegInput{Kind: nodetest.OpPut, Key: "stale-k", Value: "v1"}); out.Outcome != nodetest.OutOK {
		t.Fatalf("v1: %v", out)
	}
	c.Isolate(old.Index)
	nl := waitMajorityLeader(t, c, old.Index)
	if out := j.writeVia(nl.Index, 0, nodetest.RegInput{Kind: nodetest.OpPut, Key: "stale-k", Value: "v2"}); out.Outcome != nodetest.OutOK {
		t.Fatalf("v2: %v", out)
	}
	out, ok := j.readVia(old.Index, 1, "stale-k", registryv1.Consistency_CONSISTENCY_LOCAL)
	if !ok || out.Value != "v1" {
		t.Fatalf("local read on the isolated old leader: %v %v, want v1", out, ok)
	}
	a := j.h.Analyze()
	if a.StaleReads != 1 {
		t.Errorf("direct stale read detection: %d, want 1 (%v)", a.StaleReads, a.Problems)
	}
	r := a.Check(10*time.Second, t.TempDir())
	if r.Verdict != porcupine.Illegal {
		t.Fatalf("checker verdict %s for a history with a stale local read; want Illegal", r.Verdict)
	}
	t.Logf("checker rejects the stale local read as expected (%s, visualization %s)", r.Verdict, r.Visualization)
	c.Heal()
}

// TestNoStaleReadFromIsolatedLeaderUnderLoad extends
// TestIsolatedLeaderServesNoStaleRead: while the old leader is isolated,
// clients keep issuing linearizable reads to it (and to the majority) and
// the majority keeps writing; after the heal, the whole history must be
// linearizable, and the old leader must not have answered any read that
// began after the majority acknowledged a write. (Right after the cut it
// may still answer a read or two: a heartbeat sent before the cut and
// acknowledged after the read arrived legitimately confirms its leadership
// at that moment; the checker decides whether such an answer was stale.)
func TestNoStaleReadFromIsolatedLeaderUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Replicas: 1, Members: 1})
	j := newLoadRun(t, c, "iso-k")
	old := c.WaitLeader(10 * time.Second)
	if out := j.writeVia(old.Index, 9, nodetest.RegInput{Kind: nodetest.OpPut, Key: "iso-k", Value: "v0"}); out.Outcome != nodetest.OutOK {
		t.Fatalf("v0: %v", out)
	}
	var isolated atomic.Bool // set once the isolation is in place, cleared before the heal
	var newer atomic.Bool    // the majority acknowledged a write
	var oldAnswered, oldTried, oldAnsweredLate atomic.Int64
	stop := j.startLoad(func(client int) int {
		if client < 2 {
			return old.Index // readers pinned to the old leader
		}
		return -1
	}, func(client, node int) func(nodetest.RegOutput, bool) {
		if node != old.Index || !isolated.Load() {
			return nil
		}
		late := newer.Load()
		// A read begun during the isolation counts as tried even if it
		// ends after the heal (it may wait up to its 3 s timeout, longer
		// than the isolation lasts on a fast machine).
		oldTried.Add(1)
		return func(out nodetest.RegOutput, ok bool) {
			if isolated.Load() {
				if ok {
					oldAnswered.Add(1)
					if late {
						oldAnsweredLate.Add(1)
					}
					t.Logf("isolated old leader answered a linearizable read (begun after a majority write: %v): %+v", late, out)
				}
			}
		}
	})
	time.Sleep(300 * time.Millisecond)
	c.Isolate(old.Index)
	isolated.Store(true)
	nl := waitMajorityLeader(t, c, old.Index)
	acked := 0
	for i := 0; i < 30; i++ {
		in := nodetest.RegInput{Kind: nodetest.OpPut, Key: "iso-k", Value: fmt.Sprintf("w%d", i)}
		if j.writeVia(nl.Index, 9, in).Outcome == nodetest.OutOK {
			acked++
			newer.Store(true)
		}
		time.Sleep(30 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	isolated.Store(false)
	c.Heal()
	c.WaitLeader(10 * time.Second)
	time.Sleep(500 * time.Millisecond)
	stop()
	if acked < 10 {
		t.Fatalf("only %d writes acknowledged by the majority during the isolation", acked)
	}
	if oldTried.Load() == 0 {
		t.Fatalf("no read was sent to the isolated old leader")
	}
	if n := oldAnsweredLate.Load(); n > 0 {
		t.Errorf("isolated old leader answered %d linearizable reads begun after the majority acknowledged a write", n)
	}
	j.mustLinearizable(t)
	t.Logf("isolated old leader: %d linearizable reads tried, %d answered (all right after the cut); %d writes acknowledged by the majority meanwhile",
		oldTried.Load(), oldAnswered.Load(), acked)
}

// TestNoStaleReadAcrossLeadershipTransfers issues linearizable reads and
// writes while leadership moves quickly back and forth: a new leader must
// not answer a read index before it knows the commit index of its term.
func TestNoStaleReadAcrossLeadershipTransfers(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3})
	j := newLoadRun(t, c, "xfer-k")
	stop := j.startLoad(func(int) int { return -1 }, nil)
	transfers := 0
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		l := c.WaitLeader(10 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := nodev1connect.NewClusterServiceClient(j.c.OperatorHTTPClient(), l.API()).TransferLeadership(ctx, connect.NewRequest(&nodev1.TransferLeadershipRequest{}))
		cancel()
		if err == nil {
			transfers++
		}
		time.Sleep(time.Duration(50+transfers%5*40) * time.Millisecond)
	}
	stop()
	if transfers < 5 {
		t.Fatalf("only %d leadership transfers", transfers)
	}
	j.mustLinearizable(t)
	t.Logf("%d leadership transfers under load", transfers)
}

func waitMajorityLeader(t *testing.T, c *nodetest.Cluster, old int) *nodetest.Member {
	t.Helper()
	var nl *nodetest.Member
	if err := c.WaitFor(10*time.Second, func() error {
		for _, m := range c.Nodes {
			if m.Index != old && m.Node() != nil && m.Node().Raft() != nil && m.Node().Raft().State() == raft.Leader {
				nl = m
				return nil
			}
		}
		return fmt.Errorf("no leader in the majority")
	}); err != nil {
		t.Fatal(err)
	}
	return nl
}

// writeVia publishes once through node i (no retries) and records it.
func (j *jepsen) writeVia(i, client int, in nodetest.RegInput) nodetest.RegOutput {
	return j.writeWith(func() int { return i }, rand.New(rand.NewPCG(1, 2)), client, in, 0)
}

// newLoadRun prepares a small run on one key.
func newLoadRun(t *testing.T, c *nodetest.Cluster, key string) *jepsen {
	j := &jepsen{t: t, c: c, key: c.OperatorKey(), h: nodetest.NewHistory(), keys: []string{key}, hc: &http.Client{Timeout: 10 * time.Second},
		refusals: map[string]int{}, unknown: map[string]int{}, index: map[string]int{}, o: jepsenOpts{Seed: 7, RetryFor: 2 * time.Second}}
	for _, m := range c.Nodes {
		j.pub = append(j.pub, c.Publish(m.Index))
		j.qry = append(j.qry, c.Query(m.Index))
		j.index[m.ID] = m.Index
	}
	return j
}

// startLoad runs four clients: each reads linearizably (through the node
// pin returns, or a random one for -1) and now and then writes or CASes.
// onRead, if set, is called before each read and may return a func to
// call with its outcome. The returned func stops them.
func (j *jepsen) startLoad(pin func(client int) int, onRead func(client, node int) func(nodetest.RegOutput, bool)) func() {
	var wg sync.WaitGroup
	var stop atomic.Bool
	for id := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(j.o.Seed, uint64(id)))
			for n := 0; !stop.Load(); n++ {
				i := pin(id)
				if i < 0 {
					i = rng.IntN(len(j.qry))
				}
				if n%4 == 3 {
					in := nodetest.RegInput{Kind: nodetest.OpPut, Key: j.keys[0], Value: j.newValue(id)}
					j.write(rng, id, in, j.o.RetryFor)
					continue
				}
				var done func(nodetest.RegOutput, bool)
				if onRead != nil {
					done = onRead(id, i)
				}
				out, ok := j.readVia(i, id, j.keys[0], registryv1.Consistency_CONSISTENCY_LINEARIZABLE)
				if done != nil {
					done(out, ok)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return func() { stop.Store(true); wg.Wait() }
}

func (j *jepsen) mustLinearizable(t *testing.T) {
	t.Helper()
	a := j.h.Analyze()
	for _, p := range append(a.Problems, j.problems...) {
		t.Errorf("problem: %s", p)
	}
	r := a.Check(time.Minute, "")
	if r.Verdict != porcupine.Ok {
		t.Fatalf("history of %d operations: checker says %s; visualization: %s", len(a.Ops), r.Verdict, r.Visualization)
	}
	t.Logf("history of %d operations (%d reads, %d writes acknowledged, %d indeterminate, %d revisions shared by several values) is linearizable (checked in %v)",
		len(a.Ops), a.Reads, a.WritesOK, a.Unknown, len(a.SharedRevisions), r.Took.Round(time.Millisecond))
}

// TestConditionalWriteOnSharedRevision reproduces a lost update: changes
// of one organisation that land in the same Raft entry all get that entry's
// index as their revision, so a client whose write was overwritten within
// the entry can still compare-and-set on "its" revision and overwrite a
// version it never saw. Here two commands travel in one Publish request
// (deterministic); with independent clients the writer's group commit does
// the same under load (seen in the Jepsen runs under -race). Fixed by
// making revisions unique per change (registry.RevisionBits); this test
// guards it.
func TestConditionalWriteOnSharedRevision(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3})
	j := newLoadRun(t, c, "shared-k")
	l := c.WaitLeader(10 * time.Second)
	now := time.Now().UnixMilli()
	ins := []nodetest.RegInput{
		{Kind: nodetest.OpPut, Key: "shared-k", Value: "from-a"},
		{Kind: nodetest.OpPut, Key: "shared-k", Value: "from-b"},
	}
	var signed []string
	for _, in := range ins {
		jws, err := j.sign(in, now)
		if err != nil {
			t.Fatal(err)
		}
		signed = append(signed, jws)
	}
	call := j.h.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	res, err := c.Publish(l.Index).Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: signed}))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	ret := j.h.Now()
	for i, r := range res.Msg.GetResults() {
		if r.GetErrorCode() != "" {
			t.Fatalf("%s: %s %s", ins[i].Value, r.GetErrorCode(), r.GetErrorMessage())
		}
		j.h.Record(i, ins[i], call, nodetest.RegOutput{Outcome: nodetest.OutOK, Rev: r.GetRevisions()[0]}, ret, nodetest.OpMeta{Node: l.ID})
	}
	revA := res.Msg.GetResults()[0].GetRevisions()[0]
	cur, ok := j.readVia(l.Index, 2, "shared-k", registryv1.Consistency_CONSISTENCY_LINEARIZABLE)
	if !ok {
		t.Fatal("read failed")
	}
	t.Logf("from-a acknowledged at revision %d, from-b at %d; the record reads %s@%d", revA, res.Msg.GetResults()[1].GetRevisions()[0], cur.Value, cur.Rev)
	// Client a updates "its" version.
	in := nodetest.RegInput{Kind: nodetest.OpCAS, Key: "shared-k", Value: "a-update", ExpectValue: "from-a", ExpectRev: revA}
	if out := j.writeVia(l.Index, 0, in); out.Outcome == nodetest.OutOK {
		t.Errorf("compare-and-set on revision %d, acknowledged to a for %q, succeeded although the record at that revision was %q: b's write was overwritten unseen (lost update)",
			revA, "from-a", cur.Value)
	}
	j.mustLinearizable(t)
}
