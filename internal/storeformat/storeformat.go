// Package storeformat versions the on-disk formats of a node's stores. Each
// store directory holds a marker file, FORMAT, naming the store and the
// version of its layout ("verbund-store registry-state 1"). The marker is
// written when the store is created and checked whenever it is opened:
//
//   - a version newer than the software knows is refused (ErrTooNew): an
//     older binary never reads, or damages, a layout it does not know;
//   - an older version runs the registered migrations, one version at a
//     time, recording the new version after each step;
//   - a directory with data but no marker was written before markers
//     existed (v0.8.0 and earlier): it is version 1.
//
// A migration may be interrupted (crash, power loss) before its new version
// is recorded and then runs again on the next open: it must be idempotent,
// or check for its own half-done work.
package storeformat

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FileName is the marker's name inside a store directory.
const FileName = "FORMAT"

const magic = "verbund-store"

var (
	// ErrTooNew: the store was written by a newer version of the software.
	ErrTooNew = errors.New("store format is newer than this software")
	// ErrWrongStore: the marker names another kind of store, or cannot be
	// read as a marker.
	ErrWrongStore = errors.New("not the expected store")
	// ErrNoMigration: no registered migration leads from the store's
	// version to the current one.
	ErrNoMigration = errors.New("no migration for the store format")
)

// Migration turns a store of format From into format From+1.
type Migration struct {
	From uint32
	// Name says what it changes (logged).
	Name string
	// Apply migrates the store in dir. Idempotent: see the package doc.
	Apply func(dir string) error
}

// Store describes one kind of store.
type Store struct {
	// Kind names the store in its marker ("registry-state", "raft",
	// "handover", "users"): one word.
	Kind string
	// Current is the format this software writes (1 or more).
	Current uint32
	// Migrations lead from every older format to Current.
	Migrations []Migration
}

// Read returns the format recorded in dir's marker, and false if there is
// no marker.
func Read(dir, kind string) (uint32, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read store format marker: %w", err)
	}
	// A damaged marker of a store that is otherwise sound: the hint says
	// how to write it again (the format is the one of the release that
	// created or last migrated the store, see its release notes).
	name := filepath.Join(dir, FileName)
	hint := fmt.Sprintf("if %s is the %s store and only its marker is damaged, write the marker again: echo '%s %s N' > %s (N: the store's format, 1 until a release raises it)", dir, kind, magic, kind, name)
	f := strings.Fields(string(b))
	if len(f) != 3 || f[0] != magic {
		return 0, false, fmt.Errorf("%w: %s holds %q, not a store format marker; %s", ErrWrongStore, name, strings.TrimSpace(string(b)), hint)
	}
	if f[1] != kind {
		return 0, false, fmt.Errorf("%w: %s is a %q store, expected %q; %s", ErrWrongStore, dir, f[1], kind, hint)
	}
	v, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil || v == 0 {
		return 0, false, fmt.Errorf("%w: %s: format %q; %s", ErrWrongStore, name, f[2], hint)
	}
	return uint32(v), true, nil
}

// Write records version in dir's marker, atomically and durably (temp
// file, fsync, rename, fsync of the directory).
func Write(dir, kind string, version uint32) error {
	path := filepath.Join(dir, FileName)
	tmp := path + ".tmp"
	data := fmt.Sprintf("%s %s %d\n", magic, kind, version)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("write store format marker: %w", err)
	}
	if _, err := f.WriteString(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("write store format marker: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("sync store format marker: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close store format marker: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("store format marker: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// Prepare checks dir's format before the store is opened: it creates dir
// and its marker (Current) if dir is new or empty, records version 1 for a
// store written before markers existed, runs the migrations from an older
// format, and refuses a newer one with ErrTooNew. It returns the format
// the store had when Prepare was called (0 for a new store).
func (s Store) Prepare(dir string, log *slog.Logger) (uint32, error) {
	if log == nil {
		log = slog.Default()
	}
	if s.Current == 0 {
		return 0, fmt.Errorf("store %q: current format 0", s.Kind)
	}
	v, ok, err := Read(dir, s.Kind)
	if err != nil {
		return 0, err
	}
	if !ok {
		empty, err := isEmpty(dir)
		if err != nil {
			return 0, err
		}
		if empty {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return 0, fmt.Errorf("create %s: %w", dir, err)
			}
			return 0, Write(dir, s.Kind, s.Current)
		}
		// Written before markers existed: format 1.
		v = 1
		if err := Write(dir, s.Kind, v); err != nil {
			return 0, err
		}
		log.Info("store had no format marker: recorded format 1 (written by v0.8.0 or earlier, or by a tool that predates markers)", "store", s.Kind, "dir", dir)
	}
	from := v
	if v > s.Current {
		return v, fmt.Errorf("%w: %s (%s) has format %d, this software knows formats up to %d: it was written by a newer version of Verbund; run that version (or newer), or restore a backup taken before the upgrade",
			ErrTooNew, dir, s.Kind, v, s.Current)
	}
	for v < s.Current {
		m, ok := s.migration(v)
		if !ok {
			return from, fmt.Errorf("%w: %s (%s) has format %d, no migration to %d", ErrNoMigration, dir, s.Kind, v, v+1)
		}
		log.Info("migrating store format", "store", s.Kind, "dir", dir, "from", v, "to", v+1, "migration", m.Name)
		if err := m.Apply(dir); err != nil {
			return from, fmt.Errorf("migrate %s (%s) from format %d to %d (%s): %w", dir, s.Kind, v, v+1, m.Name, err)
		}
		v++
		if err := Write(dir, s.Kind, v); err != nil {
			return from, err
		}
	}
	return from, nil
}

func (s Store) migration(from uint32) (Migration, bool) {
	for _, m := range s.Migrations {
		if m.From == from {
			return m, true
		}
	}
	return Migration{}, false
}

func isEmpty(dir string) (bool, error) {
	es, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", dir, err)
	}
	return len(es) == 0, nil
}
