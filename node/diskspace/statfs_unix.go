//go:build unix

package diskspace

import (
	"os"
	"syscall"
)

// Statfs returns the bytes available to an unprivileged process on the file
// system holding path (f_bavail × f_bsize: without the blocks reserved for
// root, which badger cannot count on either).
func Statfs(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
