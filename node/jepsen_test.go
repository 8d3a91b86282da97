package node_test

// Jepsen-style fault test of the replicated registry, in the manner of
// Jepsen's etcd and Consul analyses: concurrent clients read, write and
// compare-and-set a few organisation records through random nodes (voters,
// a non-voting replica, a member), while a seeded nemesis crashes,
// partitions, pauses and degrades the cluster, transfers leadership, forces
// snapshot installs and replaces a voter. Every operation is recorded; at the
// end the faults are healed and
//
//   - porcupine checks that the history is linearizable (register model with
//     revisions and conditional writes, partitioned by key; indeterminate
//     writes may or may not have happened);
//   - no acknowledged write is lost, and no read returned a revision older
//     than one acknowledged or read before it began;
//   - every node holds the same registry: the same records through its
//     Reader, the same applied index, the same badger contents (servers, c/
//     and t/ excluded) and the same replicated state (all nodes, members too).
//
// Nemesis (one fault at a time; each phase ends healed, with dead nodes
// restarted, a leader elected within a bound and a write and a linearizable
// read served within a bound, so a cluster that stays down fails the test):
//
//	kill-leader          crash the leader, restart it from its data dir
//	kill-node            crash any node (voter, standby, replica or member)
//	kill-majority        crash two of the three voters at once
//	isolate-leader       cut the leader off from every node
//	leader-minority      the leader with some non-voters/members in a minority
//	partition            voters split 1 | 2, the others spread over both sides
//	bridge               voters a | c, both reach b (the bridge)
//	pause                cut one node off for a moment (a stand-in for a
//	                     process pause: its timers keep running)
//	transfer-leadership  ClusterService.TransferLeadership, 1-3 times in a row
//	flaky-network        every link drops 5-25% of messages and delays the
//	                     rest by up to tens of ms
//	snapshot-install     crash a follower, push the log past it, force
//	                     snapshots and log compaction on every server, restart
//	                     it: the leader must send it a snapshot (asserted via
//	                     the FSM's restore log); with
//	                     VERBUND_JEPSEN_SNAPSHOTS=aggressive every server also
//	                     snapshots every 64 entries throughout (see
//	                     jepsenCluster)
//	replace-voter        crash a voter for longer than DeadServerGrace: the
//	                     leader must remove it and promote the voter-role
//	                     standby (4 voter-role servers, 3 Raft voters); on
//	                     restart it must rejoin as a non-voter
//
// The schedule is seeded (VERBUND_JEPSEN_SEED for the short run; the soak
// prints its seeds): the faults, their targets and durations replay, though
// thread timing does not. Half the clients retry a failed write with the
// same signed command (commands are idempotent by id) until it gets a
// definite answer or the retry time runs out; the others give up after one
// attempt. A write without a definite answer is indeterminate.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/anishathalye/porcupine"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/node"
	"github.com/verbund/verbund/node/nodetest"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

const restoreMsg = "registry restored from snapshot"

var nemesisKinds = []string{
	"kill-leader", "kill-node", "kill-majority", "isolate-leader", "leader-minority", "partition",
	"bridge", "pause", "transfer-leadership", "flaky-network", "snapshot-install", "replace-voter",
}

type jepsenOpts struct {
	Seed    uint64
	Clients int
	Keys    int
	// Duration: the nemesis runs random phases until it has passed; zero
	// runs every kind once, in a seeded order.
	Duration time.Duration
	// Think is the mean pause between a client's operations.
	Think time.Duration
	// RetryFor bounds how long a write is retried before it counts as
	// indeterminate.
	RetryFor     time.Duration
	CheckTimeout time.Duration
	Grace        time.Duration // DeadServerGrace
	// Snapshots: "phase" (default) compacts the Raft logs only in the
	// snapshot-install phase; "aggressive" (VERBUND_JEPSEN_SNAPSHOTS) also
	// snapshots and compacts every 64 entries, so that snapshots are
	// installed under every fault (see jepsenCluster).
	Snapshots string
	// Kinds are the nemesis kinds to draw from (default nemesisKinds);
	// PowerLoss puts the Raft logs on faultfs for the power-cut kinds
	// (powerloss_test.go).
	Kinds     []string
	PowerLoss bool
}

type jepsenReport struct {
	Seed                                                   uint64
	Took                                                   time.Duration
	Ops, Reads, ReadErrors                                 int
	Writes, WritesOK, PreconditionFailed, Refused, Unknown int
	UnknownApplied, UnavailableApplied                     int
	Refusals, UnknownCodes                                 map[string]int
	Faults, Events                                         map[string]int
	Restores, LeaderChanges, Dropped                       int
	LostWrites, StaleReads                                 int
	SharedRevisions                                        []string
	Check                                                  nodetest.CheckResult
	Problems                                               []string
}

