package handover

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Audit entry kinds.
const (
	AuditHandoverSent      = "handover.sent"      // a handover was sealed and put in the outbox
	AuditHandoverDelivered = "handover.delivered" // its receipt was stored
	AuditHandoverReceived  = "handover.received"  // a handover was taken into the inbox
	AuditEventSent         = "event.sent"         // an event was sealed and put in the outbox
	AuditEventDelivered    = "event.delivered"    // its receipt was stored
	AuditEventReceived     = "event.received"     // an event about a sent handover was stored
	AuditDeliveryFailed    = "delivery.failed"    // the recipient refused an outbox entry for good
)

// ErrAudit is wrapped by VerifyAudit's errors: the chain is broken or does
// not match a published head.
var ErrAudit = errors.New("handover: audit log verification failed")

// AuditEntry is one entry of the append-only, hash-chained audit log.
type AuditEntry struct {
	Seq    uint64 `json:"seq"`
	Prev   string `json:"prev"` // hex hash of entry Seq-1 (64 zeros for the first)
	Time   int64  `json:"time"` // Unix milliseconds
	Kind   string `json:"kind"`
	ID     string `json:"id"`     // jti of the handover or event
	Digest string `json:"digest"` // hex SHA-256 of the token
	Peer   string `json:"peer"`   // the other organisation
	// Actor is the person on whose action the entry was made (a case
	// worker: "<display name> (<username>@<node>)"); empty for the node's
	// own work (deliveries, receipts) and for entries written before
	// actors were recorded.
	Actor string `json:"actor,omitempty"`
	Hash  string `json:"hash"` // hex SHA-256 of the canonical encoding
}

// AuditHead is a point of the chain: its sequence number and hash.
type AuditHead struct {
	Seq  uint64
	Hash string
	At   int64 // Unix milliseconds of the entry (or of publishing)
}

type auditInput struct{ kind, id, digest, peer, actor string }

type actorKey struct{}

// WithActor returns ctx carrying the person on whose action the Service's
// calls with it act (the node's guard sets it from the authenticated
// user): the audit entries those calls write record it.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorFrom returns the actor ctx carries ("" if none).
func ActorFrom(ctx context.Context) string {
	a, _ := ctx.Value(actorKey{}).(string)
	return a
}

var zeroHash = hex.EncodeToString(make([]byte, 32))

func newAuditEntry(prev AuditHead, now time.Time, a auditInput) AuditEntry {
	e := AuditEntry{Seq: prev.Seq + 1, Prev: prev.Hash, Time: now.UnixMilli(), Kind: a.kind, ID: a.id, Digest: a.digest, Peer: a.peer, Actor: a.actor}
	if prev.Seq == 0 {
		e.Prev = zeroHash
	}
	e.Hash = e.computeHash()
	return e
}

// computeHash is SHA-256 over the canonical encoding:
//
//	"verbund-audit/v1" 0x00 | seq (8 bytes BE) | prev (32 bytes) | time (8 bytes BE)
//	| for kind, id, digest, peer: length (4 bytes BE) | bytes
//	[| for actor, if not empty: length (4 bytes BE) | bytes]
//
// An entry without an actor hashes exactly as before actors were
// recorded, so older chains stay verifiable.
func (e *AuditEntry) computeHash() string {
	h := sha256.New()
	h.Write([]byte("verbund-audit/v1\x00"))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], e.Seq)
	h.Write(b[:])
	prev, err := hex.DecodeString(e.Prev)
	if err != nil || len(prev) != 32 {
		prev = append([]byte("invalid:"), e.Prev...)
	}
	h.Write(prev)
	binary.BigEndian.PutUint64(b[:], uint64(e.Time))
	h.Write(b[:])
	fields := []string{e.Kind, e.ID, e.Digest, e.Peer}
	if e.Actor != "" {
		fields = append(fields, e.Actor)
	}
	for _, s := range fields {
		binary.BigEndian.PutUint32(b[:4], uint32(len(s)))
		h.Write(b[:4])
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func loadAuditHead(db *badger.DB) (AuditHead, error) {
	var head AuditHead
	err := db.View(func(txn *badger.Txn) error {
		seq, err := lastSeq(txn, pAudit)
		if err != nil || seq == 0 {
			return err
		}
		var e AuditEntry
		ok, err := getJSON(txn, seqKey(pAudit, seq), &e)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("handover: audit entry %d vanished", seq)
		}
		head = AuditHead{Seq: e.Seq, Hash: e.Hash, At: e.Time}
		return nil
	})
	return head, err
}

