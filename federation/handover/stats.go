package handover

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Stats are the Service's counters since it was created.
type Stats struct {
	// Sent: handovers and events put in the outbox.
	Sent uint64
	// Delivered: outbox entries whose receipt was stored.
	Delivered uint64
	// Received: handovers and events newly taken in (not duplicates).
	Received uint64
	// Duplicates: deliveries of an already received token, answered with
	// the stored receipt and no other effect.
	Duplicates uint64
	// Attempts: delivery attempts made; Retries: attempts that failed and
	// were rescheduled; Paused: deliveries postponed because Liveness said
	// the recipient is down; Failed: outbox entries given up.
	Attempts, Retries, Paused, Failed uint64
	// BadReceipts: receipts that did not verify (the delivery is retried).
	BadReceipts uint64
	// Rejected counts refused deliveries (DeliverHandover, DeliverEvent) by
	// reason: "too_large", "malformed", "signature", "unknown_key",
	// "audience", "expired", "replay", "unknown_handover", ...
	Rejected map[string]uint64
	// AuditPublished: audit heads published; AuditPublishErrors: failures.
	AuditPublished, AuditPublishErrors uint64
	// Pending: outbox entries waiting for delivery.
	Pending int
	// Commits: group commits (each one fsync); CommittedOps: ops in them.
	Commits, CommittedOps uint64
	// AuditHead is the current chain head.
	AuditHead AuditHead
}

// RejectedTotal sums Rejected.
func (s Stats) RejectedTotal() uint64 {
	var n uint64
	for _, v := range s.Rejected {
		n += v
	}
	return n
}

type counters struct {
	sent, delivered, received, duplicates          atomic.Uint64
	attempts, retries, paused, failed, badReceipts atomic.Uint64
	auditPublished, auditPublishErrors             atomic.Uint64

	mu       sync.Mutex
	rejected map[string]uint64
}

func (c *counters) init() { c.rejected = map[string]uint64{} }

func (c *counters) reject(reason string) {
	c.mu.Lock()
	c.rejected[reason]++
	c.mu.Unlock()
}

// Stats returns a snapshot of the counters.
func (s *Service) Stats() Stats {
	c := &s.stats
	st := Stats{
		Sent: c.sent.Load(), Delivered: c.delivered.Load(), Received: c.received.Load(),
		Duplicates: c.duplicates.Load(), Attempts: c.attempts.Load(), Retries: c.retries.Load(),
		Paused: c.paused.Load(), Failed: c.failed.Load(), BadReceipts: c.badReceipts.Load(),
		AuditPublished: c.auditPublished.Load(), AuditPublishErrors: c.auditPublishErrors.Load(),
		Pending: s.del.pending(),
	}
	c.mu.Lock()
	st.Rejected = maps.Clone(c.rejected)
	c.mu.Unlock()
	s.com.mu.Lock()
	st.Commits, st.CommittedOps = s.com.stats.batches, s.com.stats.ops
	st.AuditHead = s.com.head
	s.com.mu.Unlock()
	return st
}
