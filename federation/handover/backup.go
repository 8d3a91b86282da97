package handover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Backup and restore of the handover store: the only copy of an
// organisation's cases (outbox, inbox, dedupe records, events, tracking,
// audit chain). Service.Backup streams every "ho/" key at one badger read
// timestamp (consistent) while the Service keeps working; RestoreStore
// loads such a stream into a fresh store of a STOPPED node and records a
// restore marker (key ho/restored). What a restore means, and how the
// Service handles it at its next start (checkRestored):
//
//   - Receipts already sent. Handovers received before the backup keep
//     their dedupe records (ho/s, ho/d): a sender that delivers one again
//     gets the same receipt and no second case. Handovers received AFTER
//     the backup are gone from the inbox although their senders hold our
//     receipts and will not send them again: they are lost here, and the
//     audit chain's gap (below) says how many entries went. A sender that
//     re-delivers one (its operator asked it to) is accepted as new.
//   - The audit head already published. The registry may hold a head of
//     the chain beyond the restored one. The Service does not refuse to
//     start then (ErrStoreBehind) and never publishes a lower head or a
//     second hash for a published sequence: at its first start after the
//     restore it appends an audit entry of kind AuditStoreRestored naming
//     the lost head (ID "published:<seq>", Digest its hash, Peer the
//     restored head "<seq>:<hash>") and publishes again only once the
//     chain has passed the lost head's sequence (restoreRecord.Floor).
//     VerifyAudit accepts the lost registry head while it is the one the
//     marker names.
//   - Handovers and events sent after the backup. The outbox lost them
//     (their sealed tokens and idempotency records): they are NOT re-sent
//     (this node no longer has them, and their recipients, which already
//     have them, would be the only source) and are reported as lost: the
//     restore marker and the log name the range of audit entries lost.
//     Events the recipients send about them later find no handover here.
//     A client that retries SendHandover with the same idempotency key
//     after the restore creates a new handover (the key's record is gone).
//
// The restore therefore loses exactly what was written after the backup,
// says so, and forks nothing silently.

// AuditStoreRestored is the audit entry kind of a restore marker.
const AuditStoreRestored = "store.restored"

var keyRestored = []byte("ho/restored")

// restoreRecord is stored under ho/restored by RestoreStore and completed
// by the Service's first start after it.
type restoreRecord struct {
	At           int64  `json:"at"`            // Unix ms of the restore
	BackupCommit uint64 `json:"backup_commit"` // the restored store's commit sequence
	BackupSeq    uint64 `json:"backup_seq"`    // the restored audit head
	BackupHash   string `json:"backup_hash"`
	Marked       bool   `json:"marked"` // the marker entry is in the chain
	// LostSeq/LostHash: the published head the registry held beyond the
	// restored chain at the first start (0: none). Floor: heads at or
	// below it are not published.
	LostSeq  uint64 `json:"lost_seq,omitempty"`
	LostHash string `json:"lost_hash,omitempty"`
	Floor    uint64 `json:"floor,omitempty"`
}

// BackupMeta describes a handover backup as the store was just before the
// stream started (the stream may hold slightly more: it is a consistent
// cut taken a moment later; RestoreStore reports the exact values).
type BackupMeta struct {
	Commit    uint64
	AuditHead AuditHead
}

// Backup writes every key of the store (badger's backup format, prefix
// "ho/") to w, at one read timestamp, while the Service keeps working.
func (s *Service) Backup(ctx context.Context, w io.Writer) (BackupMeta, error) {
	done, err := s.enter()
	if err != nil {
		return BackupMeta{}, err
	}
	defer done()
	var meta BackupMeta
	if meta.Commit, err = loadCommitSeq(s.db); err != nil {
		return meta, err
	}
	meta.AuditHead = s.com.auditHead()
	st := s.db.NewStream()
	st.Prefix = []byte("ho/")
	st.LogPrefix = "handover backup"
	if _, err := st.Backup(w, 0); err != nil {
		return meta, fmt.Errorf("handover: backup: %w", err)
	}
	return meta, ctx.Err()
}

// RestoreReport says what RestoreStore did.
type RestoreReport struct {
	AsideDir  string // where the replaced store went ("" if there was none)
	Commit    uint64
	AuditHead AuditHead
	Cases     int // inbox entries restored
	Outbox    int // outbox entries restored
}

