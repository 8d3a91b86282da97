// Package handover moves cases between organisations of the Verbund
// network on top of package envelope: a durable outbox with a background
// deliverer, a durable inbox with dedupe records, signed receipts, the case
// lifecycle (accept, reject, complete, forward) as signed events sent back
// through the same outbox, citizen tracking across every organisation a case
// passed through, and a hash-chained audit log whose head is published to
// the registry.
//
// # Guarantees
//
// Every handover and event is delivered exactly once in effect:
//
//   - SendHandover (and every case step) answers only after its outbox entry
//     is committed and synced. The deliverer retries until the recipient
//     answers with a receipt that verifies, with exponential backoff and
//     jitter, pausing while Liveness says the recipient is down.
//   - The recipient answers with a receipt only after the inbox entry, the
//     dedupe record (keyed by jti, holding the envelope digest and the
//     receipt) and the audit entry are committed together and synced.
//     Redelivery of the same bytes returns the stored, byte-identical
//     receipt; another envelope with a delivered jti is refused (ErrReplay)
//     and leaves no trace.
//   - The sender stores the receipt, marks the entry delivered and appends
//     the audit entry in one synced commit.
//
// Every state transition is a single badger transaction, so a crash at any
// point leaves either the old or the new state; everything in flight is
// retried by the sender and deduplicated by the recipient. A new Service on
// the same DB continues where a killed one stopped.
//
// # Storage and durability
//
// All changes go through one committer goroutine that runs many operations
// in one transaction and one fsync (group commit); an operation's caller is
// told only after the fsync. If the DB was opened with SyncWrites(true)
// (OpenDB does that), the commit itself syncs; otherwise the committer
// calls DB.Sync() after each commit. Either works; SyncWrites(true) also
// covers memtable rotation, so a dedicated DB from OpenDB is recommended.
//
// The store is the only copy of an organisation's cases, so it refuses to
// start rather than serve less than it acknowledged (highwater.go): each
// write batch carries a commit number (key ho/cs) and, once the batch is
// synced, that number is written and synced to a small file next to
// badger's (HighWaterFile). badger drops a damaged write-ahead-log tail on
// open without an error; New then finds the store behind its high-water
// mark, or its audit chain behind the head the registry holds
// (Config.AuditHeads), and fails with ErrStoreBehind naming both. OpenDB
// verifies every table at open and every block and value on read
// (internal/badgercheck), so a flipped byte is an error, never data.
//
// # Audit log
//
// Every handover and event sent, delivered, received, or given up is
// appended in the same transaction as the state change: entry = seq, prev
// hash, time, kind, jti, digest, peer; hash = SHA-256 of a canonical binary
// encoding (see AuditEntry.computeHash). Run publishes the head (seq, hash)
// through AuditPublisher every AuditInterval and records each publication;
// VerifyAudit recomputes the chain and checks every published head is a
// point of it with an equal hash.
package handover
