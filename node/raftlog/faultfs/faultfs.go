// Package faultfs is an in-memory raftlog.FS that knows what was made
// durable, for power-loss tests in the spirit of LazyFS.
//
// Every file has two states: what the process sees (all completed writes)
// and what is durable (its content at its last Sync). Directory entries
// (creates, renames, removes) are durable only after SyncDir of their
// directory. Crash stops the "machine": every later call, also on files
// opened before, fails with ErrCrashed. Restart then brings back only the
// durable state, optionally with part of the unsynced writes (a torn
// write), and the store under test can be opened again on the same FS.
//
// CrashAt arms a crash at the n-th mutating call from now (a write, sync,
// truncate, create, rename, remove or directory sync), which then does not
// happen: a test picks n at random to cut the power at any moment,
// including between a write and its sync. Inject makes calls fail with an
// error of the test's choice (ENOSPC, EIO) without crashing.
package faultfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/verbund/verbund/node/raftlog"
)

// ErrCrashed is returned by every call after a crash, until Restart.
var ErrCrashed = errors.New("faultfs: machine crashed")

// Op names a mutating call, for Inject.
type Op string

// The mutating calls.
const (
	OpWrite    Op = "write"
	OpSync     Op = "sync"
	OpTruncate Op = "truncate"
	OpCreate   Op = "create"
	OpRename   Op = "rename"
	OpRemove   Op = "remove"
	OpSyncDir  Op = "syncdir"
)

// Tear says what Restart keeps of the writes that were not synced.
type Tear int

const (
	// TearNone drops every unsynced write (the strict power cut).
	TearNone Tear = iota
	// TearPrefix keeps a random prefix of each file's unsynced writes, the
	// last kept one cut at a random byte (the page cache was partly
	// written back).
	TearPrefix
	// TearSectors keeps each 512-byte sector of each file's unsynced
	// writes with probability 1/2 (a disk that reorders sector writes);
	// sectors not kept read as they were at the last sync (zeros past
	// the old end).
	TearSectors
)

// FS is the in-memory file system. The zero value is not usable; call New.
type FS struct {
	mu      sync.Mutex
	gen     int // bumped by Restart: handles of an older generation are dead
	crashed bool
	dirs    map[string]bool
	names   map[string]*inode // what the process sees
	durable map[string]*inode // what survives a crash
	crashAt int               // mutating calls left before a crash; 0: none armed
	inject  func(op Op, name string) error
	syncs   int
}

type inode struct {
	data    []byte
	synced  []byte
	pending []pendingOp // unsynced changes since the last sync, in order
}

type pendingOp struct {
	truncate bool
	off      int64
	data     []byte
}

var _ raftlog.FS = (*FS)(nil)

// New returns an empty file system.
func New() *FS {
	return &FS{dirs: map[string]bool{}, names: map[string]*inode{}, durable: map[string]*inode{}}
}

// CrashAt arms a crash at the n-th mutating call from now (n >= 1); that
// call does not take effect and returns ErrCrashed. n = 0 disarms.
func (f *FS) CrashAt(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.crashAt = n
}

// Inject makes every mutating call for which fn returns an error fail with
// it (nil fn: no injection). The call does not take effect.
func (f *FS) Inject(fn func(op Op, name string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inject = fn
}

// Crash cuts the power now.
func (f *FS) Crash() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.crashed = true
}

// Crashed reports whether the machine is down.
func (f *FS) Crashed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.crashed
}

// Syncs returns the number of successful file syncs so far.
func (f *FS) Syncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

// Restart brings the machine back up after a crash (or cuts the power and
// restarts if it was running): names as of their directories' last sync,
// contents as of their last sync, plus what tear keeps of unsynced writes,
// drawn from rng.
func (f *FS) Restart(rng *rand.Rand, tear Tear) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	f.crashed = false
	f.crashAt = 0
	names := make(map[string]*inode, len(f.durable))
	for n, ino := range f.durable {
		names[n] = ino
	}
	seen := map[*inode]bool{}
	for _, ino := range f.names {
		seen[ino] = true
	}
	for _, ino := range names {
		seen[ino] = true
	}
	for ino := range seen {
		ino.data = survivors(ino, rng, tear)
		ino.synced = append([]byte(nil), ino.data...)
		ino.pending = nil
	}
	f.names = names
}

