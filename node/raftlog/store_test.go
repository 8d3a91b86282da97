package raftlog_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node/raftlog"
	"github.com/verbund/verbund/node/raftlog/faultfs"
)

// fsCases runs a test on the OS and on the fault FS.
func fsCases(t *testing.T, f func(t *testing.T, dir string, opts raftlog.Options)) {
	t.Run("os", func(t *testing.T) { f(t, t.TempDir(), raftlog.Options{SegmentSize: 4096}) })
	t.Run("faultfs", func(t *testing.T) { f(t, "/data/raft", raftlog.Options{SegmentSize: 4096, FS: faultfs.New()}) })
}

// TestLogStoreConformance follows what hashicorp/raft expects of a
// LogStore, restarting the store after every step.
func TestLogStoreConformance(t *testing.T) {
	fsCases(t, func(t *testing.T, dir string, opts raftlog.Options) {
		s := mustOpen(t, dir, opts)
		defer func() { s.Close() }()
		m := newModel()
		restart := func() {
			t.Helper()
			check(t, s, m)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, dir, opts)
			check(t, s, m)
		}
		restart() // empty
		if err := s.DeleteRange(1, 10); err != nil {
			t.Fatalf("delete on empty log: %v", err)
		}
		one := entries(1, 1, 1, 0)
		if err := s.StoreLog(one[0]); err != nil {
			t.Fatal(err)
		}
		m.store(one)
		restart()
		batch := entries(2, 300, 2, 0)
		if err := s.StoreLogs(batch[:150]); err != nil {
			t.Fatal(err)
		}
		for i := 150; i < len(batch); i += 10 {
			if err := s.StoreLogs(batch[i:min(i+10, len(batch))]); err != nil {
				t.Fatal(err)
			}
		}
		m.store(batch)
		restart()
		// Head compaction after a snapshot.
		if err := s.DeleteRange(1, 100); err != nil {
			t.Fatal(err)
		}
		m.deleteRange(1, 100)
		restart()
		// Tail truncation of conflicting entries after an election, across
		// segments, then new entries for the same indexes.
		if err := s.DeleteRange(180, 300); err != nil {
			t.Fatal(err)
		}
		m.deleteRange(180, 300)
		restart()
		fresh := entries(180, 220, 3, 9)
		if err := s.StoreLogs(fresh); err != nil {
			t.Fatal(err)
		}
		m.store(fresh)
		restart()
		// A gap after a snapshot install: older entries stay readable.
		gap := entries(1001, 1005, 4, 1)
		if err := s.StoreLogs(gap); err != nil {
			t.Fatal(err)
		}
		m.store(gap)
		restart()
		// Compaction past the gap.
		if err := s.DeleteRange(101, 1002); err != nil {
			t.Fatal(err)
		}
		m.deleteRange(101, 1002)
		restart()
		// Delete everything, then start again elsewhere.
		if err := s.DeleteRange(1, 2000); err != nil {
			t.Fatal(err)
		}
		m.deleteRange(1, 2000)
		restart()
		again := entries(5000, 5010, 5, 2)
		if err := s.StoreLogs(again); err != nil {
			t.Fatal(err)
		}
		m.store(again)
		restart()
	})
}

