package node_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/verbund/verbund/internal/storeformat"
	"github.com/verbund/verbund/node/nodetest"
)

// TestStoreFormatMarkers: a real three-voter cluster writes a FORMAT marker
// into each store of each node (registry state, Raft directory, handover
// store, users); a node whose registry state carries a format newer than
// its software is refused at start with a clear error, and the store is
// left untouched; with the marker put back it starts and catches up.
func TestStoreFormatMarkers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := nodetest.Start(t, nodetest.Options{Voters: 3})
	for _, m := range c.Nodes {
		for store, kind := range map[string]string{"state": "registry-state", "raft": "raft", "handover": "handover", "users": "users"} {
			v, ok, err := storeformat.Read(filepath.Join(m.Dir, store), kind)
			if err != nil || !ok || v != 1 {
				t.Fatalf("%s %s: format %d, marker %v, %v", m.ID, store, v, ok, err)
			}
		}
	}
	c.Kill(2)
	dir := filepath.Join(c.Nodes[2].Dir, "state")
	if err := storeformat.Write(dir, "registry-state", 2); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadDir(dir)
	err := c.TryRestart(2)
	if !errors.Is(err, storeformat.ErrTooNew) || !strings.Contains(err.Error(), "newer version") {
		t.Fatalf("restart on a newer format: %v", err)
	}
	t.Logf("refused: %v", err)
	after, _ := os.ReadDir(dir)
	if len(before) != len(after) {
		t.Fatalf("store changed by a refused start: %d files, then %d", len(before), len(after))
	}
	if err := storeformat.Write(dir, "registry-state", 1); err != nil {
		t.Fatal(err)
	}
	c.Restart(2)
	if err := c.WaitCaughtUp(30 * 1e9); err != nil {
		t.Fatal(err)
	}
}
