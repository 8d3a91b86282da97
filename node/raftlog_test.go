package node

import (
	"testing"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// TestWALLogStoreGapAfterSnapshot: the non-monotonic path Raft takes with
// walLogStore leaves a gap after a snapshot install; the store must accept
// the next entries and read them back, and compact prefixes as usual.
func TestWALLogStoreGapAfterSnapshot(t *testing.T) {
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(t.TempDir(), wal.WithMetaStore(meta))
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	defer w.Close()
	s := walLogStore{w}
	if _, ok := raft.LogStore(s).(raft.MonotonicLogStore); ok && s.IsMonotonic() {
		t.Fatal("walLogStore must not report monotonic (hashicorp/raft#697)")
	}
	logs := func(from, to uint64) []*raft.Log {
		var out []*raft.Log
		for i := from; i <= to; i++ {
			out = append(out, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte{byte(i)}})
		}
		return out
	}
	if err := s.StoreLogs(logs(1, 10)); err != nil {
		t.Fatal(err)
	}
	// Raft compacts a prefix after installing a snapshot at 50 ...
	if err := s.DeleteRange(1, 5); err != nil {
		t.Fatal(err)
	}
	// ... and the leader continues at 51: a gap below.
	if err := s.StoreLogs(logs(51, 53)); err != nil {
		t.Fatalf("store after gap: %v", err)
	}
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if first != 51 || last != 53 {
		t.Fatalf("first %d last %d, want 51 53", first, last)
	}
	var l raft.Log
	if err := s.GetLog(52, &l); err != nil || l.Data[0] != 52 {
		t.Fatalf("get 52: %v %v", l, err)
	}
	// Consecutive appends and suffix truncation (conflicts) still work.
	if err := s.StoreLog(logs(54, 54)[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(53, 54); err != nil {
		t.Fatal(err)
	}
	if last, _ := s.LastIndex(); last != 52 {
		t.Fatalf("last after truncation %d", last)
	}
}
