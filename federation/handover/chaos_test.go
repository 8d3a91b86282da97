package handover

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/verbund/verbund/federation/envelope"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

// chaosConfig describes one fault run: A sends n handovers to B with
// `senders` concurrent clients while both nodes are killed and restarted
// at random points, crash points are hit inside the Service, and the
// network drops requests, responses and cuts bodies. B accepts some of the
// cases, so events flow back to A under the same faults.
type chaosConfig struct {
	n, senders int
	// Per mille probabilities.
	dropReq, dropResp, cut                int
	crashOutbox, crashInbox, crashReceipt int
	// restartEvery is the mean time between random restarts.
	restartEvery time.Duration
	sendPause    time.Duration // pause of each sender between sends
	rotate       bool          // rotate B's signing and encryption keys mid-run
	onlyRestartA bool          // random restarts hit the sender only
	acceptEvery  int           // B accepts every k-th case (0: none)
	// broken makes A (sender) or B (recipient) deliberately incorrect.
	brokenA, brokenB func(*testHooks)
	timeout          time.Duration
	// powerLoss makes every restart a power cut (powerloss_test.go): the
	// store loses every write after its last sync point.
	powerLoss *powerLoss
}

// testHooks is the chaos tests' faults: crash functions per crash point,
// and the deliberately broken variants the control runs must catch.
type testHooks struct {
	crashes map[failpoint]func(id string) error
	// skipDedupe: do not check or write dedupe records (fpDedupe).
	skipDedupe bool
	// asyncOutbox: answer SendHandover before the outbox write
	// (fpOutboxWrite), which runs a little later in the background.
	asyncOutbox bool
	// skipSync: no DB.Sync after a group commit (fpSync).
	skipSync bool
}

var _ faults = (*testHooks)(nil)

func (h *testHooks) crash(p failpoint, id string) error {
	if f := h.crashes[p]; f != nil {
		return f(id)
	}
	return nil
}

func (h *testHooks) skip(p failpoint) bool {
	return p == fpDedupe && h.skipDedupe || p == fpSync && h.skipSync
}

func (h *testHooks) detach(p failpoint, commit func()) bool {
	if p != fpOutboxWrite || !h.asyncOutbox {
		return false
	}
	go func() {
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		commit()
	}()
	return true
}

type chaosResult struct {
	violations   []string
	restarts     [2]int64
	crashes      int64
	net          string
	statsA       Stats
	statsB       Stats
	receiptKIDs  map[string]int
	events       int
	elapsed      time.Duration
	acknowledged int
}

