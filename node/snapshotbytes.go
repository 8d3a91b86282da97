package node

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Raft snapshots by log bytes. hashicorp/raft snapshots after
// SnapshotThreshold entries, whatever they weigh: with bulk imports (1,000
// commands, about 1 MiB, per entry) 16,384 entries are 16 GiB of log, so no
// snapshot is ever taken and the log keeps a second copy of the whole
// registry. The node counts the bytes it appends to its log and takes a
// snapshot itself (raft.Snapshot) once SnapshotThresholdBytes have been
// appended since its last one; for that snapshot it also lowers Raft's
// TrailingLogs so that about TrailingLogBytes of log stay behind (a lagging
// follower catches up from those, a later one gets the snapshot), and sets
// it back afterwards, so snapshots Raft takes by entry count keep the
// configured TrailingLogs.

// countedLogs counts the bytes of the entries stored through it.
type countedLogs struct {
	raft.LogStore
	n      *atomic.Uint64
	notify chan<- struct{}
}

func (l countedLogs) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

func (l countedLogs) StoreLogs(logs []*raft.Log) error {
	if err := l.LogStore.StoreLogs(logs); err != nil {
		return err
	}
	var b uint64
	for _, e := range logs {
		b += uint64(len(e.Data) + len(e.Extensions))
	}
	l.n.Add(b)
	select {
	case l.notify <- struct{}{}:
	default:
	}
	return nil
}

// minTrailingLogs is the fewest entries a byte-triggered snapshot leaves.
const minTrailingLogs = 16

// snapshotBytesLoop takes a snapshot whenever SnapshotThresholdBytes of
// log have been appended since the last one this node took or saw.
func (n *Node) snapshotBytesLoop(ctx context.Context) {
	threshold := n.cfg.SnapshotThresholdBytes
	if threshold == 0 {
		return
	}
	var base uint64 // n.logBytes at the last snapshot
	lastSnap, lastSize := n.latestSnapshot()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.logBytesC:
		}
		appended := n.logBytes.Load()
		if appended-base < n.snapshotThreshold(lastSize) {
			continue
		}
		if idx, size := n.latestSnapshot(); idx != lastSnap {
			// Raft took one by entry count meanwhile: count from here.
			lastSnap, lastSize, base = idx, size, appended
			continue
		}
		entries := n.raft.LastIndex() - lastSnap
		if entries == 0 {
			continue
		}
		avg := max((appended-base)/entries, 1)
		trailing := min(max(n.cfg.TrailingLogBytes/avg, minTrailingLogs), n.cfg.TrailingLogs)
		start := time.Now()
		err := n.snapshotWithTrailing(trailing)
		// What was appended while the snapshot was written counts
		// towards the next one (a long snapshot under a bulk load is
		// followed by the next at once if the threshold passed again).
		base = appended
		lastSnap, lastSize = n.latestSnapshot()
		switch {
		case err == nil:
			n.log.Info("raft snapshot by log bytes", "appended_bytes", appended, "threshold_bytes", n.snapshotThreshold(lastSize),
				"index", lastSnap, "trailing_logs", trailing, "took", time.Since(start).Round(time.Millisecond))
		case errors.Is(err, raft.ErrNothingNewToSnapshot):
		default:
			if ctx.Err() == nil {
				n.log.Warn("raft snapshot by log bytes failed", "err", err)
			}
		}
	}
}

// snapshotWithTrailing takes a Raft snapshot that leaves trailing entries
// of log behind, then restores the configured TrailingLogs.
func (n *Node) snapshotWithTrailing(trailing uint64) error {
	rc := n.raft.ReloadableConfig()
	if trailing < rc.TrailingLogs {
		low := rc
		low.TrailingLogs = trailing
		if err := n.raft.ReloadConfig(low); err != nil {
			return err
		}
		defer func() {
			cur := n.raft.ReloadableConfig()
			cur.TrailingLogs = rc.TrailingLogs
			_ = n.raft.ReloadConfig(cur)
		}()
	}
	return n.raft.Snapshot().Error()
}

// snapshotThreshold is the log bytes after which the next snapshot is
// taken: SnapshotThresholdBytes, or SnapshotLogRatio times the size of the
// last snapshot (lastSize) if that is more.
func (n *Node) snapshotThreshold(lastSize int64) uint64 {
	t := n.cfg.SnapshotThresholdBytes
	if r := n.cfg.SnapshotLogRatio; r > 0 && lastSize > 0 {
		t = max(t, uint64(r*float64(lastSize)))
	}
	return t
}

// latestSnapshot is the index and size of the newest snapshot on disk (0, 0
// if none).
func (n *Node) latestSnapshot() (index uint64, size int64) {
	s, err := n.snaps.List()
	if err != nil || len(s) == 0 {
		return 0, 0
	}
	return s[0].Index, s[0].Size
}
