package handover

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/dgraph-io/badger/v4"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

// statsTotal sums the buckets of s for one counterpart and direction.
func statsTotal(t testing.TB, s *Service, counterpart string, incoming bool) statsCounters {
	t.Helper()
	res, err := s.GetHandoverStats(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var c statsCounters
	for _, b := range res.GetBuckets() {
		if b.GetCounterpartId() != counterpart || b.GetIncoming() != incoming {
			continue
		}
		if b.GetOrganisationId() != s.OrgID() || b.GetLeikaKey() != leika || b.GetLengthMs() != time.Hour.Milliseconds() ||
			b.GetStartUnixMs()%time.Hour.Milliseconds() != 0 {
			t.Errorf("bucket %v", b)
		}
		c.Handovers += b.GetHandovers()
		c.Accepted += b.GetAccepted()
		c.Rejected += b.GetRejected()
		c.Completed += b.GetCompleted()
		c.Forwarded += b.GetForwarded()
		c.ProcSum += b.GetProcessingMsSum()
		c.ProcCount += b.GetProcessingCount()
		c.ProcMax = max(c.ProcMax, b.GetProcessingMsMax())
	}
	return c
}

func sameCounts(a, b statsCounters) bool {
	return a.Handovers == b.Handovers && a.Accepted == b.Accepted && a.Rejected == b.Rejected &&
		a.Completed == b.Completed && a.Forwarded == b.Forwarded && a.ProcCount == b.ProcCount
}

// TestHandoverStatistics: A hands five cases to B; B crashes once after
// taking the first one in (A redelivers: it counts once), gets a
// byte-identical redelivery and eight concurrent deliveries of the fifth
// (each counts once); B accepts one, rejects one, accepts
// and completes one, and forwards one to C. Each side counts its own
// direction, the processing times of the rejection and the completion,
// and after a restart the counts are the same (they are in the store).
func TestHandoverStatistics(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry()
	var crashed atomic.Bool
	hooksB := &testHooks{crashes: map[failpoint]func(string) error{
		fpAfterInboxWrite: func(string) error {
			if crashed.CompareAndSwap(false, true) {
				return errCrash // durable, but no receipt returned: A retries
			}
			return nil
		},
	}}
	live := &liveness{}
	fast := func(c *Config) { c.RetryMin, c.RetryMax = 10*time.Millisecond, 100*time.Millisecond }
	a := newNode(t, reg, orgA, func(c *Config) { fast(c); c.Liveness = live })
	b := newNode(t, reg, orgB, func(c *Config) { fast(c); c.faults = hooksB })
	c := newNode(t, reg, orgC, fast)

	var ids []string
	for i := range 4 {
		res, err := a.client().SendHandover(ctx, connect.NewRequest(caseRequest(orgB, i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.Msg.HandoverId)
	}
	for _, id := range ids {
		waitDelivered(t, a, id)
	}
	if !crashed.Load() {
		t.Fatal("the crash point was not reached")
	}
	// A byte-identical redelivery is answered from the dedupe record.
	token := func(id string) string {
		var tok []byte
		if err := a.s().view(func(txn *badger.Txn) error {
			it, err := txn.Get(key(pOutboxToken, id))
			if err != nil {
				return err
			}
			tok, err = it.ValueCopy(nil)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return string(tok)
	}
	if _, err := b.s().DeliverHandover(ctx, token(ids[0])); err != nil {
		t.Fatal(err)
	}
	// Concurrent deliveries of one token (A's deliverer paused): the ops
	// that find the token taken in by another count nothing.
	live.set(orgB, false)
	res, err := a.s().SendHandover(ctx, caseRequest(orgB, 9))
	if err != nil {
		t.Fatal(err)
	}
	tok := token(res.HandoverId)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.s().DeliverHandover(ctx, tok); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	live.set(orgB, true)
	if got := statsTotal(t, b.s(), orgA, true); got.Handovers != 5 {
		t.Fatalf("B counted %d incoming handovers, want 5 (one crash, one redelivery, eight concurrent deliveries)", got.Handovers)
	}
	waitDelivered(t, a, res.HandoverId)

	bc := b.client()
	if _, err := bc.AcceptCase(ctx, connect.NewRequest(&federationv1.AcceptCaseRequest{HandoverId: ids[0]})); err != nil {
		t.Fatal(err)
	}
	if _, err := bc.RejectCase(ctx, connect.NewRequest(&federationv1.RejectCaseRequest{HandoverId: ids[1],
		Problem: &federationv1.Problem{Type: "https://verbund.example/probleme/unvollstaendig", Title: "Unvollständig"}})); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // a measurable processing time
	if _, err := bc.AcceptCase(ctx, connect.NewRequest(&federationv1.AcceptCaseRequest{HandoverId: ids[2]})); err != nil {
		t.Fatal(err)
	}
	if _, err := bc.CompleteCase(ctx, connect.NewRequest(&federationv1.CompleteCaseRequest{HandoverId: ids[2]})); err != nil {
		t.Fatal(err)
	}
	// Repeating a step changes nothing.
	if _, err := bc.CompleteCase(ctx, connect.NewRequest(&federationv1.CompleteCaseRequest{HandoverId: ids[2]})); err != nil {
		t.Fatal(err)
	}
	fw, err := bc.ForwardCase(ctx, connect.NewRequest(&federationv1.ForwardCaseRequest{HandoverId: ids[3], RecipientOrganisationId: orgC}))
	if err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, b, fw.Msg.HandoverId)

	wantIn := statsCounters{Handovers: 5, Accepted: 2, Rejected: 1, Completed: 1, Forwarded: 1, ProcCount: 2}
	gotIn := statsTotal(t, b.s(), orgA, true)
	if !sameCounts(gotIn, wantIn) || gotIn.ProcMax < 5 || gotIn.ProcSum < gotIn.ProcMax {
		t.Fatalf("B incoming from A: %+v, want %+v with processing max >= 5 ms", gotIn, wantIn)
	}
	if got := statsTotal(t, b.s(), orgC, false); !sameCounts(got, statsCounters{Handovers: 1}) {
		t.Fatalf("B outgoing to C: %+v", got)
	}
	if got := statsTotal(t, c.s(), orgB, true); !sameCounts(got, statsCounters{Handovers: 1}) {
		t.Fatalf("C incoming from B: %+v", got)
	}
	// A learns the decisions from B's events.
	wantOut := statsCounters{Handovers: 5, Accepted: 2, Rejected: 1, Completed: 1, Forwarded: 1, ProcCount: 2}
	waitFor(t, 10*time.Second, "A's outgoing statistics", func() bool {
		return sameCounts(statsTotal(t, a.s(), orgB, false), wantOut)
	})
	if got := statsTotal(t, a.s(), orgB, true); got != (statsCounters{}) {
		t.Fatalf("A incoming from B: %+v, want nothing", got)
	}

	// Persisted: the same after a restart.
	b.restart(nil)
	if got := statsTotal(t, b.s(), orgA, true); got != gotIn {
		t.Fatalf("B after restart: %+v, before %+v", got, gotIn)
	}
	// since: a later start leaves the current buckets out.
	later, err := b.s().GetHandoverStats(ctx, time.Now().Add(2*time.Hour))
	if err != nil || len(later.GetBuckets()) != 0 {
		t.Fatalf("stats since in two hours: %v, %v", later, err)
	}
}
