package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node/raftlog"
)

// The Raft log lives in DataDir/raft/wal (package raftlog): segment files
// and the "stable" file holding Raft's term and vote. Snapshots live in
// DataDir/raft/snapshots (raft.FileSnapshotStore).
//
// A node refuses to start on a log that lies, in three ways:
//   - raftlog.Open finds damage other than a torn tail (a *raftlog.CorruptError
//     naming the file, the offset and the Raft index);
//   - the log ends before what the node's own state has applied and no
//     snapshot covers the difference (a lost tail segment, or a disk that
//     did not keep its syncs): ErrRaftLogBehind. Replaying such a log would
//     reuse indexes the state already applied for different entries;
//   - DataDir/raft/log holds the badger log of earlier versions, which this
//     version does not read: ErrRaftLogOldFormat.
//
// Each refusal names the recovery: stop the node and run
// "verbund recover raft-log --data DIR" (RecoverRaftLog).
const (
	raftLogDir    = "wal"
	oldRaftLogDir = "log" // the badger log store of versions before the raftlog package
	logCacheSize  = 512
)

// Sentinel errors of a refused Raft log (besides raftlog.ErrCorrupt).
var (
	// ErrRaftLogBehind: the Raft log ends before the index the registry
	// state has applied, and no snapshot covers the gap.
	ErrRaftLogBehind = errors.New("raft log ends before the applied state")
	// ErrRaftLogOldFormat: the data dir holds a badger Raft log of an
	// earlier version.
	ErrRaftLogOldFormat = errors.New("raft log in the old badger format")
)

// recoverHint is appended to every refusal.
func recoverHint(dataDir string) string {
	return fmt.Sprintf("; to recover, stop the node and run: verbund recover raft-log --data %s "+
		"(the node then catches up from the leader; a single-node cluster can only go back to a snapshot, see the README's Operations section)", dataDir)
}

// openRaftLog opens the Raft log store, refusing an old badger log and a
// corrupt log.
func (n *Node) openRaftLog() error {
	old := n.cfg.path("raft", oldRaftLogDir)
	if st, err := os.Stat(old); err == nil && st.IsDir() {
		return fmt.Errorf("%w: %s is a Raft log written by an earlier version (badger), which this version does not read%s",
			ErrRaftLogOldFormat, old, recoverHint(n.cfg.DataDir))
	}
	store, err := raftlog.Open(n.cfg.path("raft", raftLogDir), raftlog.Options{FS: n.cfg.RaftLogFS, Logger: n.log})
	if err != nil {
		if errors.Is(err, raftlog.ErrCorrupt) {
			return fmt.Errorf("refusing to start on a damaged raft log in %s: %w%s", n.cfg.DataDir, err, recoverHint(n.cfg.DataDir))
		}
		return fmt.Errorf("open raft log: %w", err)
	}
	n.logStore = store
	cache, err := raft.NewLogCache(logCacheSize, store)
	if err != nil {
		return fmt.Errorf("raft log cache: %w", err)
	}
	n.logs = cache
	return nil
}

// checkRaftLog refuses a log that ends before the applied state, unless the
// latest snapshot covers the state (then Raft starts from the snapshot and
// the log's last index is not what Raft uses). There is no exception:
// RecoverRaftLog moves the state aside with the log.
func (n *Node) checkRaftLog() error {
	last, err := n.logStore.LastIndex()
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	var snapIdx uint64
	snaps, err := n.snaps.List()
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	if len(snaps) > 0 {
		snapIdx = snaps[0].Index
	}
	applied := n.fsm.AppliedIndex()
	if last >= applied || snapIdx >= applied {
		return nil
	}
	return fmt.Errorf("%w: the raft log in %s ends at index %d, but the registry state has applied index %d and the latest snapshot is at index %d: "+
		"entries %d-%d are missing from the log (a lost tail segment, or a disk that did not keep its syncs); starting would reuse those indexes for different entries%s",
		ErrRaftLogBehind, n.cfg.path("raft", raftLogDir), last, applied, snapIdx, max(last, snapIdx)+1, applied, recoverHint(n.cfg.DataDir))
}

// RaftLogRecovery reports what RecoverRaftLog did.
type RaftLogRecovery struct {
	// Moved lists the files moved aside; AsideDir is where they went.
	Moved    []string
	AsideDir string
	// StateDir is where the registry state was moved.
	StateDir string
	// OldFormatDir is where an old badger log was moved ("" if none).
	OldFormatDir string
	// Term and VotedFor are the kept stable values (term and vote).
	Term     uint64
	VotedFor string
}