// AuditLog returns the audit entries with sequence numbers in [from, to]
// (to 0: up to the head), as stored.
func (s *Service) AuditLog(from, to uint64) ([]AuditEntry, error) {
	var out []AuditEntry
	err := s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(pAudit)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(seqKey(pAudit, from)); it.ValidForPrefix(opts.Prefix); it.Next() {
			var e AuditEntry
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &e) }); err != nil {
				return err
			}
			if to != 0 && e.Seq > to {
				break
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// AuditReport is the result of VerifyAudit.
type AuditReport struct {
	Entries   uint64      // entries checked
	Head      AuditHead   // the local chain head
	Published []AuditHead // published heads checked against the chain
}

// publishedHead is what the node recorded about a head it published.
type publishedHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
	At   int64  `json:"at"`
}

// VerifyAudit recomputes the whole chain (sequence numbers gap-free from 1,
// every prev equal to the previous hash, every hash equal to the hash of
// the entry's canonical encoding) and checks every head this node published
// (recorded locally) and the head the registry currently holds (through
// Config.AuditHeads, if set): each must be a point of the chain with an
// equal hash. Errors wrap ErrAudit.
func (s *Service) VerifyAudit(ctx context.Context) (AuditReport, error) {
	var rep AuditReport
	done, err := s.enter()
	if err != nil {
		return rep, err
	}
	defer done()
	hashes := map[uint64]string{}
	var published []AuditHead
	// Read the registry's head first: it is a point this node committed
	// before publishing it, so the snapshot taken next contains it.
	var registryHead *AuditHead
	if s.cfg.AuditHeads != nil {
		seq, hash, err := s.cfg.AuditHeads.PublishedAuditHead(ctx, s.cfg.OrgID)
		switch {
		case errors.Is(err, ErrNoAuditHead):
		case err != nil:
			return rep, fmt.Errorf("handover: read the published audit head: %w", err)
		case s.lostHead(seq, hash):
			// Lost by a restore and named by its marker entry (backup.go).
		default:
			registryHead = &AuditHead{Seq: seq, Hash: hash}
		}
	}
	err = s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(pAudit)
		it := txn.NewIterator(opts)
		defer it.Close()
		prev := AuditHead{Hash: zeroHash}
		for it.Rewind(); it.ValidForPrefix(opts.Prefix); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := it.Item().Key()
			var e AuditEntry
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &e) }); err != nil {
				return fmt.Errorf("%w: entry %x: %v", ErrAudit, k, err)
			}
			if len(k) != len(pAudit)+8 || binary.BigEndian.Uint64(k[len(pAudit):]) != e.Seq {
				return fmt.Errorf("%w: entry stored under %x claims sequence %d", ErrAudit, k, e.Seq)
			}
			if e.Seq != prev.Seq+1 {
				return fmt.Errorf("%w: sequence %d follows %d", ErrAudit, e.Seq, prev.Seq)
			}
			if e.Prev != prev.Hash {
				return fmt.Errorf("%w: entry %d: prev %s, but entry %d has hash %s", ErrAudit, e.Seq, e.Prev, prev.Seq, prev.Hash)
			}
			if got := e.computeHash(); got != e.Hash {
				return fmt.Errorf("%w: entry %d: stored hash %s, content hashes to %s", ErrAudit, e.Seq, e.Hash, got)
			}
			hashes[e.Seq] = e.Hash
			prev = AuditHead{Seq: e.Seq, Hash: e.Hash, At: e.Time}
		}
		rep.Entries = prev.Seq
		if prev.Seq > 0 {
			rep.Head = prev
		}
		popts := badger.DefaultIteratorOptions
		popts.Prefix = []byte(pPublished)
		pit := txn.NewIterator(popts)
		defer pit.Close()
		for pit.Rewind(); pit.ValidForPrefix(popts.Prefix); pit.Next() {
			var p publishedHead
			if err := pit.Item().Value(func(b []byte) error { return json.Unmarshal(b, &p) }); err != nil {
				return fmt.Errorf("%w: published head record: %v", ErrAudit, err)
			}
			published = append(published, AuditHead{Seq: p.Seq, Hash: p.Hash, At: p.At})
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	if registryHead != nil {
		published = append(published, *registryHead)
	}
	for _, p := range published {
		rep.Published = append(rep.Published, p)
		h, ok := hashes[p.Seq]
		if !ok {
			return rep, fmt.Errorf("%w: published head %d is not in the chain (head %d)", ErrAudit, p.Seq, rep.Head.Seq)
		}
		if h != p.Hash {
			return rep, fmt.Errorf("%w: published head %d has hash %s, the chain has %s", ErrAudit, p.Seq, p.Hash, h)
		}
	}
	return rep, nil
}

