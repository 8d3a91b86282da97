package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Raft snapshots live in DataDir/raft/snapshots/<term-index-ms>/ as
// raft.FileSnapshotStore writes them: state.bin (checked by raft against a
// CRC64 on restore) and meta.json (index, term, the Raft configuration,
// size, CRC), which raft does not check. A flipped byte in meta.json that
// still parses (say in a server ID or address of the stored configuration)
// handed a one-voter node a configuration without itself: it never became
// leader. checkedSnapshotStore closes that gap with meta.sha256 next to
// meta.json: the SHA-256 of meta.json in sha256sum format
// ("<hex>  meta.json"), so an operator can check it with sha256sum -c.
//
// Snapshots without meta.sha256 are accepted unverified (with a warning):
// those written before this check existed, and one whose checksum write was
// cut off by a crash after raft moved the snapshot into place (refusing it
// would keep a node from starting after a power cut at that instant). So
// deleting meta.sha256 turns the check off for that snapshot, which stays
// covered only by raft's own JSON parse; the check is against damage, not
// against someone who can write the data dir. A meta.sha256 that does not
// match, or cannot be read or parsed, is ErrSnapshotCorrupt. A directory
// without meta.json is not a snapshot (raft's store skips it too; it may be
// one being reaped while List runs).
const (
	snapshotsDir     = "snapshots" // raft.FileSnapshotStore's directory under its base
	snapshotMetaFile = "meta.json"
	snapshotSumFile  = "meta.sha256"
)

// ErrSnapshotCorrupt: a Raft snapshot's meta.json does not match its
// meta.sha256 (or the checksum file is damaged). The error names the file.
var ErrSnapshotCorrupt = errors.New("raft snapshot metadata corrupt")

// checkedSnapshotStore is a raft.SnapshotStore over a raft.FileSnapshotStore
// that checksums each snapshot's meta.json (see above). List verifies every
// snapshot directory, including those raft's store skips because their
// meta.json does not parse, and fails on the first damaged one; Open
// verifies the snapshot it opens.
type checkedSnapshotStore struct {
	inner *raft.FileSnapshotStore
	dir   string // base/snapshots
	log   *slog.Logger

	mu   sync.Mutex
	last snapshotWritten // the last snapshot written (metrics)
}

// snapshotWritten describes a snapshot this process wrote: its index, its
// size, and the time from Create to the sink's Close (the state machine
// streaming its state, the fsyncs, the checksum).
type snapshotWritten struct {
	count   uint64
	index   uint64
	bytes   int64
	seconds float64
}

// written returns the last snapshot written and how many were.
func (s *checkedSnapshotStore) written() snapshotWritten {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

var _ raft.SnapshotStore = (*checkedSnapshotStore)(nil)

// newCheckedSnapshotStore wraps inner, a FileSnapshotStore created on base.
func newCheckedSnapshotStore(inner *raft.FileSnapshotStore, base string, log *slog.Logger) *checkedSnapshotStore {
	return &checkedSnapshotStore{inner: inner, dir: filepath.Join(base, snapshotsDir), log: log}
}

// Create starts a snapshot; its sink writes meta.sha256 once the inner
// sink's Close has moved the snapshot into place.
func (s *checkedSnapshotStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.inner.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &checkedSnapshotSink{SnapshotSink: sink, dir: filepath.Join(s.dir, sink.ID()), store: s, index: index, start: time.Now()}, nil
}

// List verifies every snapshot directory, then lists as the inner store.
func (s *checkedSnapshotStore) List() ([]*raft.SnapshotMeta, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		if err := s.verify(e.Name()); err != nil {
			return nil, err
		}
	}
	return s.inner.List()
}

// Open verifies the snapshot's meta.json, then opens it.
func (s *checkedSnapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	if err := s.verify(id); err != nil {
		return nil, nil, err
	}
	return s.inner.Open(id)
}

