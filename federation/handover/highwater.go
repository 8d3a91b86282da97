package handover

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The handover store is the only copy of an organisation's cases, and
// badger drops a damaged tail of its write-ahead log on open without a word
// (see the package doc, "Storage and durability"). So the committer numbers its write
// batches (the commit sequence, stored under commitKey in the same badger
// transaction as the batch) and, after a batch is durable, records that
// number in a small synced file next to badger's files: the high-water
// mark. A store that opens with an older commit sequence than its
// high-water mark has lost acknowledged commits, and New refuses it
// (ErrStoreBehind) instead of serving it.

// HighWaterFile is the name of the high-water mark file in the badger
// directory of the handover store.
const HighWaterFile = "VERBUND-HANDOVER-HIGHWATER"

// commitKey holds the commit sequence: the number of write batches the
// store has committed (8 bytes big endian).
var commitKey = []byte("ho/cs")

// ErrStoreBehind means the handover store holds fewer commits than it once
// acknowledged (its high-water mark) or than the registry holds of its
// audit chain: acknowledged cases would be missing. The node must not serve
// it.
var ErrStoreBehind = errors.New("handover: store is behind what it acknowledged")

// ErrHighWaterCorrupt means the high-water mark file cannot be read.
var ErrHighWaterCorrupt = errors.New("handover: high-water mark file is damaged")

// highWater is the synced high-water mark file: one 16-byte record (commit
// sequence, CRC-32C of it, magic) rewritten in place, one fdatasync each.
type highWater struct {
	path string
	f    *os.File
}

const hwMagic = 0x56424857 // "VBHW"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeHighWater(seq uint64) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b[0:8], seq)
	binary.BigEndian.PutUint32(b[8:12], crc32.Checksum(b[0:8], castagnoli))
	binary.BigEndian.PutUint32(b[12:16], hwMagic)
	return b
}

// openHighWater opens the mark file in dir. exists is false for a store
// that has none yet (new, or from a version without it); then the file is
// created holding seq.
func openHighWater(dir string, seq uint64) (hw *highWater, recorded uint64, exists bool, err error) {
	path := filepath.Join(dir, HighWaterFile)
	f, err := os.OpenFile(path, os.O_RDWR, 0o600)
	if errors.Is(err, os.ErrNotExist) {
		// Create it whole (temp file, rename, sync the directory), so that
		// a crash here never leaves a short file behind.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, encodeHighWater(seq), 0o600); err != nil {
			return nil, 0, false, fmt.Errorf("handover: create %s: %w", path, err)
		}
		if err := syncFile(tmp); err != nil {
			return nil, 0, false, err
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, 0, false, fmt.Errorf("handover: create %s: %w", path, err)
		}
		if err := syncFile(dir); err != nil {
			return nil, 0, false, err
		}
		if f, err = os.OpenFile(path, os.O_RDWR, 0o600); err != nil {
			return nil, 0, false, fmt.Errorf("handover: open %s: %w", path, err)
		}
		return &highWater{path: path, f: f}, seq, false, nil
	}
	if err != nil {
		return nil, 0, false, fmt.Errorf("handover: open %s: %w", path, err)
	}
	b := make([]byte, 16)
	if _, err := io.ReadFull(f, b); err != nil {
		f.Close()
		return nil, 0, true, fmt.Errorf("%w: %s: %v", ErrHighWaterCorrupt, path, err)
	}
	recorded = binary.BigEndian.Uint64(b[0:8])
	if binary.BigEndian.Uint32(b[12:16]) != hwMagic || binary.BigEndian.Uint32(b[8:12]) != crc32.Checksum(b[0:8], castagnoli) {
		f.Close()
		return nil, 0, true, fmt.Errorf("%w: %s: checksum mismatch", ErrHighWaterCorrupt, path)
	}
	return &highWater{path: path, f: f}, recorded, true, nil
}

// set records seq and syncs it. A 16-byte write at offset 0 does not tear
// on a power cut (it lies within one sector).
func (h *highWater) set(seq uint64) error {
	if _, err := h.f.WriteAt(encodeHighWater(seq), 0); err != nil {
		return fmt.Errorf("handover: write %s: %w", h.path, err)
	}
	if err := h.f.Sync(); err != nil {
		return fmt.Errorf("handover: sync %s: %w", h.path, err)
	}
	return nil
}

func (h *highWater) close() error {
	if h == nil {
		return nil
	}
	return h.f.Close()
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("handover: sync %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("handover: sync %s: %w", path, err)
	}
	return nil
}

// loadCommitSeq reads the commit sequence (0 for a store that has none).
func loadCommitSeq(db *badger.DB) (uint64, error) {
	var seq uint64
	err := db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(commitKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("handover: bad commit sequence value (%d bytes)", len(v))
			}
			seq = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("handover: read commit sequence: %w", err)
	}
	return seq, nil
}

func encodeSeq(seq uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, seq)
	return b
}

// checkPublishedHead refuses a store whose audit chain is shorter than the
// head the registry holds for this organisation (Config.AuditHeads): the
// node published a head it no longer has. Unknown or unreachable heads are
// no reason to refuse (the registry copy may lag; that is not a loss).
func (s *Service) checkPublishedHead() error {
	if s.cfg.AuditHeads == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	seq, hash, err := s.cfg.AuditHeads.PublishedAuditHead(ctx, s.cfg.OrgID)
	if errors.Is(err, ErrNoAuditHead) {
		return nil
	}
	if err != nil {
		s.log.Warn("published audit head not checked at start", "err", err)
		return nil
	}
	if s.lostHead(seq, hash) {
		return nil // lost by a restore, named by its marker entry (backup.go)
	}
	if head := s.com.auditHead(); head.Seq < seq {
		return fmt.Errorf("%w: the store's audit chain ends at entry %d, but the registry holds the published head %d (%s) of organisation %s: "+
			"entries %d..%d are missing; restore the handover directory from a backup", ErrStoreBehind, head.Seq, seq, hash, s.cfg.OrgID, head.Seq+1, seq)
	}
	return nil
}
