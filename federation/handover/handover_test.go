package handover

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/dgraph-io/badger/v4"

	"github.com/verbund/verbund/federation/envelope"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

func digestOf(t testing.TB, h string) [32]byte {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad digest %q", h)
	}
	var d [32]byte
	copy(d[:], b)
	return d
}

func outboxEntry(t testing.TB, s *Service, id string) *federationv1.OutboxEntry {
	t.Helper()
	for _, e := range outbox(t, s) {
		if e.Id == id {
			return e
		}
	}
	return nil
}

func waitDelivered(t testing.TB, n *node, id string) *federationv1.OutboxEntry {
	t.Helper()
	var e *federationv1.OutboxEntry
	waitFor(t, 10*time.Second, "delivery of "+id, func() bool {
		e = outboxEntry(t, n.s(), id)
		return e != nil && e.State == federationv1.OutboxState_OUTBOX_STATE_DELIVERED
	})
	return e
}

func auditKinds(t testing.TB, s *Service) map[string]int {
	t.Helper()
	entries, err := s.AuditLog(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, e := range entries {
		m[e.Kind]++
	}
	return m
}

// TestHappyPath: a case goes A -> B, is accepted, forwarded to C, accepted
// and completed there; receipts verify offline; events flow back with
// receipts; TrackCase shows the whole verified timeline from any node.
func TestHappyPath(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry()
	a := newNode(t, reg, orgA, nil)
	b := newNode(t, reg, orgB, nil)
	c := newNode(t, reg, orgC, nil)

	req := caseRequest(orgB, 1)
	req.Attachments = []*federationv1.Attachment{{Name: "antrag.pdf", MediaType: "application/pdf", Data: []byte("%PDF-1.7 test")}}
	res, err := a.client().SendHandover(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	jti, code := res.Msg.HandoverId, res.Msg.TrackingCode
	if res.Msg.State != federationv1.OutboxState_OUTBOX_STATE_PENDING || !strings.HasPrefix(code, "VB-") {
		t.Fatalf("send: %v", res.Msg)
	}

	// Delivered, and the receipt verifies offline against the registry.
	e := waitDelivered(t, a, jti)
	r, err := envelope.VerifyReceipt(ctx, e.Receipt, reg, orgB, digestOf(t, e.EnvelopeSha256), MomentFromProto(e.ReceiptRecorded, time.Now()))
	if err != nil {
		t.Fatalf("receipt does not verify: %v", err)
	}
	if r.HandoverID != jti || r.Audience != orgA {
		t.Fatalf("receipt %+v", r)
	}

	// B has the case once, with data, attachment and the signed handover.
	cases := inbox(t, b.s())
	if len(cases) != 1 || cases[0].HandoverId != jti || cases[0].FromOrganisationId != orgA ||
		cases[0].State != federationv1.CaseState_CASE_STATE_RECEIVED || cases[0].TrackingCode != code {
		t.Fatalf("inbox of B: %v", cases)
	}
	got, err := b.client().GetCase(ctx, connect.NewRequest(&federationv1.GetCaseRequest{HandoverId: jti}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got.Msg.Case.CaseJson, "Erika") || len(got.Msg.Case.Attachments) != 1 ||
		got.Msg.Case.SignedHandover == "" || got.Msg.Case.Receipt != e.Receipt {
		t.Fatalf("case: %v", got.Msg.Case)
	}

	// Accept (idempotent), then a step the state does not allow.
	acc, err := b.client().AcceptCase(ctx, connect.NewRequest(&federationv1.AcceptCaseRequest{HandoverId: jti}))
	if err != nil {
		t.Fatal(err)
	}
	acc2, err := b.s().AcceptCase(ctx, &federationv1.AcceptCaseRequest{HandoverId: jti})
	if err != nil || acc2.EventId != acc.Msg.EventId {
		t.Fatalf("repeated accept: %v, %v", acc2, err)
	}
	if _, err := b.client().AcceptCase(ctx, connect.NewRequest(&federationv1.AcceptCaseRequest{HandoverId: "nope"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("accept of unknown case: %v", err)
	}
	ev := waitDelivered(t, b, acc.Msg.EventId)
	if _, err := envelope.VerifyReceipt(ctx, ev.Receipt, reg, orgA, digestOf(t, ev.EnvelopeSha256), MomentFromProto(ev.ReceiptRecorded, time.Now())); err != nil {
		t.Fatalf("event receipt: %v", err)
	}

	// Forward to C: a new handover with the history.
	fw, err := b.client().ForwardCase(ctx, connect.NewRequest(&federationv1.ForwardCaseRequest{
		HandoverId: jti, RecipientOrganisationId: orgC, Reason: "competent authority"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.s().CompleteCase(ctx, &federationv1.CompleteCaseRequest{HandoverId: jti}); connect.CodeOf(WireError(err)) != connect.CodeFailedPrecondition {
		t.Fatalf("complete after forward: %v", err)
	}
	fe := waitDelivered(t, b, fw.Msg.HandoverId)
	waitDelivered(t, b, fw.Msg.EventId)
	cc, err := c.s().GetCase(ctx, &federationv1.GetCaseRequest{HandoverId: fw.Msg.HandoverId})
	if err != nil {
		t.Fatal(err)
	}
	prev := cc.Case.Previous
	if len(prev) != 1 || prev[0].HandoverId != jti || prev[0].FromOrganisationId != orgA || prev[0].ToOrganisationId != orgB ||
		prev[0].EnvelopeSha256 != e.EnvelopeSha256 || cc.Case.Summary.TrackingCode != code || cc.Case.Summary.FromOrganisationId != orgB ||
		len(cc.Case.Attachments) != 1 {
		t.Fatalf("forwarded case: %v", cc.Case)
	}
	if _, err := envelope.VerifyReceipt(ctx, fe.Receipt, reg, orgC, digestOf(t, fe.EnvelopeSha256), MomentFromProto(fe.ReceiptRecorded, time.Now())); err != nil {
		t.Fatal(err)
	}
	// C accepts and completes; the events go to B.
	ca, err := c.s().AcceptCase(ctx, &federationv1.AcceptCaseRequest{HandoverId: fw.Msg.HandoverId})
	if err != nil {
		t.Fatal(err)
	}
	cd, err := c.s().CompleteCase(ctx, &federationv1.CompleteCaseRequest{HandoverId: fw.Msg.HandoverId})
	if err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, c, ca.EventId)
	waitDelivered(t, c, cd.EventId)

	// The timeline, verified, from A (the citizen's municipality) and C.
	want := []struct {
		org string
		typ federationv1.EventType
	}{
		{orgB, federationv1.EventType_EVENT_TYPE_HANDED_OVER},
		{orgB, federationv1.EventType_EVENT_TYPE_ACCEPTED},
		{orgB, federationv1.EventType_EVENT_TYPE_FORWARDED},
		{orgC, federationv1.EventType_EVENT_TYPE_HANDED_OVER},
		{orgC, federationv1.EventType_EVENT_TYPE_ACCEPTED},
		{orgC, federationv1.EventType_EVENT_TYPE_COMPLETED},
	}
	for _, n := range []*node{a, c} {
		tr, err := n.client().TrackCase(ctx, connect.NewRequest(&federationv1.TrackCaseRequest{TrackingCode: code}))
		if err != nil {
			t.Fatal(err)
		}
		ents := tr.Msg.Entries
		// The service is known where the case was received (C), not at
		// the sender (A).
		if wantLeika := map[*node]string{c: leika}[n]; tr.Msg.LeikaKey != wantLeika {
			t.Errorf("timeline from %s: leika_key %q, want %q", n.org, tr.Msg.LeikaKey, wantLeika)
		}
		if len(ents) != len(want) || len(tr.Msg.UnreachableOrganisationIds) != 0 || len(tr.Msg.OrganisationIds) != 3 {
			t.Fatalf("timeline from %s: %v", n.org, tr.Msg)
		}
		for _, w := range want {
			found := false
			for _, e := range ents {
				if e.OrganisationId == w.org && e.Type == w.typ {
					found = true
					if !e.Verified || e.SignedToken == "" {
						t.Errorf("timeline from %s: %s %s not verified: %s", n.org, w.org, w.typ, e.VerificationError)
					}
					if w.typ == federationv1.EventType_EVENT_TYPE_FORWARDED && e.ForwardedTo != orgC {
						t.Errorf("forward entry: %v", e)
					}
				}
			}
			if !found {
				t.Errorf("timeline from %s lacks %s %s: %v", n.org, w.org, w.typ, ents)
			}
		}
		if ents[0].Type != federationv1.EventType_EVENT_TYPE_HANDED_OVER || ents[0].FromOrganisationId != orgA {
			t.Errorf("timeline does not start with the first handover: %v", ents[0])
		}
	}
	if _, err := b.s().TrackCase(ctx, &federationv1.TrackCaseRequest{TrackingCode: "VB-0000-0000-0000"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown code: %v", err)
	}

	// A second case, rejected with a problem.
	res2, err := a.s().SendHandover(ctx, caseRequest(orgB, 2))
	if err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, a, res2.HandoverId)
	rj, err := b.s().RejectCase(ctx, &federationv1.RejectCaseRequest{HandoverId: res2.HandoverId,
		Problem: &federationv1.Problem{Type: "https://verbund.example/problems/not-competent", Title: "Not competent", Detail: "wrong district"}})
	if err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, b, rj.EventId)
	tr, err := a.s().TrackCase(ctx, &federationv1.TrackCaseRequest{TrackingCode: res2.TrackingCode})
	if err != nil {
		t.Fatal(err)
	}
	last := tr.Entries[len(tr.Entries)-1]
	if last.Type != federationv1.EventType_EVENT_TYPE_REJECTED || !last.Verified || last.Problem.GetTitle() != "Not competent" {
		t.Fatalf("reject entry: %v", last)
	}

	// Audit: what each side logged, and every chain verifies against the
	// heads published to the registry.
	ka := auditKinds(t, a.s())
	if ka[AuditHandoverSent] != 2 || ka[AuditHandoverDelivered] != 2 || ka[AuditEventReceived] != 3 {
		t.Errorf("audit of A: %v", ka)
	}
	kb := auditKinds(t, b.s())
	if kb[AuditHandoverReceived] != 2 || kb[AuditEventSent] != 3 || kb[AuditHandoverSent] != 1 || kb[AuditEventReceived] != 2 {
		t.Errorf("audit of B: %v", kb)
	}
	for _, n := range []*node{a, b, c} {
		waitPublished(t, reg, n)
		rep, err := n.s().VerifyAudit(ctx)
		if err != nil || len(rep.Published) == 0 {
			t.Fatalf("audit of %s: %v %+v", n.org, err, rep)
		}
	}
	// Counters move just after the commit that makes a state visible.
	waitFor(t, 5*time.Second, "A's counters", func() bool { st := a.s().Stats(); return st.Delivered >= 2 && st.Received >= 3 })
	if st := a.s().Stats(); st.Delivered != 2 || st.Received != 3 || st.RejectedTotal() != 0 {
		t.Errorf("stats of A: %+v", st)
	}
}

// waitPublished waits until the registry holds n's current audit head.
func waitPublished(t testing.TB, reg *registry, n *node) {
	t.Helper()
	waitFor(t, 10*time.Second, "audit head of "+n.org, func() bool {
		// The stored head, not Stats' copy: that is set just after the
		// commit, so an entry committed a moment ago may not be in it yet.
		head := storedHead(t, n.s())
		seq, hash, err := auditFor{reg, n.org}.PublishedAuditHead(context.Background(), n.org)
		return err == nil && seq == head.Seq && hash == head.Hash
	})
}

// TestRedelivery: the same envelope delivered again, also after the
// recipient restarted, returns the byte-identical receipt and has no
// second effect.
func TestRedelivery(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry()
	a := newNode(t, reg, orgA, nil)
	b := newNode(t, reg, orgB, nil)
	res, err := a.s().SendHandover(ctx, caseRequest(orgB, 1))
	if err != nil {
		t.Fatal(err)
	}
	e := waitDelivered(t, a, res.HandoverId)
	token := outboxToken(t, a.s(), res.HandoverId)
	before := inbox(t, b.s())
	head := b.s().Stats().AuditHead
	for round := range 3 {
		if round == 2 {
			b.restart(nil)
		}
		r, err := b.client().DeliverHandover(ctx, connect.NewRequest(&federationv1.DeliverHandoverRequest{Token: token}))
		if err != nil {
			t.Fatal(err)
		}
		if r.Msg.Receipt != e.Receipt {
			t.Fatalf("round %d: receipt differs", round)
		}
	}
	if after := inbox(t, b.s()); len(after) != len(before) {
		t.Fatalf("inbox changed: %d -> %d", len(before), len(after))
	}
	if h := b.s().Stats().AuditHead; h != head {
		t.Fatalf("audit changed on redelivery: %v -> %v", head, h)
	}
	if d := b.s().Stats().Duplicates; d != 1 { // the last round ran on the restarted service
		t.Fatalf("duplicates %d", d)
	}
	// Idempotent send: the same key gives the same handover.
	req := caseRequest(orgB, 2)
	req.IdempotencyKey = "idem-key-0000000000001"
	r1, err := a.s().SendHandover(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := a.s().SendHandover(ctx, req)
	if err != nil || r2.HandoverId != r1.HandoverId || r2.EnvelopeSha256 != r1.EnvelopeSha256 {
		t.Fatalf("idempotent send: %v %v %v", r1, r2, err)
	}
	waitDelivered(t, a, r1.HandoverId)
	if n := len(inbox(t, b.s())); n != 2 {
		t.Fatalf("inbox has %d cases, want 2", n)
	}
}

func outboxToken(t testing.TB, s *Service, id string) string {
	t.Helper()
	var token string
	err := s.view(func(txn *badger.Txn) error {
		it, err := txn.Get(key(pOutboxToken, id))
		if err != nil {
			return err
		}
		b, err := it.ValueCopy(nil)
		token = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// TestLivenessPause: while Liveness says the recipient is down, the
// deliverer does not spend attempts; once it is alive, delivery happens.
func TestLivenessPause(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry()
	live := &liveness{}
	live.set(orgB, false)
	a := newNode(t, reg, orgA, func(c *Config) { c.Liveness = live })
	newNode(t, reg, orgB, nil)
	res, err := a.s().SendHandover(ctx, caseRequest(orgB, 1))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "pause", func() bool { return a.s().Stats().Paused >= 1 })
	time.Sleep(50 * time.Millisecond) // ten recheck periods
	if st := a.s().Stats(); st.Attempts != 0 || st.Pending != 1 || st.Paused != 1 {
		t.Fatalf("attempts while down: %+v", st)
	}
	live.set(orgB, true)
	waitDelivered(t, a, res.HandoverId)
}

// TestPermanentFailure: an envelope the recipient refuses for good (here:
// expired by the recipient's clock) ends in state failed with the reason,
// audited, without further attempts.
func TestPermanentFailure(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry()
	a := newNode(t, reg, orgA, func(c *Config) { c.HandoverTTL = time.Second })
	b := newNode(t, reg, orgB, func(c *Config) { c.Now = func() time.Time { return time.Now().Add(2 * time.Minute) } })
	res, err := a.s().SendHandover(ctx, caseRequest(orgB, 1))
	if err != nil {
		t.Fatal(err)
	}
	var e *federationv1.OutboxEntry
	waitFor(t, 10*time.Second, "failure", func() bool {
		e = outboxEntry(t, a.s(), res.HandoverId)
		// The state commits before the counter moves: wait for both.
		return e.State == federationv1.OutboxState_OUTBOX_STATE_FAILED && a.s().Stats().Failed >= 1
	})
	if !strings.Contains(e.LastError, "expired") || a.s().Stats().Failed != 1 || e.Attempts != 1 {
		t.Fatalf("failed entry: %v", e)
	}
	if auditKinds(t, a.s())[AuditDeliveryFailed] != 1 {
		t.Fatal("failure not audited")
	}
	if st := b.s().Stats(); st.Rejected["expired"] != 1 || len(inbox(t, b.s())) != 0 {
		t.Fatalf("recipient: %+v", st)
	}
}
