package registry

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// Snapshot format: magic, then records (uvarint key length, key, uvarint
// value length, value), then a zero-length key and the CRC-32C of all
// preceding bytes. A truncated or corrupted snapshot is refused on restore.
var snapshotMagic = []byte("VERBUND-REGISTRY-SNAPSHOT-1\n")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrBadSnapshot is returned by Restore for a truncated or corrupt snapshot.
var ErrBadSnapshot = errors.New("registry: bad snapshot")

type fsmSnapshot struct {
	txn   *badger.Txn
	index uint64
}

// Snapshot captures the current state. Raft calls it between applies, so a
// badger read transaction opened here is exactly the state at the applied
// index. Badger is synced first: after the snapshot Raft may compact the
// log, which until now was the durable copy of these entries.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.db.Sync(); err != nil {
		return nil, fmt.Errorf("sync state before snapshot: %w", err)
	}
	return &fsmSnapshot{txn: f.db.NewTransaction(false), index: f.applied.Load()}, nil
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot at %d: %w", s.index, err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 1<<20)
	if _, err := bw.Write(snapshotMagic); err != nil {
		return err
	}
	var lenBuf [binary.MaxVarintLen64]byte
	writeBytes := func(b []byte) error {
		n := binary.PutUvarint(lenBuf[:], uint64(len(b)))
		if _, err := bw.Write(lenBuf[:n]); err != nil {
			return err
		}
		_, err := bw.Write(b)
		return err
	}
	it := s.txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 256})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if len(item.Key()) == 0 {
			continue
		}
		if err := writeBytes(item.Key()); err != nil {
			return err
		}
		if err := item.Value(writeBytes); err != nil {
			return err
		}
	}
	if err := writeBytes(nil); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc.Sum32())
	_, err := w.Write(sum[:])
	return err
}

func (s *fsmSnapshot) Release() { s.txn.Discard() }

// Restore replaces the whole state with a snapshot, streaming it into
// badger. The applied index is cleared first and written last, after the
// checksum is verified: a restore that fails or is interrupted leaves a state
// at index 0, which the node restores again from a snapshot on its next start.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.db.DropAll(); err != nil {
		return fmt.Errorf("restore: clear state: %w", err)
	}
	f.setApplied(0)
	wb := f.db.NewWriteBatch()
	defer wb.Cancel()
	var applied []byte
	n, err := readSnapshot(rc, func(key, val []byte) error {
		if string(key) == keyApplied {
			applied = val
			return nil
		}
		return wb.Set(key, val)
	})
	if err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if len(applied) != 8 {
		return fmt.Errorf("%w: no applied index", ErrBadSnapshot)
	}
	if err := f.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(keyApplied), applied) }); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := f.db.Sync(); err != nil {
		return fmt.Errorf("restore: sync: %w", err)
	}
	idx := binary.BigEndian.Uint64(applied)
	f.setApplied(idx)
	f.log.Info("registry restored from snapshot", "index", idx, "keys", n)
	return nil
}

// readSnapshot reads a snapshot, calling fn for each record, and checks the
// trailing checksum. It returns the number of records.
func readSnapshot(r io.Reader, fn func(key, val []byte) error) (int, error) {
	crc := crc32.New(castagnoli)
	br := bufio.NewReaderSize(r, 1<<20)
	tr := io.TeeReader(br, crc)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(tr, magic); err != nil || string(magic) != string(snapshotMagic) {
		return 0, fmt.Errorf("%w: not a registry snapshot", ErrBadSnapshot)
	}
	vr := byteReader{tr}
	readBytes := func() ([]byte, error) {
		n, err := binary.ReadUvarint(vr)
		if err != nil {
			return nil, err
		}
		if n > 64<<20 {
			return nil, fmt.Errorf("record of %d bytes", n)
		}
		b := make([]byte, n)
		_, err = io.ReadFull(tr, b)
		return b, err
	}
	n := 0
	for {
		key, err := readBytes()
		if err != nil {
			return n, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		if len(key) == 0 {
			break
		}
		val, err := readBytes()
		if err != nil {
			return n, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		if err := fn(key, val); err != nil {
			return n, fmt.Errorf("restore: %w", err)
		}
		n++
	}
	want := crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(br, sum[:]); err != nil {
		return n, fmt.Errorf("%w: missing checksum", ErrBadSnapshot)
	}
	if binary.BigEndian.Uint32(sum[:]) != want {
		return n, fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	return n, nil
}

type byteReader struct{ r io.Reader }

func (b byteReader) ReadByte() (byte, error) {
	var x [1]byte
	_, err := io.ReadFull(b.r, x[:])
	return x[0], err
}

// ScanSnapshot reads a registry snapshot (as Persist writes it), calling fn
// for each key and value, and checks its trailing CRC-32C: what backup
// tools need to verify and count a snapshot without restoring it. It
// returns the number of records; ErrBadSnapshot for a damaged one.
func ScanSnapshot(r io.Reader, fn func(key, val []byte) error) (int, error) {
	return readSnapshot(r, fn)
}