// RestoreStore replaces the handover store in dir (the node must be
// stopped) with the backup read from r: the current store, if any, is
// moved aside to dir.replaced-<time>; the backup is loaded into a fresh
// store opened with OpenDB; the restore marker is written. The high-water
// mark file starts again from the restored store (New creates it).
func RestoreStore(dir string, r io.Reader, now time.Time) (*RestoreReport, error) {
	rep := &RestoreReport{}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		rep.AsideDir = dir + ".replaced-" + now.UTC().Format("20060102T150405Z")
		if err := os.Rename(dir, rep.AsideDir); err != nil {
			return nil, fmt.Errorf("handover: move the current store aside: %w", err)
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	db, err := OpenDB(dir, nil)
	if err != nil {
		return rep, err
	}
	defer db.Close()
	if err := db.Load(r, 256); err != nil {
		return rep, fmt.Errorf("handover: load backup: %w", err)
	}
	if rep.Commit, err = loadCommitSeq(db); err != nil {
		return rep, err
	}
	if rep.AuditHead, err = loadAuditHead(db); err != nil {
		return rep, err
	}
	err = db.View(func(txn *badger.Txn) error {
		for _, p := range []struct {
			prefix string
			n      *int
		}{{pInbox, &rep.Cases}, {pOutbox, &rep.Outbox}} {
			opts := badger.DefaultIteratorOptions
			opts.PrefetchValues = false
			opts.Prefix = []byte(p.prefix)
			it := txn.NewIterator(opts)
			for it.Rewind(); it.Valid(); it.Next() {
				*p.n++
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	rec := restoreRecord{At: now.UnixMilli(), BackupCommit: rep.Commit, BackupSeq: rep.AuditHead.Seq, BackupHash: rep.AuditHead.Hash}
	b, _ := json.Marshal(rec)
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(keyRestored, b) }); err != nil {
		return rep, fmt.Errorf("handover: write the restore marker: %w", err)
	}
	return rep, db.Sync()
}

func loadRestoreRecord(db *badger.DB) (*restoreRecord, error) {
	var rec *restoreRecord
	err := db.View(func(txn *badger.Txn) error {
		var r restoreRecord
		ok, err := getJSON(txn, keyRestored, &r)
		if ok {
			rec = &r
		}
		return err
	})
	return rec, err
}

// checkRestored runs at New, before checkPublishedHead: on the first start
// after a restore it compares the restored chain with the head the
// registry holds and appends the restore marker entry (see above).
func (s *Service) checkRestored() error {
	rec, err := loadRestoreRecord(s.db)
	if err != nil || rec == nil {
		return err
	}
	if rec.Marked {
		s.restore = rec
		return nil
	}
	head := s.com.auditHead()
	if s.cfg.AuditHeads != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		seq, hash, err := s.cfg.AuditHeads.PublishedAuditHead(ctx, s.cfg.OrgID)
		cancel()
		switch {
		case errors.Is(err, ErrNoAuditHead):
		case err != nil:
			// Unknown now: not marked yet; the next start asks again. Do
			// not publish meanwhile (a lower head would be refused, a
			// second hash for a sequence would fork).
			s.log.Warn("restored handover store: the published audit head cannot be read; audit heads are not published until it can", "err", err)
			rec.Floor = ^uint64(0)
			s.restore = rec
			return nil
		case seq > head.Seq:
			rec.LostSeq, rec.LostHash = seq, hash
		}
	}
	// The marker entry is the next one in the chain.
	rec.Floor = max(rec.LostSeq, head.Seq)
	rec.Marked = true
	peer := fmt.Sprintf("%d:%s", head.Seq, head.Hash)
	id := fmt.Sprintf("published:%d", rec.LostSeq)
	err = s.com.do(func(t *tx) error {
		t.audit(AuditStoreRestored, id, rec.LostHash, peer)
		return t.setJSON(keyRestored, rec)
	})
	if err != nil {
		return fmt.Errorf("handover: record the restore in the audit chain: %w", err)
	}
	s.restore = rec
	if rec.LostSeq > 0 {
		s.log.Warn("handover store restored from a backup: audit entries after the backup are lost (handovers and events sent or received after it are not in this store; "+
			"senders of lost incoming cases hold our receipts; outgoing ones are with their recipients and are not re-sent); "+
			"audit heads are published again once the chain passes the lost head",
			"restored_seq", head.Seq, "lost_published_seq", rec.LostSeq, "lost_entries", rec.LostSeq-head.Seq, "marker_seq", head.Seq+1)
	} else {
		s.log.Warn("handover store restored from a backup; the registry holds no audit head beyond it", "restored_seq", head.Seq)
	}
	return nil
}

// RestoreState reports the restore marker, if the store was restored.
type RestoreState struct {
	Restored  bool
	BackupSeq uint64 // audit head of the backup
	LostSeq   uint64 // published head lost by the restore (0: none)
	Floor     uint64 // heads at or below are not published
}

// Restore returns what the store knows of a restore.
func (s *Service) Restore() RestoreState {
	r := s.restore
	if r == nil {
		return RestoreState{}
	}
	return RestoreState{Restored: true, BackupSeq: r.BackupSeq, LostSeq: r.LostSeq, Floor: r.Floor}
}

// publishFloor: audit heads at or below it are not published.
func (s *Service) publishFloor() uint64 {
	if s.restore == nil {
		return 0
	}
	return s.restore.Floor
}

// lostHead reports whether the registry head seq/hash is the one the
// restore marker names as lost.
func (s *Service) lostHead(seq uint64, hash string) bool {
	return s.restore != nil && s.restore.LostSeq == seq && s.restore.LostHash == hash && seq > 0
}