func (r jepsenReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %v: %d operations: %d reads (+%d failed, not recorded); %d writes: %d ok, %d precondition failed, %d refused %v, %d indeterminate %v (%d of them seen applied, %d of those after only Unavailable errors)\n",
		r.Seed, r.Took.Round(time.Millisecond), r.Ops, r.Reads, r.ReadErrors, r.Writes, r.WritesOK, r.PreconditionFailed, r.Refused, r.Refusals, r.Unknown, r.UnknownCodes, r.UnknownApplied, r.UnavailableApplied)
	var kinds []string
	for k := range r.Faults {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	total := 0
	var parts []string
	for _, k := range kinds {
		total += r.Faults[k]
		parts = append(parts, fmt.Sprintf("%s=%d", k, r.Faults[k]))
	}
	var events []string
	for k, n := range r.Events {
		events = append(events, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(events)
	fmt.Fprintf(&b, "  faults injected: %d (%s); checked outcomes: %s; snapshot restores %d, leadership changes (notifications) %d, messages dropped %d\n",
		total, strings.Join(parts, " "), strings.Join(events, " "), r.Restores, r.LeaderChanges, r.Dropped)
	verdict := string(r.Check.Verdict)
	if r.Check.Verdict == porcupine.Unknown {
		verdict = "UNKNOWN (checker timed out: neither proven linearizable nor refuted)"
	}
	fmt.Fprintf(&b, "  lost writes %d, stale reads %d, revisions shared by several values %d, linearizability checker: %s in %v",
		r.LostWrites, r.StaleReads, len(r.SharedRevisions), verdict, r.Check.Took.Round(time.Millisecond))
	if r.Check.Visualization != "" {
		fmt.Fprintf(&b, " (visualization: %s)", r.Check.Visualization)
	}
	if len(r.Problems) > 0 {
		fmt.Fprintf(&b, "\n  problems: %d", len(r.Problems))
	}
	return b.String()
}

// TestJepsenShort runs every nemesis kind once against a 6-node cluster
// under concurrent clients and checks the history (see the file comment).
func TestJepsenShort(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	seed := envUint(t, "VERBUND_JEPSEN_SEED", 1)
	r := runJepsen(t, jepsenOpts{
		Seed: seed, Clients: 6, Keys: 4, Think: 120 * time.Millisecond, RetryFor: 4 * time.Second,
		CheckTimeout: 2 * time.Minute, Grace: 2 * time.Second,
	})
	t.Logf("summary: %s", r)
	if r.Restores == 0 {
		t.Errorf("no snapshot was restored during the run: snapshot install under faults was not exercised")
	}
}

// TestJepsenSoak runs the Jepsen test for several seeds, minutes each, with
// random fault phases. Only with VERBUND_SOAK=1 (make soak); tune with
// VERBUND_SOAK_SEEDS (default 3), VERBUND_SOAK_DURATION (default 2m) and
// VERBUND_SOAK_SEED (first seed; default from the clock, printed).
func TestJepsenSoak(t *testing.T) {
	seeds, dur, base := soakParams(t)
	var summaries []string
	for s := range seeds {
		seed := base + s
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			r := runJepsen(t, jepsenOpts{
				Seed: seed, Clients: 6, Keys: 5, Duration: dur, Think: 40 * time.Millisecond, RetryFor: 5 * time.Second,
				CheckTimeout: 10 * time.Minute, Grace: 2 * time.Second,
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
		t.Logf("soak%s", "\n"+s)
	}
}

func envUint(t *testing.T, name string, def uint64) uint64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}

// jepsen is one run: the cluster, the clients and the nemesis.
type jepsen struct {
	t     *testing.T
	o     jepsenOpts
	c     *nodetest.Cluster
	key   jose.JSONWebKey
	h     *nodetest.History
	keys  []string
	hc    *http.Client
	pub   []registryv1connect.PublishServiceClient
	qry   []registryv1connect.QueryServiceClient
	index map[string]int // node id -> index
	start time.Time

	stop       atomic.Bool
	readErrors atomic.Int64
	seq        atomic.Int64

	mu       sync.Mutex
	refusals map[string]int
	unknown  map[string]int // indeterminate writes by the code of their last error
	problems []string
	faults   map[string]int
	events   map[string]int // outcomes the nemesis checked (a snapshot restored, a voter replaced)

	nemRng   *rand.Rand // nemesis decisions
	probeRng *rand.Rand // nemesis probes and filler writes
}

func runJepsen(t *testing.T, o jepsenOpts) jepsenReport {
	if o.Snapshots == "" {
		o.Snapshots = os.Getenv("VERBUND_JEPSEN_SNAPSHOTS")
	}
	if o.Kinds == nil {
		o.Kinds = nemesisKinds
	}
	t.Logf("jepsen: seed %d, snapshots %q (replay with VERBUND_JEPSEN_SEED=%d for the short run)", o.Seed, o.Snapshots, o.Seed)
	c := nodetest.Start(t, jepsenCluster(o))
	j := &jepsen{
		t: t, o: o, c: c, key: c.OperatorKey(), h: nodetest.NewHistory(),
		hc:       &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8, IdleConnTimeout: 5 * time.Second}},
		index:    map[string]int{},
		refusals: map[string]int{},
		unknown:  map[string]int{},
		faults:   map[string]int{},
		events:   map[string]int{},
		nemRng:   rand.New(rand.NewPCG(o.Seed, 0x6e656d65)),
		probeRng: rand.New(rand.NewPCG(o.Seed, 0x70726f62)),
	}
	for i := range o.Keys {
		j.keys = append(j.keys, fmt.Sprintf("jepsen-k%d", i))
	}
	for i, m := range c.Nodes {
		j.pub = append(j.pub, registryv1connect.NewPublishServiceClient(j.hc, m.API()))
		j.qry = append(j.qry, registryv1connect.NewQueryServiceClient(j.hc, m.API()))
		j.index[m.ID] = i
	}
	j.start = time.Now()

	var wg sync.WaitGroup
	for id := range o.Clients {
		wg.Add(1)
		go func() { defer wg.Done(); j.client(id) }()
	}
	// Runs before the cluster's shutdown (cleanups run last-in first-out),
	// also when the test fails early.
	t.Cleanup(func() {
		j.stop.Store(true)
		wg.Wait()
		j.hc.CloseIdleConnections()
	})

	// The nemesis runs on the test goroutine: a failed bound stops the test.
	j.sleep(500 * time.Millisecond)
	if o.Duration == 0 {
		kinds := slices.Clone(o.Kinds)
		j.nemRng.Shuffle(len(kinds), func(a, b int) { kinds[a], kinds[b] = kinds[b], kinds[a] })
		for i, k := range kinds {
			j.phase(i, k)
		}
	} else {
		for i := 0; time.Since(j.start) < o.Duration; i++ {
			j.phase(i, o.Kinds[j.nemRng.IntN(len(o.Kinds))])
		}
	}

	j.stop.Store(true)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(o.RetryFor + 30*time.Second):
		t.Fatalf("clients did not stop within %v", o.RetryFor+30*time.Second)
	}
	if err := c.WaitCaughtUp(30 * time.Second); err != nil {
		t.Fatalf("cluster did not catch up after the faults were healed: %v", err)
	}
	final := j.finalReads()
	j.compareState()

	a := j.h.Analyze()
	r := jepsenReport{
		Seed: o.Seed, Ops: len(a.Ops), Reads: a.Reads, ReadErrors: int(j.readErrors.Load()),
		Writes: a.Writes, WritesOK: a.WritesOK, PreconditionFailed: a.PreconditionFailed, Refused: a.Refused, Unknown: a.Unknown,
		UnknownApplied: a.UnknownApplied, UnavailableApplied: a.UnavailableApplied,
		Refusals: j.refusals, UnknownCodes: j.unknown, Faults: j.faults, Events: j.events,
		StaleReads: a.StaleReads, SharedRevisions: a.SharedRevisions, Restores: c.LogCount(restoreMsg),
		LeaderChanges: c.LogCount("leadership changed"), Dropped: int(c.Net.Dropped()),
	}
	lost := a.LostWrites(final)
	r.LostWrites = len(lost)
	r.Check = a.Check(o.CheckTimeout, "")
	r.Took = time.Since(j.start)
	r.Problems = append(append(slices.Clone(j.problems), a.Problems...), lost...)

	for _, p := range r.Problems {
		t.Errorf("problem: %s", p)
	}
	if len(r.SharedRevisions) > 0 {
		// Not a violation by itself; the checker fails the run if a
		// conditional write took advantage of it.
		t.Logf("revisions shared by several values of a record (one Raft entry changed it more than once): %v", r.SharedRevisions)
	}
	switch r.Check.Verdict {
	case porcupine.Illegal:
		t.Errorf("history of %d operations is NOT linearizable (seed %d); visualization: %s", len(a.Ops), o.Seed, r.Check.Visualization)
	case porcupine.Unknown:
		t.Errorf("linearizability check timed out after %v: verdict unknown (not a proven violation); visualization: %s", o.CheckTimeout, r.Check.Visualization)
	}
	if r.LostWrites > 0 {
		t.Errorf("%d acknowledged writes lost", r.LostWrites)
	}
	if r.WritesOK < 20 || r.Reads < 20 {
		t.Errorf("too little progress to mean anything: %d writes acknowledged, %d reads", r.WritesOK, r.Reads)
	}
	return r
}

