package handover

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

// fullDisk is a SpaceGuard the test fills and clears.
type fullDisk struct{ full atomic.Bool }

var errTestDiskFull = errors.New("test: disk full")

func (d *fullDisk) Check() error {
	if d.full.Load() {
		return errTestDiskFull
	}
	return nil
}

// TestSpaceGuard: while Config.Space refuses, every new write is refused
// with its error before anything is written (sends, case steps, deliveries
// of new handovers and events, which the sender keeps pending and retries),
// while reads and redeliveries of what was already received are answered.
// Once it admits again, everything goes through, exactly once.
func TestSpaceGuard(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry()
	da, db := &fullDisk{}, &fullDisk{}
	a := newNode(t, reg, orgA, func(c *Config) { c.Space = da })
	b := newNode(t, reg, orgB, func(c *Config) { c.Space = db })

	// The sender's disk is full: SendHandover refused, nothing stored.
	da.full.Store(true)
	if _, err := a.s().SendHandover(ctx, caseRequest(orgB, 1)); !errors.Is(err, errTestDiskFull) {
		t.Fatalf("send with the sender's disk full: %v", err)
	}
	if n := len(outbox(t, a.s())); n != 0 {
		t.Fatalf("%d outbox entries after a refused send", n)
	}
	da.full.Store(false)
	res1, err := a.s().SendHandover(ctx, caseRequest(orgB, 1))
	if err != nil {
		t.Fatal(err)
	}
	e1 := waitDelivered(t, a, res1.HandoverId)

	// The recipient's disk is full.
	db.full.Store(true)
	if _, err := b.s().AcceptCase(ctx, &federationv1.AcceptCaseRequest{HandoverId: res1.HandoverId}); !errors.Is(err, errTestDiskFull) {
		t.Fatalf("accept with the disk full: %v", err)
	}
	if _, err := b.s().ForwardCase(ctx, &federationv1.ForwardCaseRequest{HandoverId: res1.HandoverId, RecipientOrganisationId: orgC}); !errors.Is(err, errTestDiskFull) {
		t.Fatalf("forward with the disk full: %v", err)
	}
	if r, err := b.s().DeliverHandover(ctx, outboxToken(t, a.s(), res1.HandoverId)); err != nil || r != e1.Receipt {
		t.Fatalf("redelivery of a received handover with the disk full: %v (same receipt: %v)", err, r == e1.Receipt)
	}
	if _, err := b.s().GetCase(ctx, &federationv1.GetCaseRequest{HandoverId: res1.HandoverId}); err != nil {
		t.Fatalf("read with the disk full: %v", err)
	}
	res2, err := a.s().SendHandover(ctx, caseRequest(orgB, 2))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "refused delivery attempts", func() bool {
		e := outboxEntry(t, a.s(), res2.HandoverId)
		return e != nil && e.Attempts >= 3
	})
	if e := outboxEntry(t, a.s(), res2.HandoverId); e.State != federationv1.OutboxState_OUTBOX_STATE_PENDING {
		t.Fatalf("delivery refused for disk space: entry %v, want pending", e.State)
	}
	for _, c := range inbox(t, b.s()) {
		if c.HandoverId == res2.HandoverId {
			t.Fatal("handover stored by a recipient whose disk is full")
		}
	}
	db.full.Store(false)
	waitDelivered(t, a, res2.HandoverId)

	// The sender's disk is full when the recipient's event comes back.
	da.full.Store(true)
	acc, err := b.s().AcceptCase(ctx, &federationv1.AcceptCaseRequest{HandoverId: res1.HandoverId})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "refused event deliveries", func() bool {
		e := outboxEntry(t, b.s(), acc.EventId)
		return e != nil && e.Attempts >= 3 && e.State == federationv1.OutboxState_OUTBOX_STATE_PENDING
	})
	da.full.Store(false)
	waitDelivered(t, b, acc.EventId)

	n := map[string]int{}
	for _, c := range inbox(t, b.s()) {
		n[c.HandoverId]++
	}
	if n[res1.HandoverId] != 1 || n[res2.HandoverId] != 1 || len(n) != 2 {
		t.Fatalf("recipient's inbox %v, want each handover once", n)
	}
	if k := auditKinds(t, a.s()); k[AuditEventReceived] != 1 {
		t.Fatalf("sender's audit log: %v, want the accept event received once", k)
	}
}
