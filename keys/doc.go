// Package keys generates, stores and publishes the JOSE keys of an
// organisation: an Ed25519 signing key (JWS "EdDSA") for registry commands,
// handovers and receipts, and a P-256 encryption key (JWE "ECDH-ES+A256KW")
// that senders encrypt handovers to. It also holds the one rule that says
// which published key may sign for which organisation at which moment
// (SigningKeyAt).
//
// Private keys are stored as JWK JSON files with mode 0600, written
// atomically (temp file, fsync, rename) so a crash never leaves half a key.
//
// # The key rule
//
// Every signature in Verbund (registry commands, handovers, events,
// receipts) is checked with SigningKeyAt, and nowhere else. Validity is
// decided by the registry's order, not by the signer's clock.
//
// A Moment is a position in the registry's order: the Raft index of a
// registry state, and the registry-side time that goes with it (the
// leader-stamped proposal time of a log entry; the clock of the node that
// takes a token in). What a signer claims about time (iat, received_at)
// never chooses the moment, so a thief with a stolen key cannot backdate a
// signature.
//
// A signature made with key kid verifies for organisation org at moment at
// if and only if
//
//   - kid is a key of org with use "sig", and
//   - the key is ACTIVE; or RETIRING with at.UnixMs <= not_after_unix_ms
//     (its grace period); or REVOKED with at.Index < revoked_at_index (a key
//     revoked before the registry kept that index has 0 there and never
//     verifies), and
//   - org was not SUSPENDED or RETIRED at at.Index: an inactive
//     organisation is inactive from inactive_since_index on (0: always).
//
// The registry FSM stamps revoked_at_index and inactive_since_index from the
// index of the log entry that made the change (Stamp); values sent by
// clients are overwritten. So the current record of an organisation answers
// for every moment up to the present.
//
// Where the rule is applied:
//
//   - The registry FSM checks a command at the index and proposal time of
//     the log entry that records it.
//   - A node verifying a delivery, an event or a receipt as it arrives uses
//     the current moment (Index 0: after every change recorded so far, and
//     its clock), and stores the registry index it had applied then with
//     the token. So a suspended organisation's and a revoked key's new
//     signatures are refused by every node from the suspension on.
//   - What a node accepted and stored (case timelines, receipts) is verified
//     again at the moment it was recorded, so what an organisation signed
//     before it was suspended, or before a key was revoked, stays
//     verifiable. A stored token without a recorded moment is verified at
//     the current one.
package keys
