package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// The stable values (Raft's CurrentTerm, LastVoteTerm, LastVoteCand) live
// in one small file, rewritten whole on every Set: written to stable.tmp,
// synced, renamed over stable, directory synced. A reader sees the old or
// the new file, never a mix. Format: magic "VBSTABL1", count u32, then
// count × (keyLen u32, key, valLen u32, val) sorted by key, then a CRC-32C
// of everything before it.
const (
	stableName  = "stable"
	stableMagic = "VBSTABL1"
)

func (s *Store) loadStable() error {
	s.stable = map[string][]byte{}
	name := filepath.Join(s.dir, stableName)
	f, err := s.fs.OpenFile(name, os.O_RDONLY)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("raftlog: open %s: %w", name, err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return fmt.Errorf("raftlog: %s: %w", name, err)
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("raftlog: read %s: %w", name, err)
	}
	m, err := decodeStable(b)
	if err != nil {
		return &CorruptError{File: name, Offset: 0, Reason: err.Error()}
	}
	s.stable = m
	return nil
}

func decodeStable(b []byte) (map[string][]byte, error) {
	if len(b) < len(stableMagic)+8 || string(b[:len(stableMagic)]) != stableMagic {
		return nil, errors.New("not a stable file (short or bad magic)")
	}
	body := b[:len(b)-4]
	if binary.BigEndian.Uint32(b[len(b)-4:]) != checksum(body) {
		return nil, errors.New("stable file checksum mismatch")
	}
	p := body[len(stableMagic):]
	n := binary.BigEndian.Uint32(p)
	p = p[4:]
	field := func() ([]byte, error) {
		if len(p) < 4 || uint64(binary.BigEndian.Uint32(p)) > uint64(len(p)-4) {
			return nil, errors.New("stable file field out of range")
		}
		l := binary.BigEndian.Uint32(p)
		v := append([]byte(nil), p[4:4+l]...)
		p = p[4+l:]
		return v, nil
	}
	m := make(map[string][]byte, min(n, 64))
	for range n {
		k, err := field()
		if err != nil {
			return nil, err
		}
		v, err := field()
		if err != nil {
			return nil, err
		}
		m[string(k)] = v
	}
	if len(p) != 0 {
		return nil, errors.New("stable file has trailing bytes")
	}
	return m, nil
}

func encodeStable(m map[string][]byte) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b := append([]byte(nil), stableMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = binary.BigEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(m[k])))
		b = append(b, m[k]...)
	}
	return binary.BigEndian.AppendUint32(b, checksum(b))
}

// Set stores a stable value durably (the file and its directory are synced
// before it returns).
func (s *Store) Set(key, val []byte) error {
	if err := s.open(); err != nil {
		return err
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	next := make(map[string][]byte, len(s.stable)+1)
	for k, v := range s.stable {
		next[k] = v
	}
	next[string(key)] = append([]byte(nil), val...)
	if err := s.writeStable(encodeStable(next)); err != nil {
		return fmt.Errorf("raftlog: set %q: %w", key, err)
	}
	s.stable = next
	return nil
}

func (s *Store) writeStable(b []byte) error {
	name := filepath.Join(s.dir, stableName)
	tmp := name + ".tmp"
	f, err := s.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		s.fs.Remove(tmp)
		return err
	}
	if err := s.sync(func(string) error { return f.Sync() }, tmp); err != nil {
		f.Close()
		s.fs.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		s.fs.Remove(tmp)
		return err
	}
	if err := s.fs.Rename(tmp, name); err != nil {
		return err
	}
	return s.sync(s.fs.SyncDir, s.dir)
}

// Get returns a stable value, or ErrKeyNotFound (text "not found", which
// Raft requires) if it was never set.
func (s *Store) Get(key []byte) ([]byte, error) {
	if err := s.open(); err != nil {
		return nil, err
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	v, ok := s.stable[string(key)]
	if !ok {
		return nil, ErrKeyNotFound
	}
	return append([]byte(nil), v...), nil
}

// SetUint64 stores a stable number.
func (s *Store) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns a stable number, 0 if it was never set.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if errors.Is(err, ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raftlog: stable key %q holds %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func (s *Store) open() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}