// jepsenTrailingLogs: Raft keeps this many entries behind a snapshot.
const jepsenTrailingLogs = 32

// jepsenCluster: 4 voter-role servers of which 3 are Raft voters (the
// fourth is the standby replace-voter promotes), a non-voting replica and a
// member. By default nodes never snapshot on their own (threshold 2^30):
// the snapshot-install phase forces snapshots and log compaction. With
// "aggressive" every node snapshots every 64 entries (and compacts to 32
// behind), so snapshots are also installed on followers that are only a
// little behind, under partitions, restarts and leader changes: with
// raft-wal as the log store that crashed a follower in about half the short
// runs (hashicorp/raft#697: installSnapshot empties a MonotonicLogStore but
// keeps Raft's cached last index; "log not found" in processLogs).
func jepsenCluster(o jepsenOpts) nodetest.Options {
	opts := nodetest.Options{
		Voters: 4, RaftVoters: 3, Replicas: 1, Members: 1,
		SnapshotThreshold: 1 << 30, TrailingLogs: jepsenTrailingLogs,
		DeadServerGrace: o.Grace, Seed: o.Seed,
	}
	if o.Snapshots == "aggressive" {
		opts.SnapshotThreshold = 64
	}
	if o.PowerLoss {
		opts.PowerLoss, opts.StateRollback = true, true
	}
	return opts
}

