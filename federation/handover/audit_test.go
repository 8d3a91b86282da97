package handover

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

func readAudit(t testing.TB, db *badger.DB, seq uint64) AuditEntry {
	t.Helper()
	var e AuditEntry
	err := db.View(func(txn *badger.Txn) error {
		ok, err := getJSON(txn, seqKey(pAudit, seq), &e)
		if err == nil && !ok {
			t.Fatalf("no audit entry %d", seq)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func writeAudit(t testing.TB, db *badger.DB, e AuditEntry) {
	t.Helper()
	b, _ := json.Marshal(e)
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(seqKey(pAudit, e.Seq), b) }); err != nil {
		t.Fatal(err)
	}
}

// TestAuditTamper: VerifyAudit passes on an untouched log and fails when a
// stored entry is altered, when the attacker also rewrites the hashes of
// the rest of the chain (caught by the published head), and when entries
// are removed from the end.
func TestAuditTamper(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry()
	a := newNode(t, reg, orgA, nil)
	b := newNode(t, reg, orgB, nil)
	for i := range 5 {
		res, err := a.s().SendHandover(ctx, caseRequest(orgB, i))
		if err != nil {
			t.Fatal(err)
		}
		waitDelivered(t, a, res.HandoverId)
	}
	// Stop the node so nothing else is appended; then work on its DB.
	waitPublished(t, reg, b)
	b.stop()
	b.start()
	s := b.s()
	rep, err := s.VerifyAudit(ctx)
	if err != nil || rep.Entries != 5 || rep.Head.Seq != 5 || len(rep.Published) < 2 {
		t.Fatalf("untampered: %v %+v", err, rep)
	}
	orig := readAudit(t, b.db, 3)

	// 1. Alter an entry's content, keep its hash.
	e := orig
	e.Peer = "org-evil"
	writeAudit(t, b.db, e)
	if _, err := s.VerifyAudit(ctx); !errors.Is(err, ErrAudit) || !strings.Contains(err.Error(), "entry 3") {
		t.Fatalf("altered entry: %v", err)
	}
	writeAudit(t, b.db, orig)
	if _, err := s.VerifyAudit(ctx); err != nil {
		t.Fatalf("restored: %v", err)
	}

	// 2. Alter it and rewrite the chain from there: internally consistent,
	// but no longer matching the published head.
	var saved []AuditEntry
	prev := readAudit(t, b.db, 2)
	for seq := uint64(3); seq <= 5; seq++ {
		e := readAudit(t, b.db, seq)
		saved = append(saved, e)
		if seq == 3 {
			e.Peer = "org-evil"
		}
		e.Prev = prev.Hash
		e.Hash = e.computeHash()
		writeAudit(t, b.db, e)
		prev = e
	}
	if _, err := s.VerifyAudit(ctx); !errors.Is(err, ErrAudit) || !strings.Contains(err.Error(), "published head") {
		t.Fatalf("rewritten chain: %v", err)
	}
	for _, e := range saved {
		writeAudit(t, b.db, e)
	}

	// 3. Truncate: the published head is gone.
	if err := b.db.Update(func(txn *badger.Txn) error { return txn.Delete(seqKey(pAudit, 5)) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyAudit(ctx); !errors.Is(err, ErrAudit) || !strings.Contains(err.Error(), "not in the chain") {
		t.Fatalf("truncated: %v", err)
	}
	writeAudit(t, b.db, saved[2])

	// 4. Remove one in the middle.
	if err := b.db.Update(func(txn *badger.Txn) error { return txn.Delete(seqKey(pAudit, 2)) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyAudit(ctx); !errors.Is(err, ErrAudit) {
		t.Fatalf("gap: %v", err)
	}
}
