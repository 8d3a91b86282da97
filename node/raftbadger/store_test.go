package raftbadger

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func entries(from, to uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, &raft.Log{Index: i, Term: i / 10, Type: raft.LogCommand, Data: []byte{byte(i), 1, 2}, Extensions: []byte("x"), AppendedAt: time.Unix(1700000000, int64(i))})
	}
	return out
}

func TestLogStore(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if f, _ := s.FirstIndex(); f != 0 {
		t.Fatalf("empty first %d", f)
	}
	if l, _ := s.LastIndex(); l != 0 {
		t.Fatalf("empty last %d", l)
	}
	var got raft.Log
	if err := s.GetLog(1, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("missing log: %v", err)
	}
	if err := s.StoreLogs(entries(1, 300)); err != nil {
		t.Fatal(err)
	}
	check := func(first, last uint64) {
		t.Helper()
		if f, _ := s.FirstIndex(); f != first {
			t.Fatalf("first %d, want %d", f, first)
		}
		if l, _ := s.LastIndex(); l != last {
			t.Fatalf("last %d, want %d", l, last)
		}
	}
	check(1, 300)
	if err := s.GetLog(77, &got); err != nil {
		t.Fatal(err)
	}
	want := entries(77, 77)[0]
	if got.Index != 77 || got.Term != want.Term || got.Type != want.Type || string(got.Data) != string(want.Data) ||
		string(got.Extensions) != "x" || !got.AppendedAt.Equal(want.AppendedAt) {
		t.Fatalf("round trip: %+v", got)
	}
	// Prefix compaction (after a snapshot), suffix truncation (conflict),
	// and a gap after a snapshot install: all ranges work.
	if err := s.DeleteRange(1, 100); err != nil {
		t.Fatal(err)
	}
	check(101, 300)
	if err := s.DeleteRange(251, 300); err != nil {
		t.Fatal(err)
	}
	check(101, 250)
	if err := s.StoreLogs(entries(1001, 1005)); err != nil {
		t.Fatal(err)
	}
	check(101, 1005)
	// Survives a restart (this is where raft-wal v0.4.0 failed after a
	// suffix truncation).
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	check(101, 1005)
	if err := s.GetLog(250, &got); err != nil || got.Index != 250 {
		t.Fatalf("after reopen: %v %v", got, err)
	}
	if err := s.GetLog(251, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("truncated entry still there: %v", err)
	}
}

func TestStableStore(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	if _, err := s.Get([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
		t.Fatalf("missing key error %v: raft needs exactly \"not found\"", err)
	}
	if v, err := s.GetUint64([]byte("x")); err != nil || v != 0 {
		t.Fatalf("missing uint64: %d %v", v, err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 42); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 42 {
		t.Fatalf("uint64: %d %v", v, err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n1")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "n1" {
		t.Fatalf("get: %q %v", v, err)
	}
}

func TestDecodeCorrupt(t *testing.T) {
	var l raft.Log
	for _, b := range [][]byte{nil, {2}, make([]byte, 25), append([]byte{1}, make([]byte, 25)...)} {
		if err := decode(b, &l); err == nil && len(b) < 28 {
			t.Fatalf("decode(%x) accepted", b)
		}
	}
	enc := encode(entries(5, 5)[0])
	if err := decode(enc[:len(enc)-2], &l); err == nil {
		t.Fatal("truncated entry accepted")
	}
}

func BenchmarkStoreLogs64(b *testing.B) {
	s, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	idx := uint64(1)
	for b.Loop() {
		batch := entries(idx, idx+63)
		idx += 64
		if err := s.StoreLogs(batch); err != nil {
			b.Fatal(err)
		}
	}
}