func (j *jepsen) problem(format string, args ...any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.problems) < 100 {
		j.problems = append(j.problems, fmt.Sprintf(format, args...))
	}
}

func (j *jepsen) fault(kind string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.faults[kind]++
}

func (j *jepsen) event(kind string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.events[kind]++
}

// --- clients ---------------------------------------------------------------

func (j *jepsen) client(id int) {
	rng := rand.New(rand.NewPCG(j.o.Seed, uint64(id)+1))
	// Even clients retry a failed write (same signed command, idempotent)
	// until it gets a definite answer; odd clients give up after one
	// attempt, leaving the outcome indeterminate.
	retryFor := j.o.RetryFor
	if id%2 == 1 {
		retryFor = 0
	}
	last := map[string]nodetest.RegOutput{} // what this client last knew of each key
	for !j.stop.Load() {
		key := j.keys[rng.IntN(len(j.keys))]
		switch p := rng.IntN(100); {
		case p < 50:
			if out, ok := j.read(rng, id, key, registryv1.Consistency_CONSISTENCY_LINEARIZABLE); ok {
				last[key] = out
			}
		case p < 75:
			in := nodetest.RegInput{Kind: nodetest.OpPut, Key: key, Value: j.newValue(id)}
			j.learn(last, in, j.write(rng, id, in, retryFor))
		default:
			if _, ok := last[key]; !ok || rng.IntN(2) == 0 {
				if out, ok := j.read(rng, id, key, registryv1.Consistency_CONSISTENCY_LINEARIZABLE); ok {
					last[key] = out
				}
			}
			in := nodetest.RegInput{Kind: nodetest.OpCAS, Key: key, Value: j.newValue(id)}
			if l, ok := last[key]; ok && l.Found {
				in.ExpectValue, in.ExpectRev = l.Value, l.Rev
			} else {
				in.Absent = true
			}
			j.learn(last, in, j.write(rng, id, in, retryFor))
		}
		if j.o.Think > 0 {
			time.Sleep(time.Duration(rng.Int64N(int64(2 * j.o.Think))))
		}
	}
}

func (j *jepsen) learn(last map[string]nodetest.RegOutput, in nodetest.RegInput, out nodetest.RegOutput) {
	switch out.Outcome {
	case nodetest.OutOK:
		last[in.Key] = nodetest.RegOutput{Found: true, Value: in.Value, Rev: out.Rev}
	case nodetest.OutUnknown, nodetest.OutPreconditionFailed:
		delete(last, in.Key)
	}
}

func (j *jepsen) newValue(client int) string {
	return fmt.Sprintf("c%d-%d", client, j.seq.Add(1))
}

// read is one read through a random node; a failed read is not recorded.
func (j *jepsen) read(rng *rand.Rand, client int, key string, cons registryv1.Consistency) (nodetest.RegOutput, bool) {
	i := rng.IntN(len(j.qry))
	return j.readVia(i, client, key, cons)
}

func (j *jepsen) readVia(i, client int, key string, cons registryv1.Consistency) (nodetest.RegOutput, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	call := j.h.Now()
	res, err := j.qry[i].GetOrganisation(ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{Id: key, Read: &registryv1.ReadOptions{Consistency: cons}}))
	ret := j.h.Now()
	var out nodetest.RegOutput
	switch {
	case err == nil:
		if cons == registryv1.Consistency_CONSISTENCY_LINEARIZABLE && !res.Msg.GetRead().GetLinearizable() {
			j.problem("linearizable read of %s on %s answered without the linearizable flag", key, j.c.Nodes[i].ID)
		}
		o := res.Msg.GetOrganisation()
		out = nodetest.RegOutput{Found: true, Value: o.GetName(), Rev: o.GetRevision()}
	case connect.CodeOf(err) == connect.CodeNotFound:
		out = nodetest.RegOutput{Found: false}
	default:
		j.readErrors.Add(1)
		return out, false
	}
	j.h.Record(client, nodetest.RegInput{Kind: nodetest.OpRead, Key: key}, call, out, ret, nodetest.OpMeta{Node: j.c.Nodes[i].ID})
	return out, true
}

// write signs one command and publishes it through random nodes, retrying
// the same signed command (idempotent by its id) on errors until a
// definite answer or retryFor has passed.
func (j *jepsen) write(rng *rand.Rand, client int, in nodetest.RegInput, retryFor time.Duration) nodetest.RegOutput {
	return j.writeWith(func() int { return rng.IntN(len(j.pub)) }, rng, client, in, retryFor)
}

// writeWith is write through the nodes pick chooses.
func (j *jepsen) writeWith(pick func() int, rng *rand.Rand, client int, in nodetest.RegInput, retryFor time.Duration) nodetest.RegOutput {
	jws, err := j.sign(in, 0)
	if err != nil {
		j.problem("sign: %v", err)
		return nodetest.RegOutput{Outcome: nodetest.OutRefused}
	}
	return j.send(pick, rng, client, in, jws, retryFor)
}

