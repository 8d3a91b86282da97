package handover

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

// v1Hash is the audit entry hash as it was before actors were recorded:
// chains written then must keep verifying.
func v1Hash(e AuditEntry) string {
	h := sha256.New()
	h.Write([]byte("verbund-audit/v1\x00"))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], e.Seq)
	h.Write(b[:])
	prev, _ := hex.DecodeString(e.Prev)
	h.Write(prev)
	binary.BigEndian.PutUint64(b[:], uint64(e.Time))
	h.Write(b[:])
	for _, s := range []string{e.Kind, e.ID, e.Digest, e.Peer} {
		binary.BigEndian.PutUint32(b[:4], uint32(len(s)))
		h.Write(b[:4])
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestAuditActor: a case worker's actions are recorded under the actor the
// context carries (WithActor), the actor enters the entry's hash (changing
// or dropping it breaks verification), the node's own entries name nobody,
// and an entry without an actor hashes exactly as before.
func TestAuditActor(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry()
	a := newNode(t, reg, orgA, nil)
	b := newNode(t, reg, orgB, nil)
	const erika, max = "Erika Mustermann (erika@node-a)", "Max Muster (max@node-b)"
	res, err := a.s().SendHandover(WithActor(ctx, erika), caseRequest(orgB, 1))
	if err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, a, res.HandoverId)
	if _, err := b.s().AcceptCase(WithActor(ctx, max), &federationv1.AcceptCaseRequest{HandoverId: res.HandoverId}); err != nil {
		t.Fatal(err)
	}
	byKind := func(s *Service) map[string]AuditEntry {
		log, err := s.AuditLog(0, 0)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]AuditEntry{}
		for _, e := range log {
			m[e.Kind] = e
		}
		return m
	}
	la, lb := byKind(a.s()), byKind(b.s())
	if e := la[AuditHandoverSent]; e.Actor != erika {
		t.Fatalf("sent: actor %q, want %q", e.Actor, erika)
	}
	if e := lb[AuditEventSent]; e.Actor != max {
		t.Fatalf("accepted: actor %q, want %q", e.Actor, max)
	}
	recv := lb[AuditHandoverReceived]
	if recv.Actor != "" {
		t.Fatalf("the node's own delivery names %q", recv.Actor)
	}
	if got := v1Hash(recv); got != recv.Hash {
		t.Fatalf("an entry without actor hashes to %s, the pre-actor encoding to %s", recv.Hash, got)
	}
	if sent := la[AuditHandoverSent]; v1Hash(sent) == sent.Hash {
		t.Fatal("the actor does not enter the hash")
	}
	if _, err := b.s().VerifyAudit(ctx); err != nil {
		t.Fatalf("untampered: %v", err)
	}

	// Rewriting who did it is caught.
	b.stop()
	b.start()
	ev := lb[AuditEventSent]
	for _, forged := range []string{"Someone Else (other@node-b)", ""} {
		e := ev
		e.Actor = forged
		writeAudit(t, b.db, e)
		if _, err := b.s().VerifyAudit(ctx); !errors.Is(err, ErrAudit) {
			t.Fatalf("actor %q instead of %q: %v", forged, ev.Actor, err)
		}
	}
	writeAudit(t, b.db, ev)
	if _, err := b.s().VerifyAudit(ctx); err != nil {
		t.Fatalf("restored: %v", err)
	}
}
