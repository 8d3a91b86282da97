package cli

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node/raftlog"
)

// TestRecoverRaftLog runs "verbund recover raft-log" on a data dir with a
// raftlog log and on one with an old badger log: segments (or the badger
// dir) are moved aside, the term and vote are kept (carried over from the
// badger log), and a fresh store opens empty with them.
func TestRecoverRaftLog(t *testing.T) {
	newDataDir := func(t *testing.T) string {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	wal := func(dir string) string { return filepath.Join(dir, "raft", "wal") }
	check := func(t *testing.T, dir string, term uint64, vote string) {
		t.Helper()
		s, err := raftlog.Open(wal(dir), raftlog.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if last, _ := s.LastIndex(); last != 0 {
			t.Errorf("log after recovery ends at %d, want empty", last)
		}
		if got, _ := s.GetUint64([]byte("CurrentTerm")); got != term {
			t.Errorf("term after recovery %d, want %d", got, term)
		}
		if got, _ := s.Get([]byte("LastVoteCand")); string(got) != vote {
			t.Errorf("vote after recovery %q, want %q", got, vote)
		}
	}

	t.Run("segments", func(t *testing.T) {
		dir := newDataDir(t)
		s, err := raftlog.Open(wal(dir), raftlog.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for i := uint64(1); i <= 10; i++ {
			if err := s.StoreLog(&raft.Log{Index: i, Term: 7, Data: []byte("x")}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
			t.Fatal(err)
		}
		if err := s.Set([]byte("LastVoteCand"), []byte("n1")); err != nil {
			t.Fatal(err)
		}
		s.Close()
		code, out, errOut := cli(t, nil, "recover", "raft-log", "--data", dir)
		if code != 0 {
			t.Fatalf("exit %d: %s %s", code, out, errOut)
		}
		contains(t, "output", out, []string{"Moved 1 raft log file(s) to ", "wal.damaged-", "Moved the registry state to ", "state.replaced-", `Kept term 7, vote "n1"`})
		aside, _ := filepath.Glob(filepath.Join(dir, "raft", "wal.damaged-*", "seg-*.wal"))
		if len(aside) != 1 {
			t.Errorf("segments moved aside: %v", aside)
		}
		check(t, dir, 7, "n1")
		if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
			t.Errorf("registry state not moved aside: %v", err)
		}
	})

	t.Run("old badger log", func(t *testing.T) {
		dir := newDataDir(t)
		db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, "raft", "log")).WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(txn *badger.Txn) error {
			if err := txn.Set([]byte("s/CurrentTerm"), binary.BigEndian.AppendUint64(nil, 9)); err != nil {
				return err
			}
			return txn.Set([]byte("s/LastVoteCand"), []byte("n2"))
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		code, out, errOut := cli(t, nil, "recover", "raft-log", "--data", dir)
		if code != 0 {
			t.Fatalf("exit %d: %s %s", code, out, errOut)
		}
		contains(t, "output", out, []string{"No raft log segments to move", "Moved the old badger raft log to ", `Kept term 9, vote "n2"`})
		if _, err := os.Stat(filepath.Join(dir, "raft", "log")); !os.IsNotExist(err) {
			t.Errorf("old badger log still in place: %v", err)
		}
		check(t, dir, 9, "n2")
	})

	t.Run("usage", func(t *testing.T) {
		code, _, errOut := cli(t, nil, "recover", "raft-log")
		if code == 0 || !strings.Contains(errOut, "--data is required") {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
		code, _, errOut = cli(t, nil, "recover", "raft-log", "--data", t.TempDir())
		if code == 0 || !strings.Contains(errOut, "does not look like a node's data dir") {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})
}
