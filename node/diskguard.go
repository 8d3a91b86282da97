package node

import (
	"fmt"
	"path/filepath"

	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node/diskspace"
)

// Disk guard settings (Config.DiskReserveBytes).
const (
	// DefaultDiskReserve is the free space below which a node refuses new
	// writes: room for what is under way when the guard closes (Raft
	// entries the leader still replicates and every server applies,
	// badger's memtable and compactions, handover receipts and audit
	// entries) without ever reaching ENOSPC, on which badger's
	// memory-mapped log crashes the process.
	DefaultDiskReserve = 256 << 20
	// DiskGuardOff turns the guard off.
	DiskGuardOff = -1
	// minDiskReserve is the smallest reserve Validate accepts.
	minDiskReserve = 1 << 20
)

// newDiskGuard returns the node's disk guard (nil when turned off): it
// measures the file system holding the data dir at most every 250 ms, and
// while fewer than DiskReserveBytes are free it refuses, with a
// *diskspace.FullError (connecterr: resource_exhausted, retryable):
//
//   - registry writes this node would propose as leader (the admission's
//     Gate: a follower forwards, and the leader decides by its own disk);
//   - SendHandover, case steps and incoming deliveries (handover.Config.Space;
//     senders retry a delivery refused this way);
//   - key rotation (it writes key files here before publishing them).
//
// Reads, Raft replication, elections and everything already under way
// continue: the reserve is their room. Below the floor (half the reserve)
// the Raft log takes no more entries either (guardedLogs), so the node's
// stores stop growing before the disk is really full. Nothing needs
// restarting when space returns; the next measurement admits writes again.
//
// A voter whose disk is full does not take the cluster down: as leader it
// refuses writes but keeps leading and answering reads; as follower it
// keeps voting, replicates while the reserve lasts, and below the floor
// refuses the leader's entries (the leader retries them, the others form
// the quorum) and catches up once space returns. Stores mounted on another
// file system below the data dir are not measured.
func newDiskGuard(cfg Config) (*diskspace.Guard, error) {
	if cfg.DiskReserveBytes == DiskGuardOff {
		return nil, nil
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("disk guard: %w", err)
	}
	g, err := diskspace.New(diskspace.Options{
		Path:    dir,
		Reserve: uint64(cfg.DiskReserveBytes),
		Free:    cfg.DiskFree,
		Logger:  cfg.Logger.With("node", cfg.NodeID, "component", "diskguard"),
	})
	if err != nil {
		return nil, fmt.Errorf("disk guard: %w", err)
	}
	return g, nil
}

// checkDisk returns the disk guard's verdict on a new write (nil: go ahead,
// also when the guard is off).
func (n *Node) checkDisk() error { return n.disk.Check() }

// guardedLogs is the Raft log store as Raft sees it: appends are refused
// below the disk guard's floor (diskspace.Guard.CheckFloor). A follower
// then answers the leader's AppendEntries with a failure (logged, retried
// by the leader) and stays a voter; its state machine applies nothing new,
// as it only applies what its log holds. A leader below the floor steps
// down (hashicorp/raft does on a failed append) rather than crash. Reads
// and head compactions pass through. It forwards no optional interface: neither
// log store of this node is a raft.MonotonicLogStore.
type guardedLogs struct {
	raft.LogStore
	disk *diskspace.Guard
}

// guardLogs puts logs behind the disk guard's floor (as it is when the
// guard is off).
func guardLogs(logs raft.LogStore, disk *diskspace.Guard) raft.LogStore {
	if disk == nil {
		return logs
	}
	return guardedLogs{LogStore: logs, disk: disk}
}

func (l guardedLogs) StoreLog(log *raft.Log) error {
	if err := l.disk.CheckFloor(); err != nil {
		return err
	}
	return l.LogStore.StoreLog(log)
}

func (l guardedLogs) StoreLogs(logs []*raft.Log) error {
	if err := l.disk.CheckFloor(); err != nil {
		return err
	}
	return l.LogStore.StoreLogs(logs)
}

// DeleteRange refuses a tail truncation below the floor too. A follower
// truncates a conflicting suffix and appends the leader's entries in one
// step, and hashicorp/raft keeps a stale last index if the append fails
// after the truncation (the "TODO" in its appendEntries): refused together,
// the log stays as it was. A head compaction (after a snapshot, from the
// first index) frees space and always passes.
func (l guardedLogs) DeleteRange(min, max uint64) error {
	if err := l.disk.CheckFloor(); err != nil {
		if first, ferr := l.LogStore.FirstIndex(); ferr != nil || min > first {
			return err
		}
	}
	return l.LogStore.DeleteRange(min, max)
}
