package handover

import (
	"bytes"
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

// registryHead is the head the test registry holds for org.
func registryHead(reg *registry, org string) (uint64, string) {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	h, ok := reg.heads[org]
	if !ok {
		return 0, ""
	}
	return h[0].(uint64), h[1].(string)
}

// TestHandoverStoreRestore backs up the stores of a sender (A) and a
// recipient (B) while they work, lets more handovers go through, restores
// both, and checks each consequence the package doc of backup.go names:
//   - B started on its restored store although the registry holds a later
//     audit head (no ErrStoreBehind), recorded a restore marker entry
//     naming the lost head, did not publish a lower head or another hash
//     for a published sequence, and publishes again once past it;
//   - a handover B received before the backup and delivered again after
//     the restore is deduplicated by its jti: the same receipt, no second
//     case; the one received after the backup is gone and the gap is
//     reported (Restore().LostSeq);
//   - the handover A sent after its backup is not re-sent (B holds it
//     exactly once) and is reported as lost by A's marker.
func TestHandoverStoreRestore(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry()
	a := newNode(t, reg, orgA, nil)
	b := newNode(t, reg, orgB, nil)

	h1, err := a.s().SendHandover(ctx, caseRequest(orgB, 1))
	if err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, a, h1.HandoverId)
	waitPublished(t, reg, a)
	waitPublished(t, reg, b)

	var bakA, bakB bytes.Buffer
	metaB, err := b.s().Backup(ctx, &bakB)
	if err != nil {
		t.Fatal(err)
	}
	metaA, err := a.s().Backup(ctx, &bakA)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backups: A %d bytes (commit %d, audit %d), B %d bytes (commit %d, audit %d)",
		bakA.Len(), metaA.Commit, metaA.AuditHead.Seq, bakB.Len(), metaB.Commit, metaB.AuditHead.Seq)

	// After the backups: h2 goes from A to B, and both publish their heads.
	h2, err := a.s().SendHandover(ctx, caseRequest(orgB, 2))
	if err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, a, h2.HandoverId)
	waitPublished(t, reg, a)
	waitPublished(t, reg, b)
	lostB, lostHashB := registryHead(reg, orgB)
	lostA, _ := registryHead(reg, orgA)
	tokH1 := outboxToken(t, a.s(), h1.HandoverId)

	// Restore both stores (each node stopped meanwhile).
	for _, x := range []struct {
		n   *node
		bak *bytes.Buffer
	}{{b, &bakB}, {a, &bakA}} {
		x.n.restart(func() {
			rep, err := RestoreStore(x.n.dir, x.bak, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("restored %s: audit head %d, %d cases, %d outbox entries, old store at %s", x.n.org, rep.AuditHead.Seq, rep.Cases, rep.Outbox, rep.AsideDir)
		})
	}

	// B: the marker names the lost head; nothing lower was published.
	rs := b.s().Restore()
	if !rs.Restored || rs.LostSeq != lostB || rs.BackupSeq != metaB.AuditHead.Seq {
		t.Fatalf("B's restore state %+v, want lost head %d, backup head %d", rs, lostB, metaB.AuditHead.Seq)
	}
	marker, err := b.s().AuditLog(rs.BackupSeq+1, rs.BackupSeq+1)
	if err != nil || len(marker) != 1 || marker[0].Kind != AuditStoreRestored || marker[0].Digest != lostHashB {
		t.Fatalf("B's marker entry: %+v, %v", marker, err)
	}
	time.Sleep(300 * time.Millisecond) // six audit intervals
	if seq, hash := registryHead(reg, orgB); seq != lostB || hash != lostHashB {
		t.Fatalf("B published head %d %s over the lost %d %s", seq, hash, lostB, lostHashB)
	}
	if st := b.s().Stats(); st.AuditPublishErrors != 0 {
		t.Fatalf("B tried to publish a head the registry refused (%d errors)", st.AuditPublishErrors)
	}
	if _, err := b.s().VerifyAudit(ctx); err != nil {
		t.Fatalf("B's audit chain after the restore: %v", err)
	}

	// Receipts already sent: h1 delivered again is a duplicate; h2 is lost.
	res, err := b.client().DeliverHandover(ctx, connect.NewRequest(&federationv1.DeliverHandoverRequest{Token: tokH1}))
	if err != nil {
		t.Fatalf("redelivery of h1 after the restore: %v", err)
	}
	if res.Msg.GetReceipt() == "" {
		t.Fatal("no receipt for the redelivered h1")
	}
	if in := inbox(t, b.s()); len(in) != 1 || in[0].HandoverId != h1.HandoverId {
		t.Fatalf("B's inbox after the restore and h1's redelivery: %v (want h1 once; h2 lost)", in)
	}
	if b.s().Stats().Duplicates == 0 {
		t.Fatal("h1's redelivery was not counted as a duplicate")
	}

	// A: h2 (sent after A's backup) is not re-sent, and reported lost.
	ra := a.s().Restore()
	if !ra.Restored || ra.LostSeq != lostA || ra.LostSeq <= ra.BackupSeq {
		t.Fatalf("A's restore state %+v, want lost head %d", ra, lostA)
	}
	for _, e := range outbox(t, a.s()) {
		if e.HandoverId == h2.HandoverId {
			t.Fatalf("A's restored outbox holds h2: %v", e)
		}
	}

	// New traffic: the chains pass the lost heads and publishing resumes.
	for i := 3; ; i++ {
		h, err := a.s().SendHandover(ctx, caseRequest(orgB, i))
		if err != nil {
			t.Fatal(err)
		}
		waitDelivered(t, a, h.HandoverId)
		if storedHead(t, a.s()).Seq > lostA && storedHead(t, b.s()).Seq > lostB {
			break
		}
	}
	waitPublished(t, reg, a)
	waitPublished(t, reg, b)
	for _, n := range []*node{a, b} {
		if _, err := n.s().VerifyAudit(ctx); err != nil {
			t.Fatalf("%s's audit chain after publishing resumed: %v", n.org, err)
		}
	}
	// B lost h2 with its restore, and A, which lost it too, did not re-send it.
	n2 := 0
	for _, c := range inbox(t, b.s()) {
		if c.HandoverId == h2.HandoverId {
			n2++
		}
	}
	if n2 != 0 {
		t.Fatalf("B's restored inbox got h2 %d times: A re-sent a handover it lost", n2)
	}
	t.Logf("B: lost published head %d (backup head %d), marker at %d; A: lost %d (backup %d); publishing resumed at %d / %d",
		lostB, rs.BackupSeq, rs.BackupSeq+1, lostA, ra.BackupSeq, storedHead(t, a.s()).Seq, storedHead(t, b.s()).Seq)
}