func survivors(ino *inode, rng *rand.Rand, tear Tear) []byte {
	data := append([]byte(nil), ino.synced...)
	if len(ino.pending) == 0 {
		return data
	}
	switch tear {
	case TearPrefix:
		keep := rng.IntN(len(ino.pending) + 1)
		for i, op := range ino.pending[:keep] {
			if op.truncate {
				data = resize(data, op.off)
				continue
			}
			w := op.data
			if i == keep-1 && len(w) > 0 {
				w = w[:rng.IntN(len(w)+1)]
			}
			data = writeAt(data, w, op.off)
		}
	case TearSectors:
		full := append([]byte(nil), data...)
		for _, op := range ino.pending {
			if op.truncate {
				full = resize(full, op.off)
			} else {
				full = writeAt(full, op.data, op.off)
			}
		}
		old := data
		data = make([]byte, len(full))
		copy(data, old)
		for s := 0; s < len(full); s += 512 {
			e := min(s+512, len(full))
			if rng.IntN(2) == 0 {
				copy(data[s:e], full[s:e])
			}
		}
		// The size is metadata: it moved to the new size or not.
		if rng.IntN(2) == 0 {
			data = resize(data, int64(len(old)))
		}
	}
	return data
}

func resize(b []byte, n int64) []byte {
	if int64(len(b)) >= n {
		return b[:n]
	}
	return append(b, make([]byte, n-int64(len(b)))...)
}

func writeAt(b, w []byte, off int64) []byte {
	if end := off + int64(len(w)); end > int64(len(b)) {
		b = resize(b, end)
	}
	copy(b[off:], w)
	return b
}

// mutate runs the crash and injection checks for a mutating call; f.mu is
// held.
func (f *FS) mutate(op Op, name string) error {
	if f.crashed {
		return ErrCrashed
	}
	if f.crashAt > 0 {
		f.crashAt--
		if f.crashAt == 0 {
			f.crashed = true
			return ErrCrashed
		}
	}
	if f.inject != nil {
		if err := f.inject(op, name); err != nil {
			return &os.PathError{Op: string(op), Path: name, Err: err}
		}
	}
	return nil
}

// MkdirAll implements raftlog.FS (directories are durable at once).
func (f *FS) MkdirAll(dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed {
		return ErrCrashed
	}
	f.dirs[filepath.Clean(dir)] = true
	return nil
}

