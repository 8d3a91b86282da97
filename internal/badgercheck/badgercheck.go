// Package badgercheck opens a badger v4 directory so that a damaged table
// is an error, not a crash and not data.
//
// Two badger (v4.9.6) behaviours make this necessary, both found by the
// corruption tests (node/corruption_test.go, federation/handover):
//   - badger opens its tables in background goroutines and reads each
//     table's footer (checksum length, index length) without bounds
//     checks: one flipped byte there panics the process ("slice bounds out
//     of range" in table.initIndex). Tables checks the footers first.
//   - with options.OnTableRead or OnTableAndBlockRead, a block that fails
//     its checksum at open panics too (a nil dereference in the error path
//     of Table.VerifyChecksum), again in a background goroutine. So Open
//     expects options.OnBlockRead (every block read is verified) and
//     verifies every table itself after the open, in the caller's
//     goroutine, where that panic is recovered and returned as an error.
package badgercheck

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// ErrCorrupt is wrapped by every damage Tables finds.
var ErrCorrupt = errors.New("badger directory damaged")

// Open checks the table footers in opts.Dir, opens the DB and verifies the
// checksum of every block of every table. opts.ChecksumVerificationMode
// must be options.OnBlockRead (see the package doc). Errors name the
// directory; they wrap ErrCorrupt when the damage is badgercheck's finding.
func Open(opts badger.Options) (*badger.DB, error) {
	if opts.ChecksumVerificationMode != options.OnBlockRead {
		return nil, errors.New("badgercheck: open with options.OnBlockRead (table-open verification crashes on damage)")
	}
	if !opts.InMemory {
		if err := Tables(opts.Dir); err != nil {
			return nil, err
		}
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, err
	}
	if err := verify(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, opts.Dir, err)
	}
	return db, nil
}

// verify runs db.VerifyChecksum, turning badger's panic on a bad block
// into an error.
func verify(db *badger.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("a table block failed its checksum (badger panicked: %v)", r)
		}
	}()
	return db.VerifyChecksum()
}

// Tables checks the footer of every table file (*.sst) in dir. A missing
// dir is not an error (a new store).
func Tables(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".sst") {
			continue
		}
		if err := table(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// table checks one table's footer: ... index | index length (4) |
// checksum | checksum length (4), lengths big endian.
func table(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: table %s (%d bytes): %s", ErrCorrupt, path, size, fmt.Sprintf(format, args...))
	}
	u32 := func(off int64) (int64, error) {
		var b [4]byte
		if _, err := f.ReadAt(b[:], off); err != nil {
			return 0, fmt.Errorf("read %s at %d: %w", path, off, err)
		}
		return int64(binary.BigEndian.Uint32(b[:])), nil
	}
	if size < 8 {
		return bad("too short for a footer")
	}
	chkLen, err := u32(size - 4)
	if err != nil {
		return err
	}
	if chkLen > size-8 {
		return bad("checksum length %d out of range", chkLen)
	}
	idxLen, err := u32(size - 8 - chkLen)
	if err != nil {
		return err
	}
	if idxLen > size-8-chkLen {
		return bad("index length %d out of range", idxLen)
	}
	return nil
}
