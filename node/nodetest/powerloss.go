package nodetest

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/verbund/verbund/node"
	"github.com/verbund/verbund/node/raftlog"
	"github.com/verbund/verbund/node/raftlog/faultfs"
)

// Power loss. With Options.PowerLoss every server's Raft log lives on its
// own faultfs.FS, which records what was synced. A power cut of a node is:
// kill it (no leadership hand-over, no gossip leave), bring its log's file
// system back with only what was synced (faultfs.Restart; the tear mode
// says what of the unsynced writes survives), optionally set its registry
// state back (Options.StateRollback), and start it again on what survived.
// A member has no Raft log: its power cut is a kill and a restart.
//
// The registry state (badger) is closed by the kill and stays as it was:
// its own durability is not what these tests measure (it has SyncWrites
// off by design, the Raft log is the durable copy). StateRollback stands in
// for its lost unsynced tail: the state goes back to a copy taken at the
// node's previous power cut, a prefix of what it applied.

// PowerCut cuts node i's power and starts it again (see above). It returns
// the start error, e.g. a node refusing a log that lost acknowledged
// entries; the node stays down then.
func (c *Cluster) PowerCut(i int, rng *rand.Rand, tear faultfs.Tear) error {
	c.CutPower(i, rng, tear)
	return c.PowerOn(i)
}

// CutPower is the first half of PowerCut: node i is killed and its Raft
// log keeps only what was synced (and what tear keeps of the rest). It
// stays down until PowerOn.
func (c *Cluster) CutPower(i int, rng *rand.Rand, tear faultfs.Tear) {
	m := c.Nodes[i]
	if n := m.Node(); n != nil {
		m.appliedAtCut = n.AppliedIndex()
	}
	c.Kill(i)
	if m.logFS != nil {
		m.logFS.Restart(rng, tear)
	}
}

// PowerOn is the second half of PowerCut: with Options.StateRollback the
// registry state goes back to its copy from the previous cut, then the
// node starts. It returns the start error; the node stays down then.
func (c *Cluster) PowerOn(i int) error {
	m := c.Nodes[i]
	if c.opts.StateRollback && m.Role != node.RoleMember {
		if err := c.rollbackState(m); err != nil {
			return err
		}
	}
	if err := c.TryRestart(i); err != nil {
		return err
	}
	if got := m.Node().AppliedIndex(); got < m.appliedAtCut {
		c.mu.Lock()
		c.rollbacks++
		c.mu.Unlock()
		c.t.Logf("power cut %s: registry state went back from index %d to %d", m.ID, m.appliedAtCut, got)
	}
	return nil
}

// StateRollbacks counts the power cuts after which a node started with its
// registry state at a lower index than before the cut.
func (c *Cluster) StateRollbacks() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rollbacks
}

// LogFS is node i's Raft log file system (nil without Options.PowerLoss):
// tests damage files through it and pass it to node.RecoverRaftLog.
func (c *Cluster) LogFS(i int) *faultfs.FS { return c.Nodes[i].logFS }

// rollbackState swaps the stopped node's registry state for the copy taken
// at its previous power cut and keeps a copy of the current one for the
// next.
func (c *Cluster) rollbackState(m *Member) error {
	state := filepath.Join(m.Dir, "state")
	image := filepath.Join(m.Dir, fmt.Sprintf("state.image-%d", rand.Uint64()))
	if err := copyDir(state, image); err != nil {
		return fmt.Errorf("copy state of %s: %w", m.ID, err)
	}
	if m.stateImage != "" {
		if err := os.RemoveAll(state); err != nil {
			return err
		}
		if err := os.Rename(m.stateImage, state); err != nil {
			return err
		}
	}
	m.stateImage = image
	return nil
}

func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := copyDir(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
				return err
			}
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// noSyncFS is the control run's file layer: every sync is skipped, so a
// power cut loses everything the log wrote.
type noSyncFS struct{ raftlog.FS }

func (f noSyncFS) OpenFile(name string, flag int) (raftlog.File, error) {
	file, err := f.FS.OpenFile(name, flag)
	if err != nil {
		return nil, err
	}
	return noSyncFile{file}, nil
}

func (noSyncFS) SyncDir(string) error { return nil }

type noSyncFile struct{ raftlog.File }

func (noSyncFile) Sync() error { return nil }