// sign signs the command for a write (issued now, or at issuedAt if set).
func (j *jepsen) sign(in nodetest.RegInput, issuedAt int64) (string, error) {
	m := &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
		Id: in.Key, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: in.Value,
	}}}
	if in.Kind == nodetest.OpCAS {
		if in.Absent {
			m.Precondition = &registryv1.Precondition{Condition: &registryv1.Precondition_Absent{Absent: true}}
		} else {
			m.Precondition = &registryv1.Precondition{Condition: &registryv1.Precondition_Revision{Revision: in.ExpectRev}}
		}
	}
	cmd := registry.NewCommand("test-operator", m)
	if issuedAt != 0 {
		cmd.IssuedAtUnixMs = issuedAt
	}
	return registry.SignCommand(cmd, j.key)
}

// send publishes a signed write, retrying it as write describes, and
// records it.
func (j *jepsen) send(pick func() int, rng *rand.Rand, client int, in nodetest.RegInput, jws string, retryFor time.Duration) nodetest.RegOutput {
	meta := nodetest.OpMeta{AllUnavailable: true}
	call := j.h.Now()
	start := time.Now()
	sent := false
	var out nodetest.RegOutput
	for {
		i := pick()
		meta.Attempts++
		if meta.Node != "" {
			meta.Node += ","
		}
		meta.Node += j.c.Nodes[i].ID
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		res, err := j.pub[i].Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: []string{jws}}))
		cancel()
		if err == nil && len(res.Msg.GetResults()) != 1 {
			err = fmt.Errorf("%d results for one command", len(res.Msg.GetResults()))
			j.problem("publish via %s: %v", j.c.Nodes[i].ID, err)
		}
		if err == nil {
			r := res.Msg.GetResults()[0]
			switch r.GetErrorCode() {
			case "":
				out = nodetest.RegOutput{Outcome: nodetest.OutOK, Rev: r.GetRevisions()[0]}
			case registry.CodePreconditionFailed:
				out = nodetest.RegOutput{Outcome: nodetest.OutPreconditionFailed}
			default:
				out = nodetest.RegOutput{Outcome: nodetest.OutRefused}
				j.mu.Lock()
				j.refusals[r.GetErrorCode()]++
				j.mu.Unlock()
				if r.GetErrorCode() != registry.CodeStale {
					j.problem("write %v refused unexpectedly: %s: %s", in, r.GetErrorCode(), r.GetErrorMessage())
				}
			}
			meta.AllUnavailable, meta.Err = false, ""
			break
		}
		if !notSent(err) {
			sent = true
		}
		if connect.CodeOf(err) != connect.CodeUnavailable {
			meta.AllUnavailable = false
		}
		meta.Err = err.Error()
		if len(meta.Err) > 200 {
			meta.Err = meta.Err[:200]
		}
		if time.Since(start) >= retryFor {
			if sent {
				out = nodetest.RegOutput{Outcome: nodetest.OutUnknown}
				j.mu.Lock()
				j.unknown[connect.CodeOf(err).String()]++
				j.mu.Unlock()
			} else {
				out = nodetest.RegOutput{Outcome: nodetest.OutRefused} // never left the client
				j.mu.Lock()
				j.refusals["not-sent"]++
				j.mu.Unlock()
			}
			break
		}
		time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)
	}
	j.h.Record(client, in, call, out, j.h.Now(), meta)
	return out
}

// notSent reports whether a request certainly never reached a server: the
// connection to it could not be opened.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// --- nemesis ---------------------------------------------------------------

func (j *jepsen) logf(format string, args ...any) {
	j.t.Logf("[%6.2fs nemesis] %s", time.Since(j.start).Seconds(), fmt.Sprintf(format, args...))
}

func (j *jepsen) sleep(d time.Duration) { time.Sleep(d) }

func (j *jepsen) dur(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// raftConfig returns the voters and non-voters (node indexes) of the
// leader's Raft configuration.
func (j *jepsen) raftConfig() (voters, nonvoters []int, err error) {
	l := j.c.Leader()
	if l == nil {
		return nil, nil, errors.New("no leader")
	}
	n := l.Node()
	if n == nil {
		return nil, nil, errors.New("leader went down")
	}
	f := n.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, nil, err
	}
	for _, s := range f.Configuration().Servers {
		i, ok := j.index[string(s.ID)]
		if !ok {
			return nil, nil, fmt.Errorf("unknown server %s in the raft configuration", s.ID)
		}
		if s.Suffrage == raft.Voter {
			voters = append(voters, i)
		} else {
			nonvoters = append(nonvoters, i)
		}
	}
	sort.Ints(voters)
	sort.Ints(nonvoters)
	return voters, nonvoters, nil
}

func (j *jepsen) mustRaftConfig() (voters, nonvoters []int) {
	j.t.Helper()
	j.c.WaitLeader(10 * time.Second)
	var err error
	if err2 := j.c.WaitFor(10*time.Second, func() error {
		voters, nonvoters, err = j.raftConfig()
		return err
	}); err2 != nil {
		j.t.Fatalf("raft configuration: %v", err2)
	}
	return voters, nonvoters
}

// others returns the nodes not in the given sets.
func (j *jepsen) others(sets ...[]int) []int {
	var out []int
	for i := range j.c.Nodes {
		in := false
		for _, s := range sets {
			in = in || slices.Contains(s, i)
		}
		if !in {
			out = append(out, i)
		}
	}
	return out
}