// TestTailTruncationRestart is the case that broke raft-wal v0.4.0
// (raft-wal#31): truncate the tail across sealed segments, restart, append,
// restart.
func TestTailTruncationRestart(t *testing.T) {
	fsCases(t, func(t *testing.T, dir string, opts raftlog.Options) {
		s := mustOpen(t, dir, opts)
		m := newModel()
		for i := uint64(1); i <= 400; i += 20 {
			b := entries(i, i+19, 1, 0)
			if err := s.StoreLogs(b); err != nil {
				t.Fatal(err)
			}
			m.store(b)
		}
		if err := s.DeleteRange(120, 400); err != nil {
			t.Fatal(err)
		}
		m.deleteRange(120, 400)
		s.Close()
		s = mustOpen(t, dir, opts)
		check(t, s, m)
		b := entries(120, 130, 2, 7)
		if err := s.StoreLogs(b); err != nil {
			t.Fatal(err)
		}
		m.store(b)
		s.Close()
		s = mustOpen(t, dir, opts)
		defer s.Close()
		check(t, s, m)
	})
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "seg-*.wal"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestHeadCompactionRemovesSegments(t *testing.T) {
	dir := t.TempDir()
	opts := raftlog.Options{SegmentSize: 4096}
	s := mustOpen(t, dir, opts)
	m := newModel()
	for i := uint64(1); i <= 1000; i += 50 {
		b := entries(i, i+49, 1, 0)
		if err := s.StoreLogs(b); err != nil {
			t.Fatal(err)
		}
		m.store(b)
	}
	before := len(segFiles(t, dir))
	if err := s.DeleteRange(1, 900); err != nil {
		t.Fatal(err)
	}
	m.deleteRange(1, 900)
	after := len(segFiles(t, dir))
	if before < 10 || after > 5 {
		t.Fatalf("segments before %d, after compaction %d", before, after)
	}
	check(t, s, m)
	s.Close()
	s = mustOpen(t, dir, opts)
	defer s.Close()
	check(t, s, m)
}

func TestStoreLogsRefusesBadBatches(t *testing.T) {
	s := mustOpen(t, t.TempDir(), raftlog.Options{})
	defer s.Close()
	if err := s.StoreLogs(entries(1, 10, 1, 0)); err != nil {
		t.Fatal(err)
	}
	b := entries(11, 13, 1, 0)
	b[1], b[2] = b[2], b[1]
	if err := s.StoreLogs(b); err == nil {
		t.Fatal("batch out of order accepted")
	}
	if err := s.StoreLogs(entries(10, 12, 1, 0)); err == nil {
		t.Fatal("overwrite without DeleteRange accepted")
	}
	if err := s.DeleteRange(4, 6); err == nil {
		t.Fatal("delete in the middle accepted")
	}
	m := newModel()
	m.store(entries(1, 10, 1, 0))
	check(t, s, m)
}

func TestStableStore(t *testing.T) {
	fsCases(t, func(t *testing.T, dir string, opts raftlog.Options) {
		s := mustOpen(t, dir, opts)
		if _, err := s.Get([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
			t.Fatalf("missing key error %v: raft needs exactly \"not found\"", err)
		}
		if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 0 {
			t.Fatalf("missing uint64: %d %v", v, err)
		}
		if err := s.SetUint64([]byte("CurrentTerm"), 42); err != nil {
			t.Fatal(err)
		}
		if err := s.Set([]byte("LastVoteCand"), []byte("n1")); err != nil {
			t.Fatal(err)
		}
		if err := s.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = mustOpen(t, dir, opts)
		defer s.Close()
		if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 42 {
			t.Fatalf("uint64 after restart: %d %v", v, err)
		}
		if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "n2" {
			t.Fatalf("get after restart: %q %v", v, err)
		}
	})
}

func TestStableFileCorrupt(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, raftlog.Options{})
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	s.Close()
	name := filepath.Join(dir, "stable")
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	for off := range b {
		c := append([]byte(nil), b...)
		c[off] ^= 0x10
		if err := os.WriteFile(name, c, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := raftlog.Open(dir, raftlog.Options{})
		var ce *raftlog.CorruptError
		if !errors.Is(err, raftlog.ErrCorrupt) || !errors.As(err, &ce) || ce.File != name || !strings.Contains(err.Error(), name) {
			t.Fatalf("flip at %d of the stable file: %v", off, err)
		}
	}
}

func TestClosed(t *testing.T) {
	s := mustOpen(t, t.TempDir(), raftlog.Options{})
	s.Close()
	var l raft.Log
	if err := s.GetLog(1, &l); !errors.Is(err, raftlog.ErrClosed) {
		t.Fatal(err)
	}
	if err := s.StoreLogs(entries(1, 1, 1, 0)); !errors.Is(err, raftlog.ErrClosed) {
		t.Fatal(err)
	}
}
