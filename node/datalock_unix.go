//go:build unix

package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// checkStopped fails if a node holds the registry state of dataDir open:
// badger keeps an exclusive flock on the state directory while it runs.
func checkStopped(dataDir string) error {
	f, err := os.Open(filepath.Join(dataDir, "state"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("the node of %s is running (its state is locked): stop it first", dataDir)
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