// verify checks the meta.json of snapshot id against its meta.sha256.
func (s *checkedSnapshotStore) verify(id string) error {
	dir := filepath.Join(s.dir, id)
	metaPath := filepath.Join(dir, snapshotMetaFile)
	sumPath := filepath.Join(dir, snapshotSumFile)
	sumText, err := os.ReadFile(sumPath)
	if errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("raft snapshot has no metadata checksum, not verified (written before checksums, or cut off by a crash)", "file", metaPath)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: read %s: %v", ErrSnapshotCorrupt, sumPath, err)
	}
	want, ok := parseSumFile(sumText)
	if !ok {
		return fmt.Errorf("%w: %s is not a SHA-256 line for %s", ErrSnapshotCorrupt, sumPath, snapshotMetaFile)
	}
	meta, err := os.ReadFile(metaPath)
	if errors.Is(err, fs.ErrNotExist) {
		// Being reaped right now (os.RemoveAll unlinks in directory
		// order), or lost: either way not a snapshot, and raft's store
		// skips it too.
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: read %s: %v", ErrSnapshotCorrupt, metaPath, err)
	}
	if got := sha256.Sum256(meta); !bytes.Equal(got[:], want) {
		return fmt.Errorf("%w: %s does not match its checksum in %s", ErrSnapshotCorrupt, metaPath, snapshotSumFile)
	}
	return nil
}

// sumLine is the content of meta.sha256 for meta.json's bytes.
func sumLine(meta []byte) []byte {
	sum := sha256.Sum256(meta)
	return []byte(hex.EncodeToString(sum[:]) + "  " + snapshotMetaFile + "\n")
}

// parseSumFile accepts exactly what sumLine writes.
func parseSumFile(b []byte) ([]byte, bool) {
	hexSum, rest, ok := strings.Cut(string(b), "  ")
	if !ok || rest != snapshotMetaFile+"\n" || len(hexSum) != 2*sha256.Size {
		return nil, false
	}
	sum, err := hex.DecodeString(hexSum)
	return sum, err == nil
}

// checkedSnapshotSink writes meta.sha256 after the inner sink's Close.
type checkedSnapshotSink struct {
	raft.SnapshotSink
	dir    string // the snapshot's final directory
	closed bool

	store *checkedSnapshotStore
	index uint64
	start time.Time
	bytes int64
}

func (k *checkedSnapshotSink) Write(p []byte) (int, error) {
	n, err := k.SnapshotSink.Write(p)
	k.bytes += int64(n)
	return n, err
}

// Close closes the inner sink (which writes meta.json, moves the snapshot
// into place and reaps old ones), then writes meta.sha256 atomically: a
// temporary file, fsynced, renamed, the directory fsynced.
func (k *checkedSnapshotSink) Close() error {
	if k.closed {
		return nil
	}
	k.closed = true
	if err := k.SnapshotSink.Close(); err != nil {
		return err
	}
	meta, err := os.ReadFile(filepath.Join(k.dir, snapshotMetaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // reaped at once by the inner Close (older than those retained)
	}
	if err != nil {
		return fmt.Errorf("snapshot checksum: %w", err)
	}
	if err := writeFileSynced(filepath.Join(k.dir, snapshotSumFile), sumLine(meta)); err != nil {
		return fmt.Errorf("snapshot checksum: %w", err)
	}
	if s := k.store; s != nil {
		secs := time.Since(k.start).Seconds()
		s.mu.Lock()
		s.last = snapshotWritten{count: s.last.count + 1, index: k.index, bytes: k.bytes, seconds: secs}
		s.mu.Unlock()
		s.log.Info("raft snapshot written", "index", k.index, "bytes", k.bytes, "seconds", secs)
	}
	return nil
}

// writeFileSynced replaces path with data: temp file, fsync, rename, fsync
// of the directory.
func writeFileSynced(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// checkSnapshots refuses to start on a snapshot whose meta.json fails its
// checksum. Raft itself would skip a snapshot it cannot open and restore an
// older one, and with NoSnapshotRestoreOnStart it takes the newest
// snapshot's configuration from List without opening it: either way a
// damaged snapshot would be used or passed over silently.
func (n *Node) checkSnapshots() error {
	if _, err := n.snaps.List(); err != nil {
		if errors.Is(err, ErrSnapshotCorrupt) {
			return fmt.Errorf("refusing to start on a damaged raft snapshot in %s: %w; to recover, stop the node and move that snapshot's directory out of %s "+
				"(Raft then starts from an older snapshot and the log, or a member of a multi-voter cluster gets a snapshot from the leader)",
				n.cfg.DataDir, err, n.snaps.dir)
		}
		return fmt.Errorf("list snapshots: %w", err)
	}
	return nil
}