func (j *jepsen) ids(is []int) string {
	var s []string
	for _, i := range is {
		s = append(s, j.c.Nodes[i].ID)
	}
	return "{" + strings.Join(s, ",") + "}"
}

// phase injects one fault, holds it, and recovers.
func (j *jepsen) phase(n int, kind string) {
	j.t.Helper()
	rng := rand.New(rand.NewPCG(j.o.Seed, uint64(n)<<8|0x51)) // this phase's own stream: schedules replay
	c := j.c
	j.fault(kind)
	switch kind {
	case "kill-leader":
		l := c.WaitLeader(10 * time.Second)
		d := j.dur(rng, 800*time.Millisecond, 2500*time.Millisecond)
		j.logf("kill leader %s for %v", l.ID, d)
		c.Kill(l.Index)
		j.sleep(d)
		c.Restart(l.Index)
	case "kill-node":
		i := rng.IntN(len(c.Nodes))
		d := j.dur(rng, 500*time.Millisecond, 2500*time.Millisecond)
		j.logf("kill %s (%s) for %v", c.Nodes[i].ID, c.Nodes[i].Role, d)
		c.Kill(i)
		j.sleep(d)
		c.Restart(i)
	case "kill-majority":
		voters, _ := j.mustRaftConfig()
		rng.Shuffle(len(voters), func(a, b int) { voters[a], voters[b] = voters[b], voters[a] })
		victims := voters[:len(voters)/2+1]
		d := j.dur(rng, 300*time.Millisecond, 1500*time.Millisecond)
		j.logf("kill voters %s (a majority) for %v", j.ids(victims), d)
		for _, i := range victims {
			c.Kill(i)
		}
		j.sleep(d)
		for _, i := range victims {
			c.Restart(i)
		}
	case "isolate-leader":
		l := c.WaitLeader(10 * time.Second)
		d := j.dur(rng, time.Second, 3*time.Second)
		j.logf("isolate leader %s for %v", l.ID, d)
		c.Isolate(l.Index)
		j.sleep(d)
	case "leader-minority":
		voters, _ := j.mustRaftConfig()
		l := c.WaitLeader(10 * time.Second)
		var with []int
		for _, i := range j.others(voters) {
			if rng.IntN(2) == 0 {
				with = append(with, i)
			}
		}
		minority := append([]int{l.Index}, with...)
		d := j.dur(rng, time.Second, 3*time.Second)
		j.logf("leader %s in a minority %s | %s for %v", l.ID, j.ids(minority), j.ids(j.others(minority)), d)
		c.Partition(minority, j.others(minority))
		j.sleep(d)
	case "partition":
		voters, _ := j.mustRaftConfig()
		rng.Shuffle(len(voters), func(a, b int) { voters[a], voters[b] = voters[b], voters[a] })
		a, b := slices.Clone(voters[:len(voters)/2]), slices.Clone(voters[len(voters)/2:])
		for _, i := range j.others(voters) {
			if rng.IntN(2) == 0 {
				a = append(a, i)
			} else {
				b = append(b, i)
			}
		}
		d := j.dur(rng, time.Second, 3*time.Second)
		j.logf("partition %s | %s for %v", j.ids(a), j.ids(b), d)
		c.Partition(a, b)
		j.sleep(d)
	case "bridge":
		voters, _ := j.mustRaftConfig()
		rng.Shuffle(len(voters), func(a, b int) { voters[a], voters[b] = voters[b], voters[a] })
		if len(voters) < 3 {
			j.logf("bridge skipped: %d voters", len(voters))
			return
		}
		a, b := []int{voters[0]}, []int{voters[2]}
		for _, i := range j.others(voters) {
			switch rng.IntN(3) {
			case 0:
				a = append(a, i)
			case 1:
				b = append(b, i)
			}
		}
		d := j.dur(rng, time.Second, 3*time.Second)
		j.logf("bridge %s | %s, both reach %s and the rest, for %v", j.ids(a), j.ids(b), j.ids(j.others(a, b)), d)
		c.Bridge(a, b)
		j.sleep(d)
	case "pause":
		i := rng.IntN(len(c.Nodes))
		d := j.dur(rng, 200*time.Millisecond, time.Second)
		j.logf("pause %s (cut off) for %v", c.Nodes[i].ID, d)
		c.Isolate(i)
		j.sleep(d)
	case "transfer-leadership":
		n := 1 + rng.IntN(3)
		for range n {
			l := c.WaitLeader(10 * time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			res, err := nodev1connect.NewClusterServiceClient(j.c.OperatorHTTPClient(), l.API()).TransferLeadership(ctx, connect.NewRequest(&nodev1.TransferLeadershipRequest{}))
			cancel()
			if err != nil {
				j.logf("transfer leadership from %s: %v", l.ID, err)
			} else {
				j.logf("transferred leadership from %s to %s", l.ID, res.Msg.GetLeaderId())
			}
			j.sleep(j.dur(rng, 20*time.Millisecond, 300*time.Millisecond))
		}
	case "flaky-network":
		drop := 0.05 + rng.Float64()*0.2
		delay := j.dur(rng, 5*time.Millisecond, 40*time.Millisecond)
		d := j.dur(rng, 1500*time.Millisecond, 3*time.Second)
		j.logf("flaky network: drop %.0f%%, delay up to %v, for %v", drop*100, delay, d)
		c.Net.SetFlaky(drop, delay)
		j.sleep(d)
	case "snapshot-install":
		j.snapshotInstall(rng)
	case "replace-voter":
		j.replaceVoter(rng)
	default:
		if !j.powerPhase(rng, kind) {
			j.t.Fatalf("unknown nemesis %q", kind)
		}
	}
	j.recover(kind)
	j.sleep(j.dur(rng, 200*time.Millisecond, 600*time.Millisecond))
}

// recover heals the network, restarts dead nodes, and requires a leader, an
// acknowledged write and a linearizable read within bounds.
func (j *jepsen) recover(after string) {
	j.t.Helper()
	c := j.c
	c.Heal()
	for i, m := range c.Nodes {
		if m.Node() == nil {
			c.Restart(i)
		}
	}
	start := time.Now()
	l := c.WaitLeader(10 * time.Second)
	deadline := start.Add(20 * time.Second)
	for {
		in := nodetest.RegInput{Kind: nodetest.OpPut, Key: j.keys[j.probeRng.IntN(len(j.keys))], Value: j.newValue(j.o.Clients)}
		if out := j.write(j.probeRng, j.o.Clients, in, 3*time.Second); out.Outcome == nodetest.OutOK {
			break
		}
		if time.Now().After(deadline) {
			j.t.Fatalf("after %s was healed: no write acknowledged within %v", after, deadline.Sub(start))
		}
	}
	for {
		if _, ok := j.read(j.probeRng, j.o.Clients, j.keys[j.probeRng.IntN(len(j.keys))], registryv1.Consistency_CONSISTENCY_LINEARIZABLE); ok {
			break
		}
		if time.Now().After(deadline) {
			j.t.Fatalf("after %s was healed: no linearizable read answered within %v", after, deadline.Sub(start))
		}
		j.sleep(50 * time.Millisecond)
	}
	j.logf("healed after %s: leader %s, write and read served in %v", after, l.ID, time.Since(start).Round(time.Millisecond))
}

// snapshotInstall crashes a follower, pushes the leader's log well past it,
// forces snapshots (and so log compaction) on every server, and restarts
// the follower, which can then only catch up from a snapshot.
func (j *jepsen) snapshotInstall(rng *rand.Rand) {
	j.t.Helper()
	c := j.c
	voters, nonvoters := j.mustRaftConfig()
	l := c.WaitLeader(10 * time.Second)
	var cands []int
	for _, i := range append(voters, nonvoters...) {
		if i != l.Index && c.Nodes[i].Node() != nil {
			cands = append(cands, i)
		}
	}
	f := cands[rng.IntN(len(cands))]
	last := c.Nodes[f].Node().Raft().LastIndex()
	before := c.LogCount(restoreMsg)
	c.Kill(f)
	// Compaction keeps TrailingLogs entries behind a snapshot: push the
	// log well past that, then force snapshots (and compaction) on every
	// server, whichever leads when the follower comes back.
	target := last + jepsenTrailingLogs + 64
	j.logf("snapshot install: killed %s at log index %d; pushing the log past %d", c.Nodes[f].ID, last, target)
	deadline := time.Now().Add(30 * time.Second)
	for {
		l := c.Leader()
		if l != nil && l.Node() != nil && l.Node().Raft().LastIndex() >= target {
			break
		}
		if time.Now().After(deadline) {
			j.t.Fatalf("snapshot install: could not push the log past index %d within 30s", target)
		}
		in := nodetest.RegInput{Kind: nodetest.OpPut, Key: j.keys[j.probeRng.IntN(len(j.keys))], Value: j.newValue(j.o.Clients)}
		j.write(j.probeRng, j.o.Clients, in, 2*time.Second)
	}
	for _, m := range c.Nodes {
		if n := m.Node(); n != nil && n.Raft() != nil {
			if err := n.Raft().Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
				j.logf("snapshot on %s: %v", m.ID, err)
			}
		}
	}
	c.Restart(f)
	if err := c.WaitFor(15*time.Second, func() error {
		if c.LogCount(restoreMsg) > before {
			return nil
		}
		return errors.New("no restore")
	}); err != nil {
		j.t.Errorf("snapshot install: %s restarted behind the compacted log, but no snapshot restore was logged within 15s", c.Nodes[f].ID)
		return
	}
	j.event("snapshot-restored")
	j.logf("snapshot install: %s restored a snapshot", c.Nodes[f].ID)
}

