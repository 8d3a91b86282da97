package raftlog

import (
	"io"
	"os"
	"path/filepath"
	"sort"
)

// FS is the file layer under the store. Every byte the store writes and every
// sync it asks for goes through it, so a test file system (see package
// faultfs) can record what was made durable and, on a simulated power cut,
// drop everything that was not.
//
// Names are full paths. The store needs nothing else from the operating
// system.
type FS interface {
	// MkdirAll creates dir and its parents.
	MkdirAll(dir string) error
	// OpenFile opens name with os.OpenFile semantics (os.O_CREATE, os.O_EXCL,
	// os.O_RDWR, os.O_RDONLY are the flags the store uses).
	OpenFile(name string, flag int) (File, error)
	// ReadDir lists the names (not paths) in dir, sorted.
	ReadDir(dir string) ([]string, error)
	// Remove deletes name. Durable only after SyncDir of its directory.
	Remove(name string) error
	// Rename renames oldname to newname, replacing newname. Durable only
	// after SyncDir of the directory.
	Rename(oldname, newname string) error
	// SyncDir makes the directory's entries (creates, renames, removes)
	// durable.
	SyncDir(dir string) error
}

// File is an open file. WriteAt and Truncate are durable only after Sync.
// ReadAt may be called concurrently with itself and with WriteAt on
// disjoint ranges.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes every completed WriteAt and Truncate durable (fsync or
	// fdatasync).
	Sync() error
	Truncate(size int64) error
	Size() (int64, error)
	Close() error
}

// OS is the FS of the operating system.
type OS struct{}

var _ FS = OS{}

// MkdirAll implements FS.
func (OS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o750) }

// OpenFile implements FS.
func (OS) OpenFile(name string, flag int) (File, error) {
	f, err := os.OpenFile(name, flag, 0o640)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// ReadDir implements FS.
func (OS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// Remove implements FS.
func (OS) Remove(name string) error { return os.Remove(name) }

// Rename implements FS.
func (OS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

// SyncDir implements FS: it fsyncs the directory.
func (OS) SyncDir(dir string) error {
	d, err := os.Open(filepath.Clean(dir))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

type osFile struct{ *os.File }

func (f osFile) Sync() error { return fdatasync(f.File) }

func (f osFile) Size() (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