// RecoverRaftLog prepares a stopped node whose Raft log was refused to
// start with an empty log: it moves the log's segment files aside into
// DataDir/raft/wal.damaged-<time> (kept for analysis) and KEEPS the stable
// file, Raft's current term and vote (without them the node could vote
// twice in one term). An old badger log (DataDir/raft/log) is moved aside
// whole, its term and vote carried over into the new stable file. The
// registry state (DataDir/state) is moved aside too, to
// DataDir/state.replaced-<time>: a state ahead of an empty log is exactly
// what the start check refuses, and an exception for recovered nodes would
// also let a second loss through (the control run of TestPowerLossControl
// found that). The node then starts empty and catches up from the leader,
// by log or snapshot; its local snapshots, if any, restore it first.
// Nothing the cluster acknowledged is lost as long as a quorum of voters
// still holds it. A single-node cluster has nobody to catch up from:
// restore a snapshot instead.
//
// The node must not be running. fsys is the file layer of the log (nil:
// the operating system), as in Config.RaftLogFS.
func RecoverRaftLog(dataDir string, fsys raftlog.FS, now time.Time) (*RaftLogRecovery, error) {
	if fsys == nil {
		fsys = raftlog.OS{}
	}
	raftDir := filepath.Join(dataDir, "raft")
	if _, err := os.Stat(filepath.Join(dataDir, "state")); err != nil {
		return nil, fmt.Errorf("%s does not look like a node's data dir: %w", dataDir, err)
	}
	if err := checkStopped(dataDir); err != nil {
		return nil, err
	}
	rec := &RaftLogRecovery{}
	stamp := now.UTC().Format("20060102T150405Z")
	dir := filepath.Join(raftDir, raftLogDir)
	names, err := fsys.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var segs []string
	for _, name := range names {
		if strings.HasPrefix(name, "seg-") || strings.HasSuffix(name, ".tmp") {
			segs = append(segs, name)
		}
	}
	if len(segs) > 0 {
		rec.AsideDir = filepath.Join(raftDir, raftLogDir+".damaged-"+stamp)
		if err := fsys.MkdirAll(rec.AsideDir); err != nil {
			return nil, fmt.Errorf("create %s: %w", rec.AsideDir, err)
		}
		for _, name := range segs {
			if err := fsys.Rename(filepath.Join(dir, name), filepath.Join(rec.AsideDir, name)); err != nil {
				return nil, fmt.Errorf("move %s aside: %w", name, err)
			}
			rec.Moved = append(rec.Moved, name)
		}
		for _, d := range []string{rec.AsideDir, dir} {
			if err := fsys.SyncDir(d); err != nil {
				return nil, fmt.Errorf("sync %s: %w", d, err)
			}
		}
	}
	// Open the emptied log: this checks the stable file, and carries an old
	// badger log's term and vote over.
	store, err := raftlog.Open(dir, raftlog.Options{FS: fsys})
	if err != nil {
		return rec, fmt.Errorf("the stable file (term and vote) is damaged too, it was kept: %w", err)
	}
	defer store.Close()
	old := filepath.Join(raftDir, oldRaftLogDir)
	if st, err := os.Stat(old); err == nil && st.IsDir() {
		if err := carryOldStable(old, store); err != nil {
			return rec, err
		}
		rec.OldFormatDir = filepath.Join(raftDir, oldRaftLogDir+".badger-"+stamp)
		if err := os.Rename(old, rec.OldFormatDir); err != nil {
			return rec, fmt.Errorf("move %s aside: %w", old, err)
		}
		if err := (raftlog.OS{}).SyncDir(raftDir); err != nil {
			return rec, fmt.Errorf("sync %s: %w", raftDir, err)
		}
	}
	if rec.Term, err = store.GetUint64([]byte("CurrentTerm")); err != nil {
		return rec, err
	}
	if v, err := store.Get([]byte("LastVoteCand")); err == nil {
		rec.VotedFor = string(v)
	}
	rec.StateDir = filepath.Join(dataDir, "state.replaced-"+stamp)
	if err := os.Rename(filepath.Join(dataDir, "state"), rec.StateDir); err != nil {
		return rec, fmt.Errorf("move the registry state aside: %w", err)
	}
	if err := (raftlog.OS{}).SyncDir(dataDir); err != nil {
		return rec, fmt.Errorf("sync %s: %w", dataDir, err)
	}
	return rec, nil
}

// stableKeys are the keys hashicorp/raft keeps in its StableStore.
var stableKeys = []string{"CurrentTerm", "LastVoteTerm", "LastVoteCand"}

// carryOldStable copies Raft's term and vote from an old badger log store
// (keys "s/<name>") into the new store, unless the new one has them.
func carryOldStable(dir string, to *raftlog.Store) error {
	if t, err := to.GetUint64([]byte("CurrentTerm")); err != nil || t != 0 {
		return err // the new store has its own term: keep it
	}
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		return fmt.Errorf("open old raft log %s for its term and vote: %w", dir, err)
	}
	defer db.Close()
	return db.View(func(txn *badger.Txn) error {
		for _, k := range stableKeys {
			item, err := txn.Get([]byte("s/" + k))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("old raft log %s: %w", dir, err)
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if err := to.Set([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
}