// replaceVoter crashes a voter for longer than DeadServerGrace: the leader
// must remove it from the Raft configuration and promote the voter-role
// standby; restarted, it must rejoin as a non-voter.
func (j *jepsen) replaceVoter(rng *rand.Rand) {
	j.t.Helper()
	c := j.c
	voters, nonvoters := j.mustRaftConfig()
	var standby []int
	for _, i := range nonvoters {
		if c.Nodes[i].Role == node.RoleVoter && c.Nodes[i].Node() != nil {
			standby = append(standby, i)
		}
	}
	if len(standby) == 0 {
		j.logf("replace-voter skipped: no voter-role standby in %s", j.ids(nonvoters))
		return
	}
	victim := voters[rng.IntN(len(voters))]
	j.logf("replace voter: kill %s (voters %s, standby %s) for longer than the %v grace", c.Nodes[victim].ID, j.ids(voters), j.ids(standby), j.o.Grace)
	c.Kill(victim)
	start := time.Now()
	var nv []int
	if err := c.WaitFor(30*time.Second, func() error {
		v, n, err := j.raftConfig()
		if err != nil {
			return err
		}
		if slices.Contains(v, victim) || slices.Contains(n, victim) {
			return fmt.Errorf("%s still in the configuration (voters %s)", c.Nodes[victim].ID, j.ids(v))
		}
		if len(v) != len(voters) {
			return fmt.Errorf("%d voters %s, want %d", len(v), j.ids(v), len(voters))
		}
		nv = v
		return nil
	}); err != nil {
		j.t.Fatalf("replace voter: the leader did not replace dead voter %s within 30s: %v", c.Nodes[victim].ID, err)
	}
	promoted := false
	for _, i := range standby {
		promoted = promoted || slices.Contains(nv, i)
	}
	if !promoted {
		j.t.Fatalf("replace voter: voters %s, but none of the standby %s was promoted", j.ids(nv), j.ids(standby))
	}
	j.event("voter-removed+standby-promoted")
	j.logf("replace voter: %s removed, voters now %s (after %v)", c.Nodes[victim].ID, j.ids(nv), time.Since(start).Round(time.Millisecond))
	c.Restart(victim)
	if err := c.WaitFor(30*time.Second, func() error {
		v, n, err := j.raftConfig()
		if err != nil {
			return err
		}
		if !slices.Contains(v, victim) && !slices.Contains(n, victim) {
			return fmt.Errorf("%s not back in the configuration", c.Nodes[victim].ID)
		}
		return nil
	}); err != nil {
		j.t.Fatalf("replace voter: restarted %s did not rejoin within 30s: %v", c.Nodes[victim].ID, err)
	}
	j.event("rejoined-as-nonvoter")
}

