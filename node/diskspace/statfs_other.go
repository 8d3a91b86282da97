//go:build !unix

package diskspace

import "errors"

// Statfs is not implemented on this platform: it always fails, and a Guard
// using it admits every write.
func Statfs(path string) (uint64, error) {
	return 0, errors.New("diskspace: statfs not supported on this platform")
}
