// Package raftlog is a hashicorp/raft LogStore and StableStore that never
// lies about what it holds: every record is checksummed, a batch is durable
// before StoreLogs returns, a torn tail is cut with a log line, and any
// other damage stops the node with an error naming the file, the offset and
// the Raft index. It is modelled on etcd's WAL (server/storage/wal) and
// hashicorp/raft-wal, without their code.
//
// # Files
//
// One directory holds segment files seg-<16 hex digits>.wal and a small
// file "stable". A segment starts with a header (number, the index the log
// expected next, the chain value) and continues with frames; see format.go
// for the byte layout. A frame is one call: StoreLogs writes one entries
// frame, DeleteRange one marker frame. Each frame header carries a CRC-32C
// of itself and the CRC of the previous frame header (a chain across all
// segments); each entry inside carries its own CRC-32C covering its index.
// When a segment passes Options.SegmentSize (64 MiB) the next frame goes to
// a new segment, created under a temporary name, synced, renamed, and the
// directory synced.
//
// # Durability
//
// StoreLogs is one WriteAt and one fdatasync for the whole batch, whatever
// its size; nothing is returned before the sync. DeleteRange never rewrites
// data: a tail truncation (conflicting entries after an election) appends a
// seek marker, a head compaction (after a snapshot) appends a head marker
// and then removes segments that hold no live entry, one directory sync per
// removal. The tail truncation + restart case that broke raft-wal v0.4.0
// (raft-wal#31) is therefore an ordinary append. The stable values
// (CurrentTerm, LastVoteTerm, LastVoteCand) are rewritten whole on every
// Set: temporary file, fsync, rename, directory fsync.
//
// A write that fails (ENOSPC) is cut off again and returned; the store
// stays usable and resumes when space returns. A sync that fails makes the
// store refuse all further writes with ErrFailed (after a failed fsync the
// kernel may have dropped the dirty pages, so what is on disk is unknown):
// reopen it.
//
// The store supports any head or tail DeleteRange and gaps (a batch after
// a snapshot install need not follow the last index), so it is not a
// raft.MonotonicLogStore and Raft takes its classic path (hashicorp/raft#697
// concerns monotonic stores only).
//
// # Opening: torn tails and corruption
//
// Open reads and checks every frame. At most one frame can be torn by a
// crash: the last one of the last segment, as only one write is ever
// unsynced. So damage is cut, with a Warn log line giving the file, the
// offset and the indexes cut, only when it is in the last segment and
// nothing valid follows it: a short frame header or frame, an unreadable
// frame header with no valid frame header anywhere after it, or an entry
// checksum mismatch in a frame that ends exactly at the end of the file.
// Everything else fails Open with a *CorruptError (errors.Is ErrCorrupt)
// and changes nothing on disk: a bad checksum followed by valid data, any
// damage in a sealed segment, a segment that does not continue the previous
// one (index and chain), a missing segment number, a broken chain (a frame
// lost whole), a gap or step back in the indexes, a damaged stable file.
//
// Limits: a byte flipped inside the last frame looks exactly like a torn
// write and is cut (logged) like one; a last segment cut short exactly at a
// frame boundary, a lost last or oldest segment, and a lost stable file are
// not visible in this directory alone. The node closes that gap by
// comparing, on start, LastIndex with the index its state machine has
// applied and the latest snapshot: a log that ends before applied data
// must be treated as corrupt, not replayed and reused.
//
// # Recovery
//
// A node whose log is refused does not start. To recover it, stop it, move
// the segment files aside (keep them for analysis), KEEP the stable file
// (its term and vote must survive, or the node could vote twice in one
// term), and start it: it has an empty log and catches up from the leader,
// by snapshot if needed. Nothing the cluster acknowledged is lost as long
// as a quorum still holds it; a single-node cluster can only go back to its
// last snapshot. A node also moves its applied state aside (an empty log
// behind applied state is what its start check refuses): "verbund recover
// raft-log" (node.RecoverRaftLog) does all of this.
//
// # Tests
//
// All file access goes through FS/File. Package faultfs is an in-memory FS
// that records what was synced and, on a simulated power cut, keeps only
// that (optionally with a torn part of the unsynced writes). The tests
// cover Raft's LogStore expectations, a real one-voter raft.Raft, power
// cuts at every kind of moment (with a NoSync control run that the checks
// must catch, and do, on every run), flipped bytes at 1500 random offsets,
// truncated files and frames cut out.
//
// # Performance
//
// Synced batch appends of ~1 KiB entries, the three candidates in the same
// run (module walbench: go test -run '^$' -bench . -count 3 -benchtime=2s,
// shared 2-core VM with a virtio disk, December 2026). Ranges are the
// spread of the three runs; syncs per batch were counted with strace.
//
//	store            batch  entries/s         syncs/s (per batch)
//	raftlog          1      2,319-2,677       2,320-2,678  (1 fdatasync)
//	raftlog          16     14,040-17,262     878-1,080    (1 fdatasync)
//	raftlog          256    131,099-177,434   517-699      (1 fdatasync)
//	raftbadger       1      512-578           1,024-1,156  (2 msync)
//	raftbadger       16     6,049-7,368       756-921      (2 msync)
//	raftbadger       256    42,238-46,448     330-363      (2 msync)
//	raft-wal v0.4.2  1      1,190-1,764       1,190-1,764  (1 fsync)
//	raft-wal v0.4.2  16     10,619-11,399     664-712      (1 fsync)
//	raft-wal v0.4.2  256    107,912-118,691   422-464      (1 fsync)
//
// The disk is shared with other work, so absolute figures move by 2x from
// run to run: a later run of this module's own benchmark
// (go test -run '^$' -bench . -count 3 ./node/raftlog/, raftlog and
// raftbadger only) gave raftlog 2,370-2,831 / 26,808-41,928 /
// 265,964-286,559 entries/s and raftbadger 1,780-2,138 / 21,544-26,003 /
// 91,653-115,792 entries/s for batches of 1 / 16 / 256. The order held in
// every run: raftlog first, raftbadger last at 256, where its two syncs per
// batch (value log and memtable WAL) and its LSM writes cost most.
package raftlog
