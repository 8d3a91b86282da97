package raftlog

import (
	"errors"
	"os"
	"syscall"
)

// fdatasync flushes the file's data and the metadata needed to read it back
// (its size), not its timestamps.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
		}
		return nil
	}
}