// OpenFile implements raftlog.FS.
func (f *FS) OpenFile(name string, flag int) (raftlog.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed {
		return nil, ErrCrashed
	}
	name = filepath.Clean(name)
	ino, ok := f.names[name]
	switch {
	case ok && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, &os.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	case !ok && flag&os.O_CREATE == 0:
		return nil, &os.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case !ok:
		if !f.dirs[filepath.Dir(name)] {
			return nil, &os.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		if err := f.mutate(OpCreate, name); err != nil {
			return nil, err
		}
		ino = &inode{}
		f.names[name] = ino
	}
	h := &file{fs: f, ino: ino, name: name, gen: f.gen}
	if flag&os.O_TRUNC != 0 && len(ino.data) > 0 {
		if err := f.mutate(OpTruncate, name); err != nil {
			return nil, err
		}
		ino.data = ino.data[:0]
		ino.pending = append(ino.pending, pendingOp{truncate: true, off: 0})
	}
	return h, nil
}

// ReadDir implements raftlog.FS.
func (f *FS) ReadDir(dir string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.crashed {
		return nil, ErrCrashed
	}
	dir = filepath.Clean(dir)
	if !f.dirs[dir] {
		return nil, &os.PathError{Op: "readdir", Path: dir, Err: fs.ErrNotExist}
	}
	var out []string
	for n := range f.names {
		if filepath.Dir(n) == dir {
			out = append(out, filepath.Base(n))
		}
	}
	sort.Strings(out)
	return out, nil
}

// Remove implements raftlog.FS.
func (f *FS) Remove(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	name = filepath.Clean(name)
	if f.crashed {
		return ErrCrashed
	}
	if _, ok := f.names[name]; !ok {
		return &os.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	if err := f.mutate(OpRemove, name); err != nil {
		return err
	}
	delete(f.names, name)
	return nil
}

// Rename implements raftlog.FS.
func (f *FS) Rename(oldname, newname string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	oldname, newname = filepath.Clean(oldname), filepath.Clean(newname)
	if f.crashed {
		return ErrCrashed
	}
	ino, ok := f.names[oldname]
	if !ok {
		return &os.PathError{Op: "rename", Path: oldname, Err: fs.ErrNotExist}
	}
	if err := f.mutate(OpRename, newname); err != nil {
		return err
	}
	delete(f.names, oldname)
	f.names[newname] = ino
	return nil
}

// SyncDir implements raftlog.FS: the directory's entries become durable.
func (f *FS) SyncDir(dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir = filepath.Clean(dir)
	if err := f.mutate(OpSyncDir, dir); err != nil {
		return err
	}
	for n := range f.durable {
		if filepath.Dir(n) == dir {
			delete(f.durable, n)
		}
	}
	for n, ino := range f.names {
		if filepath.Dir(n) == dir {
			f.durable[n] = ino
		}
	}
	return nil
}

// ReadFile returns the content the process sees, for tests.
func (f *FS) ReadFile(name string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ino, ok := f.names[filepath.Clean(name)]
	if !ok {
		return nil, &os.PathError{Op: "read", Path: name, Err: fs.ErrNotExist}
	}
	return append([]byte(nil), ino.data...), nil
}

type file struct {
	fs     *FS
	ino    *inode
	name   string
	gen    int
	closed bool
}

// live checks the handle; f.fs.mu is held.
func (h *file) live() error {
	if h.fs.crashed || h.gen != h.fs.gen {
		return ErrCrashed
	}
	if h.closed {
		return os.ErrClosed
	}
	return nil
}

func (h *file) ReadAt(p []byte, off int64) (int, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.live(); err != nil {
		return 0, err
	}
	if off >= int64(len(h.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, h.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (h *file) WriteAt(p []byte, off int64) (int, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.live(); err != nil {
		return 0, err
	}
	if err := h.fs.mutate(OpWrite, h.name); err != nil {
		return 0, err
	}
	h.ino.data = writeAt(h.ino.data, p, off)
	h.ino.pending = append(h.ino.pending, pendingOp{off: off, data: append([]byte(nil), p...)})
	return len(p), nil
}

func (h *file) Sync() error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.live(); err != nil {
		return err
	}
	if err := h.fs.mutate(OpSync, h.name); err != nil {
		return err
	}
	h.ino.synced = append(h.ino.synced[:0], h.ino.data...)
	h.ino.pending = nil
	h.fs.syncs++
	return nil
}

func (h *file) Truncate(size int64) error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.live(); err != nil {
		return err
	}
	if err := h.fs.mutate(OpTruncate, h.name); err != nil {
		return err
	}
	h.ino.data = resize(h.ino.data, size)
	h.ino.pending = append(h.ino.pending, pendingOp{truncate: true, off: size})
	return nil
}

func (h *file) Size() (int64, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.live(); err != nil {
		return 0, err
	}
	return int64(len(h.ino.data)), nil
}

func (h *file) Close() error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if h.closed {
		return os.ErrClosed
	}
	h.closed = true
	return nil
}

// String describes the FS state, for test failures.
func (f *FS) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("faultfs{%d files, %d durable names, crashed=%v}", len(f.names), len(f.durable), f.crashed)
}
