package node_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node/connecterr"
	"github.com/verbund/verbund/node/diskspace"
	"github.com/verbund/verbund/node/nodetest"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Injected disks: free space per node, set by the test. Plenty is far
// above the default reserve (256 MiB); nearlyFull is below the reserve but
// above the floor (128 MiB), belowFloor below both.
const (
	plenty     = 1 << 40
	nearlyFull = 200 << 20
	belowFloor = 40 << 20
)

type fakeDisks struct{ free [8]atomic.Uint64 }

func newFakeDisks() *fakeDisks {
	d := &fakeDisks{}
	for i := range d.free {
		d.free[i].Store(plenty)
	}
	return d
}

func (d *fakeDisks) measure(i int, _ string) (uint64, error) { return d.free[i].Load(), nil }
func (d *fakeDisks) fill(i int)                              { d.free[i].Store(nearlyFull) }
func (d *fakeDisks) drain(i int)                             { d.free[i].Store(belowFloor) }
func (d *fakeDisks) clear(i int)                             { d.free[i].Store(plenty) }

// checkDiskFull fails the test unless err is a refusal for lack of disk
// space as a client sees it: resource_exhausted, marked disk full, the
// message naming dir (the data dir of the node whose disk is full) and the
// free space against the reserve.
func checkDiskFull(t *testing.T, what string, err error, dir string) {
	t.Helper()
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !connecterr.IsDiskFull(err) {
		t.Fatalf("%s: got %v (code %v), want resource_exhausted marked disk full", what, err, connect.CodeOf(err))
	}
	for _, want := range []string{dir, "200.0 MiB free", "reserve of 256.0 MiB"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: message %q does not name %q", what, err, want)
		}
	}
}

