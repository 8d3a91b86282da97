package node

import (
	"fmt"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// walLogStore adapts raft-wal for hashicorp/raft v1.8 around
// hashicorp/raft#697: for a MonotonicLogStore, installSnapshot deletes every
// log while Raft keeps its cached last-log index, and a follower whose log
// ran ahead of the snapshot then panics with "log not found" in processLogs
// (seen here under partition + snapshot-install faults).
//
// Reporting the store as not monotonic makes Raft take the classic path:
// after a snapshot install it only compacts a prefix, its cache stays true,
// and the entries above the snapshot arrive with a gap below them. raft-wal
// needs consecutive indexes, so a batch that starts beyond the last stored
// index first clears the store (everything in it is covered by the
// snapshot Raft just installed; Raft's own monotonic path does the same).
type walLogStore struct {
	*wal.WAL
}

var _ raft.LogStore = walLogStore{}

// IsMonotonic reports false: see the type comment.
func (w walLogStore) IsMonotonic() bool { return false }

func (w walLogStore) StoreLog(l *raft.Log) error { return w.StoreLogs([]*raft.Log{l}) }

func (w walLogStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) > 0 {
		last, err := w.WAL.LastIndex()
		if err != nil {
			return err
		}
		if last > 0 && logs[0].Index > last+1 {
			first, err := w.WAL.FirstIndex()
			if err != nil {
				return err
			}
			if err := w.WAL.DeleteRange(first, last); err != nil {
				return fmt.Errorf("clear raft log below snapshot (%d-%d) before index %d: %w", first, last, logs[0].Index, err)
			}
		}
	}
	return w.WAL.StoreLogs(logs)
}