// --- final checks ------------------------------------------------------------

// finalReads reads every key linearizably through every node (recorded in
// the history) and locally from every node's state, which must agree. It
// returns each key's final record.
func (j *jepsen) finalReads() map[string]nodetest.RegOutput {
	j.t.Helper()
	c := j.c
	final := map[string]nodetest.RegOutput{}
	for _, key := range j.keys {
		for i := range c.Nodes {
			if err := c.WaitFor(10*time.Second, func() error {
				if _, ok := j.readVia(i, j.o.Clients+1, key, registryv1.Consistency_CONSISTENCY_LINEARIZABLE); !ok {
					return errors.New("read failed")
				}
				return nil
			}); err != nil {
				j.t.Fatalf("final linearizable read of %s on %s failed for 10s", key, c.Nodes[i].ID)
			}
		}
		var first *registryv1.Organisation
		for i, m := range c.Nodes {
			o, _, err := m.Node().Reader().Organisation(key)
			if errors.Is(err, registry.ErrNotFound) {
				o, err = nil, nil
			}
			if err != nil {
				j.t.Fatalf("local read of %s on %s: %v", key, m.ID, err)
			}
			if i == 0 {
				first = o
				if o == nil {
					final[key] = nodetest.RegOutput{}
				} else {
					final[key] = nodetest.RegOutput{Found: true, Value: o.GetName(), Rev: o.GetRevision()}
				}
				continue
			}
			if !proto.Equal(o, first) {
				j.problem("final state of %s differs: %s has %v, %s has %v", key, c.Nodes[0].ID, first, m.ID, o)
			}
		}
	}
	return final
}

// compareState requires every server to have applied the same index and to
// hold the same badger contents (dedupe records c/ and t/ excluded), and
// every node (members too) the same replicated state: the harness's
// EnsureSame check, bounded as before by 15 s.
func (j *jepsen) compareState() {
	j.t.Helper()
	for _, m := range j.c.Nodes {
		if m.Node() == nil {
			j.t.Fatalf("%s is down at the final comparison", m.ID)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	st, err := j.c.CheckSame(ctx)
	if err != nil {
		j.problem("final state: %v", err)
		return
	}
	j.t.Logf("final state: %d servers and %d other nodes agree at index %d (%d registry keys, %d replicated)", st.Servers, st.Members, st.Index, st.Keys, st.Replicated)
}

// soakParams skips unless VERBUND_SOAK=1 (make soak) and returns the soak
// settings: VERBUND_SOAK_SEEDS (default 3), VERBUND_SOAK_DURATION (default
// 2m) and VERBUND_SOAK_SEED (first seed; default from the clock).
func soakParams(t *testing.T) (seeds uint64, dur time.Duration, base uint64) {
	t.Helper()
	if os.Getenv("VERBUND_SOAK") != "1" {
		t.Skip("soak test: set VERBUND_SOAK=1")
	}
	seeds = envUint(t, "VERBUND_SOAK_SEEDS", 3)
	dur = 2 * time.Minute
	if v := os.Getenv("VERBUND_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("VERBUND_SOAK_DURATION: %v", err)
		}
		dur = d
	}
	base = envUint(t, "VERBUND_SOAK_SEED", uint64(time.Now().UnixNano()%1_000_000))
	return seeds, dur, base
}