// TestDiskFullLeaderRefusesWrites: three voters; writers publish through
// every node all along. The leader's disk "fills" (its injected free space
// drops below the reserve): writes through any node are refused with
// resource_exhausted naming the leader's data dir and its free space, while
// linearizable reads keep being answered everywhere and the leader keeps
// its role; in process, a follower's Publish and the leader's key
// rotation are refused with diskspace.ErrDiskFull. Space "returns": writes are accepted again without a restart.
// A follower's full disk refuses nothing it forwards, only what it would
// write itself (a key rotation). At the end every
// acknowledged write is on every node, and all nodes hold the same state.
func TestDiskFullLeaderRefusesWrites(t *testing.T) {
	disks := newFakeDisks()
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Seed: 11, DiskFree: disks.measure})
	l := c.WaitLeader(10 * time.Second)
	key := c.OperatorKey()

	// Writers: each publishes new organisations through the nodes in turn
	// and keeps the acknowledged ones; refusals for disk space are counted.
	// A write that began after the first refusal and ended before space
	// returned must have been refused (lateAcks counts those that were not).
	var (
		mu       sync.Mutex
		acked    []string
		refused  atomic.Int64
		seq      atomic.Int64
		writeErr atomic.Pointer[error]
		full     atomic.Bool
		closedAt atomic.Int64 // unix ns of the first refusal's answer
		lateAcks atomic.Int64
	)
	stop := make(chan struct{})
	var writers sync.WaitGroup
	for w := range 3 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("0916%08d", seq.Add(1))
				began, fullThen := time.Now().UnixNano(), full.Load()
				_, err := publishVia(t, c, (w+k)%3, orgCmd(t, key, id, "disk test "+id))
				switch code := connect.CodeOf(err); {
				case err == nil:
					if c0 := closedAt.Load(); fullThen && full.Load() && c0 != 0 && began > c0 {
						lateAcks.Add(1)
					}
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				case connecterr.IsDiskFull(err):
					refused.Add(1)
					closedAt.CompareAndSwap(0, time.Now().UnixNano())
					time.Sleep(20 * time.Millisecond)
				case code == connect.CodeUnavailable || code == connect.CodeUnknown || code == connect.CodeDeadlineExceeded:
					// A retry with a new command is harmless; an unknown
					// outcome (or none in time) is not counted as
					// acknowledged.
				default:
					writeErr.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	ackedNow := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	if err := c.WaitFor(10*time.Second, func() error {
		if n := ackedNow(); n < 20 {
			return fmt.Errorf("%d writes acknowledged", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The full phase. An election during it that the full disk did not
	// cause (a loaded machine, 200 ms timeouts) voids the attempt: the
	// disk is cleared and the phase repeated with the new leader, at most
	// three times. An election the full disk causes happens every time.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var before int
	phase := func(attempt int) (done bool) {
		l = c.WaitLeader(10 * time.Second)
		term := l.Node().Raft().CurrentTerm()
		elected := func() bool { return c.Leader() != l || l.Node().Raft().CurrentTerm() != term }
		void := func(what string, err error) bool {
			t.Helper()
			if elected() {
				t.Logf("attempt %d void: an election during the phase (%s: %v)", attempt, what, err)
				return false
			}
			t.Fatalf("%s: %v", what, err)
			return false
		}
		closedAt.Store(0)
		lateAcks.Store(0)
		refusedBefore := refused.Load()
		full.Store(true)
		disks.fill(l.Index)
		defer func() {
			full.Store(false)
			disks.clear(l.Index)
		}()
		if err := c.WaitFor(5*time.Second, func() error {
			if refused.Load() == refusedBefore {
				return errors.New("no write refused yet")
			}
			return nil
		}); err != nil {
			return void("leader's disk full", err)
		}
		before = ackedNow()
		for i := range c.Nodes {
			_, err := publishVia(t, c, i, orgCmd(t, key, fmt.Sprintf("0917%08d", i), "refused"))
			if connect.CodeOf(err) != connect.CodeResourceExhausted && elected() {
				return void(fmt.Sprintf("write via node %d", i), err)
			}
			checkDiskFull(t, fmt.Sprintf("write via node %d (leader %d)", i, l.Index), err, l.Dir)
		}
		// In process too: a follower's Publish (forwarded) and the leader's
		// key rotation (it writes key files first) are refused as
		// ErrDiskFull.
		fo := c.Nodes[(l.Index+1)%3].Node()
		if _, _, err := fo.Publish(ctx, []string{orgCmd(t, key, "091700000099", "refused")}); !errors.Is(err, diskspace.ErrDiskFull) {
			return void("in-process Publish on a follower with the leader's disk full (want ErrDiskFull)", err)
		}
		if _, err := l.Node().RotateKeys(ctx, time.Hour, false); !errors.Is(err, diskspace.ErrDiskFull) {
			return void("key rotation on a node with a full disk (want ErrDiskFull)", err)
		}
		mu.Lock()
		last := acked[len(acked)-1]
		mu.Unlock()
		for round := range 5 {
			for i := range c.Nodes {
				res, err := readOrg(c, i, last, &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE})
				if err == nil && !res.GetRead().GetLinearizable() {
					err = errors.New("answered, but not linearizable")
				}
				if err != nil {
					return void(fmt.Sprintf("round %d: linearizable read of %s on node %d with the leader's disk full", round, last, i), err)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		if n := lateAcks.Load(); n > 0 {
			return void("writes begun after the first refusal acknowledged while the leader's disk was full",
				fmt.Errorf("%d of them", n))
		}
		if elected() {
			return void("the leader did not keep its role", fmt.Errorf("leader %v, term %d (was %s, term %d)",
				c.Leader(), l.Node().Raft().CurrentTerm(), l.ID, term))
		}
		t.Logf("leader %s's disk full: %d writes refused, %d acknowledged before", l.ID, refused.Load()-refusedBefore, before)
		return true
	}
	for attempt := 1; !phase(attempt); attempt++ {
		if attempt == 3 {
			t.Fatal("three attempts at the full phase voided by elections")
		}
	}

	if err := c.WaitFor(5*time.Second, func() error {
		if n := ackedNow(); n < before+20 {
			return fmt.Errorf("%d writes acknowledged since space returned", n-before)
		}
		return nil
	}); err != nil {
		t.Fatalf("space returned, writes not accepted again: %v", err)
	}
	// A follower's full disk refuses nothing it forwards: the leader, whose
	// disk has room, decides.
	f := c.Nodes[(l.Index+1)%3]
	disks.fill(f.Index)
	time.Sleep(300 * time.Millisecond) // the follower's next measurement
	if err := publishRetry(t, c, f.Index, orgCmd(t, key, "091800000001", "via a full follower")); err != nil {
		t.Fatalf("write via follower %s with its disk full: %v", f.ID, err)
	}
	// But it refuses a key rotation: the new keys go to its own disk first.
	if _, err := f.Node().RotateKeys(ctx, time.Hour, false); !errors.Is(err, diskspace.ErrDiskFull) {
		t.Fatalf("key rotation on follower %s with its disk full: %v, want ErrDiskFull", f.ID, err)
	}
	mu.Lock()
	acked = append(acked, "091800000001")
	mu.Unlock()
	disks.clear(f.Index)
	close(stop)
	writers.Wait()
	if e := writeErr.Load(); e != nil {
		t.Fatalf("unexpected write error: %v", *e)
	}

	if err := c.WaitCaughtUp(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, m := range c.Nodes {
		for _, id := range acked {
			if _, _, err := m.Node().Reader().Organisation(id); err != nil {
				t.Fatalf("acknowledged write %s missing on node %d: %v", id, i, err)
			}
		}
	}
	st := c.EnsureSame(t)
	t.Logf("%d writes acknowledged, all present on %d nodes at index %d; %d refused for disk space", len(acked), st.Servers, st.Index, refused.Load())
}

// TestDiskFullHandovers: the sender's disk fills: SendHandover is refused
// with resource_exhausted naming its data dir, and accepted again once
// space returns. Then the recipient's disk fills: a handover sent to it is
// refused at delivery (the sender keeps it pending and retries, it does
// not give up), and once space returns it is delivered, exactly once.
func TestDiskFullHandovers(t *testing.T) {
	disks := newFakeDisks()
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Seed: 12, DiskFree: disks.measure})
	const a, b = 1, 2 // sender, recipient
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	orgB := c.Nodes[b].Node().Config().OrgID
	for _, i := range []int{a, b} {
		if _, err := c.Onboard(ctx, i, "Gemeinde "+c.Nodes[i].ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitCaughtUp(15 * time.Second); err != nil {
		t.Fatal(err)
	}

	// The sender's disk is full: sends refused, then accepted again.
	disks.fill(a)
	time.Sleep(300 * time.Millisecond) // the guard's next measurement
	_, err := sendHandover(ctx, c.Handover(a), orgB, 1)
	checkDiskFull(t, "SendHandover with the sender's disk full", err, c.Nodes[a].Dir)
	if n := len(outbox(ctx, c.Handover(a), 0)); n != 0 {
		t.Fatalf("%d outbox entries after a refused send", n)
	}
	disks.clear(a)
	var first *federationv1.SendHandoverResponse
	if err := c.WaitFor(5*time.Second, func() error {
		var err error
		first, err = sendHandover(ctx, c.Handover(a), orgB, 1)
		return err
	}); err != nil {
		t.Fatalf("space returned, send still refused: %v", err)
	}
	if err := c.WaitFor(10*time.Second, func() error { return delivered(ctx, c, a, first.GetHandoverId()) }); err != nil {
		t.Fatal(err)
	}

	// The recipient's disk is full: the delivery is refused and retried.
	disks.fill(b)
	time.Sleep(300 * time.Millisecond) // the guard's next measurement
	second, err := sendHandover(ctx, c.Handover(a), orgB, 2)
	if err != nil {
		t.Fatal(err)
	}
	id := second.GetHandoverId()
	if err := c.WaitFor(10*time.Second, func() error {
		e := outboxEntry(ctx, c, a, id)
		if e == nil || e.GetAttempts() < 2 {
			return fmt.Errorf("outbox entry %v: want at least 2 refused attempts", e)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e := outboxEntry(ctx, c, a, id)
	if e.GetState() != federationv1.OutboxState_OUTBOX_STATE_PENDING || !strings.Contains(e.GetLastError(), "disk full") {
		t.Fatalf("with the recipient's disk full the entry is %v (last error %q), want pending after a disk full refusal", e.GetState(), e.GetLastError())
	}
	if n := countInbox(ctx, c, b, id); n != 0 {
		t.Fatalf("handover in the recipient's inbox %d times while its disk is full", n)
	}
	attempts := e.GetAttempts()
	disks.clear(b)
	if err := c.WaitFor(20*time.Second, func() error { return delivered(ctx, c, a, id) }); err != nil {
		t.Fatalf("space returned at the recipient: %v", err)
	}
	if n := countInbox(ctx, c, b, id); n != 1 {
		t.Fatalf("handover in the recipient's inbox %d times, want exactly once", n)
	}
	if n := countInbox(ctx, c, b, first.GetHandoverId()); n != 1 {
		t.Fatalf("first handover in the recipient's inbox %d times, want exactly once", n)
	}
	t.Logf("delivery refused %d times for the recipient's full disk, then delivered once", attempts)
}

func outboxEntry(ctx context.Context, c *nodetest.Cluster, i int, id string) *federationv1.OutboxEntry {
	for _, e := range outbox(ctx, c.Handover(i), 0) {
		if e.GetId() == id {
			return e
		}
	}
	return nil
}

func delivered(ctx context.Context, c *nodetest.Cluster, i int, id string) error {
	e := outboxEntry(ctx, c, i, id)
	if e == nil || e.GetState() != federationv1.OutboxState_OUTBOX_STATE_DELIVERED || e.GetReceipt() == "" {
		return fmt.Errorf("handover %s not delivered: %v", id, e)
	}
	return nil
}

func countInbox(ctx context.Context, c *nodetest.Cluster, i int, id string) int {
	n := 0
	for _, cs := range inbox(ctx, c.Handover(i)) {
		if cs.GetHandoverId() == id {
			n++
		}
	}
	return n
}

// TestDiskFullFollowerStopsAppending: a follower's disk drops below the
// floor (half the reserve). It takes no more Raft entries (so its stores
// stop growing before badger meets ENOSPC), but stays in the cluster: the
// leader and the third voter keep committing writes, the follower keeps
// its vote and serves reads of what it has. When space returns it catches
// up by itself, with every acknowledged write.
func TestDiskFullFollowerStopsAppending(t *testing.T) {
	disks := newFakeDisks()
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Seed: 13, DiskFree: disks.measure})
	l := c.WaitLeader(10 * time.Second)
	f := c.Nodes[(l.Index+1)%3]
	key := c.OperatorKey()
	var acked []string
	write := func(via int, id string) {
		t.Helper()
		if err := publishRetry(t, c, via, orgCmd(t, key, id, "org "+id)); err != nil {
			t.Fatalf("write %s via node %d: %v", id, via, err)
		}
		acked = append(acked, id)
	}
	for k := range 10 {
		write(k%3, fmt.Sprintf("0919%08d", k))
	}
	if err := c.WaitCaughtUp(10 * time.Second); err != nil {
		t.Fatal(err)
	}

	disks.drain(f.Index)
	time.Sleep(300 * time.Millisecond) // the follower's next measurement
	last := f.Node().Raft().LastIndex()
	for k := 10; k < 40; k++ {
		write(k%3, fmt.Sprintf("0919%08d", k)) // also through the full follower: forwarded
	}
	if got := f.Node().Raft().LastIndex(); got != last {
		t.Fatalf("follower %s below the floor appended to its Raft log: last index %d -> %d", f.ID, last, got)
	}
	if lead := l.Node().Raft().LastIndex(); lead <= last {
		t.Fatalf("leader's log did not advance (%d)", lead)
	}
	if st := f.Node().Raft().State(); st == raft.Leader || st == raft.Shutdown {
		t.Fatalf("follower %s below the floor is %v", f.ID, st)
	}
	cf := l.Node().Raft().GetConfiguration()
	if err := cf.Error(); err != nil || !slices.ContainsFunc(cf.Configuration().Servers, func(s raft.Server) bool {
		return s.ID == raft.ServerID(f.ID) && s.Suffrage == raft.Voter
	}) {
		t.Fatalf("follower %s below the floor is no longer a voter: %v %v", f.ID, cf.Configuration(), err)
	}
	if _, err := readOrg(c, f.Index, acked[0], nil); err != nil {
		t.Fatalf("read on the full follower: %v", err)
	}

	disks.clear(f.Index)
	if err := c.WaitCaughtUp(20 * time.Second); err != nil {
		t.Fatalf("follower did not catch up once space returned: %v", err)
	}
	for _, id := range acked {
		if _, _, err := f.Node().Reader().Organisation(id); err != nil {
			t.Fatalf("acknowledged write %s missing on the follower after catching up: %v", id, err)
		}
	}
	st := c.EnsureSame(t)
	t.Logf("follower %s below the floor held its log at %d while %d writes committed; caught up to %d", f.ID, last, len(acked)-10, st.Index)
}

// publishRetry publishes one signed command through node i, repeating the
// same command (its id makes a repeat harmless) while the outcome is
// unknown or no leader answers, for up to 15 seconds.
func publishRetry(t *testing.T, c *nodetest.Cluster, i int, jws string) error {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := publishVia(t, c, i, jws)
		var ce *connect.Error
		if !errors.As(err, &ce) { // nil, or the command's own error result
			return err
		}
		switch ce.Code() {
		case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeDeadlineExceeded:
			if time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				continue
			}
		}
		return err
	}
}