func runChaos(t *testing.T, cc chaosConfig) chaosResult {
	t.Helper()
	start := time.Now()
	reg := newRegistry()
	live := &liveness{}
	ftA := &faultyTransport{next: http.DefaultTransport.(*http.Transport).Clone(), dropReq: cc.dropReq, dropResp: cc.dropResp, cut: cc.cut}
	ftB := &faultyTransport{next: http.DefaultTransport.(*http.Transport).Clone(), dropReq: cc.dropReq, dropResp: cc.dropResp, cut: cc.cut}
	ftA.enabled.Store(true)
	ftB.enabled.Store(true)
	var faults atomic.Bool // crash points active
	faults.Store(true)
	var crashes atomic.Int64
	restartReq := make(chan *node, 64)
	var a, b *node
	crash := func(n **node, permille int) func(string) error {
		return func(string) error {
			if !faults.Load() || rand.IntN(1000) >= permille {
				return nil
			}
			crashes.Add(1)
			select {
			case restartReq <- *n:
			default:
			}
			return errCrash
		}
	}
	hooksA := &testHooks{crashes: map[failpoint]func(string) error{
		fpAfterOutboxWrite: crash(&a, cc.crashOutbox), fpBeforeReceiptStore: crash(&a, cc.crashReceipt),
		fpAfterInboxWrite: crash(&a, cc.crashInbox)}}
	hooksB := &testHooks{crashes: map[failpoint]func(string) error{
		fpAfterInboxWrite: crash(&b, cc.crashInbox), fpBeforeReceiptStore: crash(&b, cc.crashReceipt),
		fpAfterOutboxWrite: crash(&b, cc.crashOutbox)}}
	if cc.powerLoss != nil {
		hooksA.crashes[fpSynced] = func(string) error { return cc.powerLoss.syncPoint(a) }
		hooksB.crashes[fpSynced] = func(string) error { return cc.powerLoss.syncPoint(b) }
	}
	if cc.brokenA != nil {
		cc.brokenA(hooksA)
	}
	if cc.brokenB != nil {
		cc.brokenB(hooksB)
	}
	var setup func(*node)
	if cc.powerLoss != nil {
		setup = cc.powerLoss.attach
	}
	a = newNodeWith(t, reg, orgA, func(c *Config) {
		c.Liveness, c.Dialer, c.faults = live, &dialer{hc: &http.Client{Transport: ftA}}, hooksA
	}, setup)
	b = newNodeWith(t, reg, orgB, func(c *Config) {
		c.Liveness, c.Dialer, c.faults = live, &dialer{hc: &http.Client{Transport: ftB}}, hooksB
	}, setup)
	restart := func(n *node, between func()) {
		live.set(n.org, false)
		if cc.powerLoss != nil {
			between = cc.powerLoss.cutThen(n, between)
		}
		n.restart(between)
		live.set(n.org, true)
	}

	// Senders: every logical handover i is sent with its own idempotency
	// key and retried until acknowledged.
	ctx := context.Background()
	acked := make([]string, cc.n)
	var next atomic.Int64
	var sent atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(cc.timeout)
	for range cc.senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= cc.n {
					return
				}
				if cc.sendPause > 0 {
					time.Sleep(cc.sendPause)
				}
				req := caseRequest(orgB, i)
				req.IdempotencyKey = fmt.Sprintf("chaos-%08d-idempotency", i)
				for time.Now().Before(deadline) {
					res, err := a.s().SendHandover(ctx, req)
					if err == nil {
						acked[i] = res.HandoverId
						sent.Add(1)
						break
					}
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	// B's case worker accepts some cases (events flow back to A).
	stopWorker := make(chan struct{})
	var workerWG sync.WaitGroup
	accepted := map[string]bool{}
	if cc.acceptEvery > 0 {
		workerWG.Add(1)
		go func() {
			defer workerWG.Done()
			for {
				select {
				case <-stopWorker:
					return
				case <-time.After(20 * time.Millisecond):
				}
				s := b.svc.Load()
				if s == nil {
					continue
				}
				res, err := s.ListInbox(ctx, &federationv1.ListInboxRequest{State: federationv1.CaseState_CASE_STATE_RECEIVED, PageSize: 1000})
				if err != nil {
					continue
				}
				for _, c := range res.Cases {
					if accepted[c.HandoverId] || hash(c.HandoverId)%cc.acceptEvery != 0 {
						continue
					}
					if _, err := s.AcceptCase(ctx, &federationv1.AcceptCaseRequest{HandoverId: c.HandoverId}); err == nil {
						accepted[c.HandoverId] = true
					}
				}
			}
		}()
	}
	// Chaos: random restarts of either node, restarts requested by crash
	// points, and one key rotation of B half-way.
	sendersDone := make(chan struct{})
	go func() { wg.Wait(); close(sendersDone) }()
	rotated := false
	rotate := func() {
		newSig := sigKey(orgB + "-sig-2")
		newEnc := encKey(t, orgB+"-enc-2")
		reg.publishSig(orgB, newSig, time.Now().Add(-time.Minute))
		reg.retire(b.sig.KeyID, time.Now().Add(time.Hour)) // still valid for its receipts
		b.oldEnc = append(b.oldEnc, b.enc)
		b.sig, b.enc = newSig, newEnc
		reg.publishEnc(orgB, newEnc)
	}
	// The chaos goes on until everything sent is delivered (or time is up).
	settled := func() bool {
		select {
		case <-sendersDone:
		default:
			return false
		}
		return a.pending() == 0 && b.pending() == 0
	}
	// B's keys are rotated (at a restart) as soon as a third of the cases
	// arrived, so that receipts are signed by both keys.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	nextRestart := time.Now().Add(time.Duration(rand.Int64N(int64(2*cc.restartEvery) + 1)))
	for !settled() && time.Now().Before(deadline) {
		select {
		case n := <-restartReq:
			restart(n, nil)
			continue
		case <-tick.C:
		}
		if cc.rotate && !rotated && b.totalStats().Received >= uint64(cc.n/3) {
			restart(b, rotate)
			rotated = true
		}
		if time.Now().After(nextRestart) {
			n := a
			if !cc.onlyRestartA && rand.IntN(2) == 0 {
				n = b
			}
			restart(n, nil)
			nextRestart = time.Now().Add(time.Duration(rand.Int64N(int64(2*cc.restartEvery) + 1)))
		}
	}
	if cc.rotate && !rotated {
		t.Errorf("B's keys were not rotated during the run")
	}
	// Heal: no more faults; let everything drain.
	faults.Store(false)
	ftA.enabled.Store(false)
	ftB.enabled.Store(false)
	for len(restartReq) > 0 {
		restart(<-restartReq, nil)
	}
	close(stopWorker)
	workerWG.Wait()
	drained := func() bool { return pendingCount(t, a.s()) == 0 && pendingCount(t, b.s()) == 0 }
	until := time.Now().Add(30 * time.Second)
	for !drained() && time.Now().Before(until) {
		time.Sleep(20 * time.Millisecond)
	}
	// Let asynchronous (broken) writes land before checking.
	time.Sleep(50 * time.Millisecond)
	pub := func() bool { return published(reg, a) && published(reg, b) }
	if cc.brokenA != nil || cc.brokenB != nil {
		// A broken node may never publish its head again (a no-fsync store
		// that lost its chain): a finding for the checker, not a test error.
		for until := time.Now().Add(2 * time.Second); !pub() && time.Now().Before(until); {
			time.Sleep(5 * time.Millisecond)
		}
	} else {
		waitFor(t, 10*time.Second, "audit publication", pub)
	}

	r := chaosResult{
		restarts: [2]int64{a.restarts.Load(), b.restarts.Load()}, crashes: crashes.Load(),
		net: fmt.Sprintf("dropped requests %d, dropped responses %d, cut bodies %d",
			ftA.droppedReq.Load()+ftB.droppedReq.Load(), ftA.droppedResp.Load()+ftB.droppedResp.Load(), ftA.cutCnt.Load()+ftB.cutCnt.Load()),
		statsA: a.totalStats(), statsB: b.totalStats(), elapsed: time.Since(start),
	}
	for _, id := range acked {
		if id != "" {
			r.acknowledged++
		}
	}
	r.violations, r.receiptKIDs, r.events = checkExactlyOnce(t, reg, a.s(), b.s(), acked)
	return r
}

func published(reg *registry, n *node) bool {
	head := n.s().Stats().AuditHead
	seq, hash, err := auditFor{reg, n.org}.PublishedAuditHead(context.Background(), n.org)
	return head.Seq == 0 || err == nil && seq == head.Seq && hash == head.Hash
}

func hash(s string) int {
	h := 0
	for i := 0; i < len(s); i++ {
		h = h*31 + int(s[i])
	}
	if h < 0 {
		h = -h
	}
	return h
}

// checkExactlyOnce checks the end state of a run between sender a and
// recipient b and returns every violation of exactly-once delivery:
//   - every acknowledged handover is in a's outbox, delivered, with a
//     receipt that verifies offline; the outbox holds exactly one handover
//     per logical send (idempotency keys);
//   - b's inbox holds each of these jtis exactly once (by arrival), with
//     the same envelope digest, and nothing else;
//   - the audit logs show each handover sent and delivered once by a and
//     received once by b; the same for events b sent to a;
//   - both audit logs verify against the published heads.
func checkExactlyOnce(t *testing.T, reg *registry, a, b *Service, acked []string) ([]string, map[string]int, int) {
	t.Helper()
	ctx := context.Background()
	var v []string
	add := func(format string, args ...any) {
		if len(v) < 50 {
			v = append(v, fmt.Sprintf(format, args...))
		}
	}
	kids := map[string]int{}
	out := map[string]*federationv1.OutboxEntry{}
	nHandovers := 0
	for _, e := range outbox(t, a) {
		if e.Kind != federationv1.OutboxKind_OUTBOX_KIND_HANDOVER {
			continue
		}
		nHandovers++
		out[e.Id] = e
		if e.State != federationv1.OutboxState_OUTBOX_STATE_DELIVERED {
			add("handover %s not delivered: %v (%s)", e.Id, e.State, e.LastError)
			continue
		}
		if _, err := envelope.VerifyReceipt(ctx, e.Receipt, reg, orgB, digestOf(t, e.EnvelopeSha256), MomentFromProto(e.ReceiptRecorded, time.Now())); err != nil {
			add("receipt of %s does not verify offline: %v", e.Id, err)
		}
		kids[receiptKID(e.Receipt)]++
	}
	for i, id := range acked {
		if id == "" {
			add("send %d was never acknowledged", i)
			continue
		}
		if out[id] == nil {
			add("acknowledged handover %s (send %d) is not in the outbox: lost", id, i)
		}
	}
	if nHandovers != len(acked) {
		add("outbox holds %d handovers for %d sends", nHandovers, len(acked))
	}
	arrivals := map[string]int{}
	for _, c := range inbox(t, b) {
		arrivals[c.HandoverId]++
		e := out[c.HandoverId]
		if e == nil {
			add("inbox of B has %s, which A never sent", c.HandoverId)
		} else if e.EnvelopeSha256 != c.EnvelopeSha256 {
			add("inbox of B has %s with digest %s, A sent %s", c.HandoverId, c.EnvelopeSha256, e.EnvelopeSha256)
		}
	}
	for id := range out {
		if arrivals[id] != 1 {
			add("handover %s arrived %d times in B's inbox", id, arrivals[id])
		}
	}
	auditA, errA := a.AuditLog(0, 0)
	auditB, errB := b.AuditLog(0, 0)
	if errA != nil || errB != nil {
		add("audit log unreadable: %v %v", errA, errB)
	}
	count := func(entries []AuditEntry, kind string) map[string]int {
		m := map[string]int{}
		for _, e := range entries {
			if e.Kind == kind {
				m[e.ID]++
			}
		}
		return m
	}
	sentA, delivA, recvB := count(auditA, AuditHandoverSent), count(auditA, AuditHandoverDelivered), count(auditB, AuditHandoverReceived)
	for id := range out {
		if sentA[id] != 1 || delivA[id] != 1 || recvB[id] != 1 {
			add("audit for %s: sent %d, delivered %d (A), received %d (B); want 1 each", id, sentA[id], delivA[id], recvB[id])
		}
	}
	if len(recvB) != len(out) || len(sentA) != len(out) {
		add("audit: A logged %d handovers sent, B %d received, outbox has %d", len(sentA), len(recvB), len(out))
	}
	// Events B -> A.
	evSentB, evDelivB, evRecvA := count(auditB, AuditEventSent), count(auditB, AuditEventDelivered), count(auditA, AuditEventReceived)
	events := 0
	for _, e := range outbox(t, b) {
		if e.Kind != federationv1.OutboxKind_OUTBOX_KIND_EVENT {
			continue
		}
		events++
		if e.State != federationv1.OutboxState_OUTBOX_STATE_DELIVERED {
			add("event %s not delivered: %v", e.Id, e.State)
			continue
		}
		if _, err := envelope.VerifyReceipt(ctx, e.Receipt, reg, orgA, digestOf(t, e.EnvelopeSha256), MomentFromProto(e.ReceiptRecorded, time.Now())); err != nil {
			add("receipt of event %s: %v", e.Id, err)
		}
		if evSentB[e.Id] != 1 || evDelivB[e.Id] != 1 || evRecvA[e.Id] != 1 {
			add("audit for event %s: sent %d, delivered %d (B), received %d (A)", e.Id, evSentB[e.Id], evDelivB[e.Id], evRecvA[e.Id])
		}
	}
	if len(evRecvA) != events {
		add("A received %d distinct events, B sent %d", len(evRecvA), events)
	}
	for name, s := range map[string]*Service{"A": a, "B": b} {
		if rep, err := s.VerifyAudit(ctx); err != nil {
			add("audit log of %s does not verify: %v", name, err)
		} else if len(rep.Published) == 0 {
			add("audit log of %s: no published head checked", name)
		}
	}
	sort.Strings(v)
	return v, kids, events
}

func receiptKID(jws string) string {
	h, _, _ := strings.Cut(jws, ".")
	b, _ := base64.RawURLEncoding.DecodeString(h)
	var hdr struct {
		Kid string `json:"kid"`
	}
	_ = json.Unmarshal(b, &hdr)
	return hdr.Kid
}

func defaultChaos(short bool) chaosConfig {
	cc := chaosConfig{
		n: 2000, senders: 16,
		dropReq: 30, dropResp: 50, cut: 20,
		crashOutbox: 5, crashInbox: 10, crashReceipt: 10,
		restartEvery: 250 * time.Millisecond,
		rotate:       true, acceptEvery: 7,
		timeout: 90 * time.Second,
	}
	if short {
		cc.n, cc.restartEvery = 300, 100*time.Millisecond
	}
	return cc
}

// TestExactlyOnceUnderFaults: thousands of handovers while both nodes are
// killed and restarted at random points, crash points fire after the
// outbox write, after the inbox write (receipt not returned) and before
// the receipt is stored, and the network drops requests and responses and
// cuts bodies; B rotates its keys half-way. At the end every handover is
// in B's inbox exactly once, A holds a receipt for each that verifies
// offline (with B's old or new key), events went back exactly once, and
// both audit logs verify.
func TestExactlyOnceUnderFaults(t *testing.T) {
	cc := defaultChaos(testing.Short())
	r := runChaos(t, cc)
	t.Logf("%d handovers, %d events in %v; restarts A %d, B %d; crash points hit %d; %s",
		cc.n, r.events, r.elapsed.Round(time.Millisecond), r.restarts[0], r.restarts[1], r.crashes, r.net)
	t.Logf("A: %+v", r.statsA)
	t.Logf("B: %+v", r.statsB)
	t.Logf("receipts by B's key: %v", r.receiptKIDs)
	for _, v := range r.violations {
		t.Error(v)
	}
	if r.restarts[0] == 0 || r.restarts[1] == 0 || r.crashes == 0 || r.statsA.Retries == 0 || r.statsB.Duplicates == 0 {
		t.Errorf("the run did not exercise the faults: restarts %v, crashes %d, stats %+v", r.restarts, r.crashes, r.statsA)
	}
	if r.receiptKIDs[orgB+"-sig-1"] == 0 || r.receiptKIDs[orgB+"-sig-2"] == 0 {
		t.Errorf("key rotation did not happen mid-run: %v", r.receiptKIDs)
	}
	if r.events == 0 {
		t.Error("no events were exchanged")
	}
}

// TestExactlyOnceControlNoDedupe shows that the fault test can fail: with
// a recipient that skips its dedupe records, redeliveries after lost
// responses land in the inbox twice, and the checker must say so.
func TestExactlyOnceControlNoDedupe(t *testing.T) {
	cc := defaultChaos(true)
	cc.n, cc.rotate = 200, false
	cc.brokenB = func(h *testHooks) { h.skipDedupe = true }
	r := runChaos(t, cc)
	if len(r.violations) == 0 {
		t.Fatalf("broken recipient (no dedupe) not caught: %+v", r.statsB)
	}
	t.Logf("caught, %d violations, e.g. %q", len(r.violations), r.violations[0])
}

// TestExactlyOnceControlAsyncOutbox shows the same for a sender that
// answers SendHandover before its outbox write: a crash in between loses
// acknowledged handovers.
func TestExactlyOnceControlAsyncOutbox(t *testing.T) {
	cc := defaultChaos(true)
	cc.n, cc.senders, cc.sendPause, cc.rotate, cc.acceptEvery = 300, 4, 5*time.Millisecond, false, 0
	cc.restartEvery, cc.onlyRestartA = 40*time.Millisecond, true
	cc.brokenA = func(h *testHooks) { h.asyncOutbox = true }
	r := runChaos(t, cc)
	if len(r.violations) == 0 {
		t.Fatalf("broken sender (answers before the outbox write) not caught: %+v", r.statsA)
	}
	t.Logf("caught, %d violations, e.g. %q", len(r.violations), r.violations[0])
}