// publishAudit publishes the chain head if it moved since the last
// publication, and records the publication.
func (s *Service) publishAudit(ctx context.Context) error {
	if s.cfg.Audit == nil {
		return nil
	}
	head := s.com.auditHead()
	if head.Seq == 0 || head.Seq <= s.lastPublished.Load() || head.Seq <= s.publishFloor() {
		return nil // publishFloor: never a head the registry may hold from before a restore (backup.go)
	}
	if err := s.cfg.Audit.PublishAuditHead(ctx, head.Seq, head.Hash); err != nil {
		s.stats.auditPublishErrors.Add(1)
		return fmt.Errorf("publish audit head %d: %w", head.Seq, err)
	}
	rec := publishedHead{Seq: head.Seq, Hash: head.Hash, At: s.now().UnixMilli()}
	if err := s.com.do(func(t *tx) error { return t.setJSON(seqKey(pPublished, head.Seq), rec) }); err != nil {
		return err
	}
	s.lastPublished.Store(head.Seq)
	s.stats.auditPublished.Add(1)
	s.log.Debug("published audit head", "seq", head.Seq, "hash", head.Hash)
	return nil
}

func (s *Service) loadLastPublished() error {
	return s.view(func(txn *badger.Txn) error {
		seq, err := lastSeq(txn, pPublished)
		s.lastPublished.Store(seq)
		return err
	})
}

func (s *Service) auditLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.AuditInterval)
	defer t.Stop()
	var last Stats
	for {
		if err := s.publishAudit(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("audit head not published", "err", err)
		}
		last = s.logStats(last)
		select {
		case <-ctx.Done():
			// One last try, so a clean shutdown publishes the final head.
			c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = s.publishAudit(c)
			cancel()
			return
		case <-t.C:
		}
	}
}

// logStats logs the counters if they changed since last.
func (s *Service) logStats(last Stats) Stats {
	st := s.Stats()
	if st.Sent == last.Sent && st.Delivered == last.Delivered && st.Received == last.Received &&
		st.Duplicates == last.Duplicates && st.Retries == last.Retries && st.RejectedTotal() == last.RejectedTotal() &&
		st.Failed == last.Failed && st.Pending == last.Pending {
		return last
	}
	s.log.Info("handover stats", "sent", st.Sent, "delivered", st.Delivered, "received", st.Received,
		"duplicates", st.Duplicates, "attempts", st.Attempts, "retries", st.Retries, "paused", st.Paused,
		"failed", st.Failed, "pending", st.Pending, "rejected", st.Rejected, "audit_seq", st.AuditHead.Seq)
	return st
}
