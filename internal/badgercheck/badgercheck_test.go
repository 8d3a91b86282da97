package badgercheck

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

func writeStore(t *testing.T, dir string) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		if err := db.Update(func(txn *badger.Txn) error {
			return txn.Set([]byte(fmt.Sprintf("key-%05d", i)), []byte(fmt.Sprintf("value-%05d", i)))
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil { // flushes the memtable to a table
		t.Fatal(err)
	}
}

func sst(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(m) == 0 {
		t.Fatal("no table written")
	}
	return m[0]
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if off < 0 {
		fi, _ := f.Stat()
		off += fi.Size()
	}
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func opts(dir string) badger.Options {
	return badger.DefaultOptions(dir).WithLogger(nil).WithChecksumVerificationMode(options.OnBlockRead)
}

// TestFooterDamageIsAnError: a flipped byte in a table's checksum length
// (its last 4 bytes) panics badger's table loader; Open refuses it first.
func TestFooterDamageIsAnError(t *testing.T) {
	dir := t.TempDir()
	writeStore(t, dir)
	flip(t, sst(t, dir), -2)
	_, err := Open(opts(dir))
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged footer: got %v, want ErrCorrupt", err)
	}
	t.Log(err)
}

// TestBlockDamageIsAnError: a flipped byte in a data block is found at
// open (badger alone would open it, and its iterators stop silently at
// the bad block).
func TestBlockDamageIsAnError(t *testing.T) {
	dir := t.TempDir()
	writeStore(t, dir)
	flip(t, sst(t, dir), 100)
	_, err := Open(opts(dir))
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged block: got %v, want ErrCorrupt", err)
	}
	t.Log(err)
}

func TestIntactStoreOpens(t *testing.T) {
	dir := t.TempDir()
	writeStore(t, dir)
	db, err := Open(opts(dir))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
}
