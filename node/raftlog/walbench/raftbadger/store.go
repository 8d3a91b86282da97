// Package raftbadger is a hashicorp/raft LogStore and StableStore on badger:
// the store the nodes used before node/raftlog, kept here (and only here)
// as a benchmark candidate. It is not used by any node.
//
// It replaces raft-wal v0.4.0, which two Jepsen-style runs showed unsafe in
// this project: tail truncation marks the tail segment sealed without an
// index block, so the node cannot read its log after a restart
// (hashicorp/raft-wal#31, fixed upstream after the last release), and as a
// MonotonicLogStore it makes raft v1.8 empty the log on snapshot install
// while Raft keeps its cached last index (hashicorp/raft#697: a follower
// panics with "log not found"). This store supports deleting any range, so
// Raft takes its classic path.
//
// StoreLogs writes a batch through one badger WriteBatch with SyncWrites:
// one fsync for a batch that fits one transaction (Raft hands over whole
// batches; a batch too big for one transaction is committed in several),
// and what Raft was told is stored survives a crash.
package raftbadger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

var (
	pLog    = []byte("l/")
	pStable = []byte("s/")
)

// ErrKeyNotFound is returned by Get for a missing key. Raft recognises a
// missing key only by this exact text.
var ErrKeyNotFound = errors.New("not found")

// Store is a raft.LogStore and raft.StableStore.
type Store struct {
	db *badger.DB
}

var (
	_ raft.LogStore    = (*Store)(nil)
	_ raft.StableStore = (*Store)(nil)
)

// Open opens (or creates) the store in dir.
func Open(dir string, log *slog.Logger) (*Store, error) {
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithNumVersionsToKeep(1).
		WithMemTableSize(16 << 20).
		WithValueLogFileSize(64 << 20).
		WithValueThreshold(1 << 10).
		WithLogger(nil)
	if log != nil {
		opts = opts.WithLogger(logger{log})
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open raft log store: %w", err)
	}
	return &Store{db: db}, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

func logKey(i uint64) []byte { return binary.BigEndian.AppendUint64(append([]byte(nil), pLog...), i) }

// FirstIndex returns the first index written, 0 for an empty log.
func (s *Store) FirstIndex() (uint64, error) { return s.edge(false) }

// LastIndex returns the last index written, 0 for an empty log.
func (s *Store) LastIndex() (uint64, error) { return s.edge(true) }

func (s *Store) edge(last bool) (uint64, error) {
	var idx uint64
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pLog, Reverse: last})
		defer it.Close()
		if last {
			it.Seek(logKey(^uint64(0)))
		} else {
			it.Rewind()
		}
		if it.Valid() {
			idx = binary.BigEndian.Uint64(it.Item().Key()[len(pLog):])
		}
		return nil
	})
	return idx, err
}

// GetLog reads one entry; raft.ErrLogNotFound if absent.
func (s *Store) GetLog(index uint64, out *raft.Log) error {
	return s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(logKey(index))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return raft.ErrLogNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return decode(v, out) })
	})
}

// StoreLog stores one entry.
func (s *Store) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores entries durably (synced before it returns).
func (s *Store) StoreLogs(logs []*raft.Log) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, l := range logs {
		if err := wb.Set(logKey(l.Index), encode(l)); err != nil {
			return fmt.Errorf("store log %d: %w", l.Index, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("store logs: %w", err)
	}
	return nil
}

// DeleteRange deletes entries min..max inclusive (any range).
func (s *Store) DeleteRange(min, max uint64) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pLog})
		defer it.Close()
		for it.Seek(logKey(min)); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			if binary.BigEndian.Uint64(k[len(pLog):]) > max {
				break
			}
			if err := wb.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete logs %d-%d: %w", min, max, err)
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("delete logs %d-%d: %w", min, max, err)
	}
	return nil
}

// Set stores a stable value.
func (s *Store) Set(key, val []byte) error {
	return s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(append(append([]byte(nil), pStable...), key...), append([]byte(nil), val...))
	})
}

// Get reads a stable value; ErrKeyNotFound if missing.
func (s *Store) Get(key []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(append(append([]byte(nil), pStable...), key...))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrKeyNotFound
		}
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	return out, err
}

// SetUint64 stores a stable number.
func (s *Store) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 reads a stable number; 0 if missing.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if errors.Is(err, ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("stable key %q: %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Entry encoding: version, index, term, type, appended-at (unix ns), then
// length-prefixed data and extensions.
const encVersion = 1

func encode(l *raft.Log) []byte {
	b := make([]byte, 0, 34+len(l.Data)+len(l.Extensions)+2*binary.MaxVarintLen64)
	b = append(b, encVersion)
	b = binary.BigEndian.AppendUint64(b, l.Index)
	b = binary.BigEndian.AppendUint64(b, l.Term)
	b = append(b, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = binary.BigEndian.AppendUint64(b, uint64(at))
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	return append(b, l.Extensions...)
}

var errCorrupt = errors.New("raftbadger: corrupt log entry")

func decode(v []byte, l *raft.Log) error {
	if len(v) < 26 || v[0] != encVersion {
		return errCorrupt
	}
	l.Index = binary.BigEndian.Uint64(v[1:])
	l.Term = binary.BigEndian.Uint64(v[9:])
	l.Type = raft.LogType(v[17])
	if at := int64(binary.BigEndian.Uint64(v[18:])); at != 0 {
		l.AppendedAt = time.Unix(0, at)
	} else {
		l.AppendedAt = time.Time{}
	}
	rest := v[26:]
	bytesField := func() ([]byte, error) {
		n, k := binary.Uvarint(rest)
		if k <= 0 || uint64(len(rest)-k) < n {
			return nil, errCorrupt
		}
		out := append([]byte(nil), rest[k:k+int(n)]...)
		rest = rest[k+int(n):]
		return out, nil
	}
	var err error
	if l.Data, err = bytesField(); err != nil {
		return err
	}
	if l.Extensions, err = bytesField(); err != nil {
		return err
	}
	if len(l.Extensions) == 0 {
		l.Extensions = nil
	}
	return nil
}

type logger struct{ l *slog.Logger }

func (g logger) Errorf(f string, a ...any)   { g.l.Error(fmt.Sprintf(f, a...), "component", "raft-log") }
func (g logger) Warningf(f string, a ...any) { g.l.Warn(fmt.Sprintf(f, a...), "component", "raft-log") }
func (g logger) Infof(string, ...any)        {}
func (g logger) Debugf(string, ...any)       {}
