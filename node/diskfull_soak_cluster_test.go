package node_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/node/diskspace"
	"github.com/verbund/verbund/node/nodetest"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// TestDiskFullFollowerSoak: a voter whose REAL disk fills does not take the
// cluster down, and does not crash. Three voters; the data dir of voter n2
// is a 64 MiB tmpfs (root only; VERBUND_SOAK=1, make soak), the others'
// have room. A ballast file leaves n2 a few MiB above its floor (half the
// 16 MiB reserve); writes through the leader continue while n2's disk
// fills: n2 stops appending Raft entries at the floor instead of meeting
// ENOSPC in badger's memory-mapped files (a fault that kills the process,
// here the test binary), and the other two voters keep committing. Once
// the ballast is deleted, n2 catches up by itself with every acknowledged
// write.
func TestDiskFullFollowerSoak(t *testing.T) {
	if os.Getenv("VERBUND_SOAK") != "1" {
		t.Skip("soak test: set VERBUND_SOAK=1 (make soak)")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipped: mounting the tmpfs this test fills needs root")
	}
	base := t.TempDir()
	mnt := filepath.Join(base, "n2")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("skipped: cannot mount a 64 MiB tmpfs at %s (%v: %s); the real-volume disk-full test needs it", mnt, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { // after the cluster's shutdown (cleanups run last first)
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	const reserve, floor = 16 << 20, 8 << 20
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Seed: 14, BaseDir: base, DiskReserveBytes: reserve})
	l := c.WaitLeader(10 * time.Second)
	if l.Index == 2 {
		t.Fatal("the voter on the tmpfs leads; this test needs it to follow")
	}
	full := c.Nodes[2]
	free, err := diskspace.Statfs(mnt)
	if err != nil {
		t.Fatal(err)
	}
	ballast := filepath.Join(mnt, "ballast")
	if err := writeFile(ballast, int64(free)-floor-3<<20); err != nil {
		t.Fatal(err)
	}
	free, _ = diskspace.Statfs(mnt)
	t.Logf("n2's tmpfs: %s free after the ballast (reserve %s, floor %s)", diskspace.Bytes(free), diskspace.Bytes(reserve), diskspace.Bytes(floor))

	key := c.OperatorKey()
	desc := strings.Repeat("Beschreibung einer Leistung. ", 8<<10/29)
	var acked []string
	began := time.Now()
	stalled := 0 // writes acknowledged while n2's log did not move
	for k := 0; stalled < 100; k++ {
		if time.Since(began) > 3*time.Minute {
			t.Fatalf("n2's log still grows after 3 minutes (%d writes, %s free)", len(acked), freeOf(mnt))
		}
		id := fmt.Sprintf("9971%010d", k)
		before := full.Node().Raft().LastIndex()
		if _, err := publishVia(t, c, k%2, serviceCmd(t, key, id, desc)); err != nil {
			t.Fatalf("write %d via node %d with n2's disk filling: %v", k, k%2, err)
		}
		acked = append(acked, id)
		if full.Node().Raft().LastIndex() == before {
			stalled++
		} else {
			stalled = 0
		}
	}
	last := full.Node().Raft().LastIndex()
	t.Logf("n2 stopped appending at index %d with %s free after %d writes in %v; the others are at %d",
		last, freeOf(mnt), len(acked), time.Since(began).Round(time.Millisecond), l.Node().Raft().LastIndex())
	if c.Leader() != l {
		t.Fatal("leadership moved while a follower's disk filled")
	}

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitCaughtUp(30 * time.Second); err != nil {
		t.Fatalf("n2 did not catch up once space returned: %v", err)
	}
	for _, id := range acked {
		if s, _, err := full.Node().Reader().Service(id); err != nil || s.GetDescription() != desc {
			t.Fatalf("acknowledged write %s on n2 after catching up: %v", id, err)
		}
	}
	st := c.EnsureSame(t)
	t.Logf("follower disk-full soak: %d writes acknowledged, 0 lost; n2 caught up from %d to %d", len(acked), last, st.Index)
}

// serviceCmd is the operator's signed command putting service id.
func serviceCmd(t *testing.T, key jose.JSONWebKey, id, desc string) string {
	t.Helper()
	jws, err := registry.SignCommand(registry.NewCommand("test-operator", &registryv1.Mutation{Op: &registryv1.Mutation_PutService{PutService: &registryv1.Service{
		LeikaKey: id, Name: "Leistung " + id, Description: desc,
	}}}), key)
	if err != nil {
		t.Fatal(err)
	}
	return jws
}

func freeOf(dir string) string {
	free, err := diskspace.Statfs(dir)
	if err != nil {
		return err.Error()
	}
	return diskspace.Bytes(free)
}

// writeFile writes size bytes to path (tmpfs allocates on write).
func writeFile(path string, size int64) error {
	if size <= 0 {
		return fmt.Errorf("no room for a ballast file (%d bytes)", size)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for size > 0 {
		k := min(size, int64(len(buf)))
		if _, err := f.Write(buf[:k]); err != nil {
			f.Close()
			return err
		}
		size -= k
	}
	return f.Close()
}
