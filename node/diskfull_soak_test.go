package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/node/connecterr"
	"github.com/verbund/verbund/node/diskspace"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

// TestDiskFullSoak fills a REAL small volume: a node runs on a 64 MiB
// tmpfs (root only; VERBUND_SOAK=1, make soak). A ballast file takes all
// but a few MiB above the reserve; writers publish services with 8 KiB
// descriptions until the node refuses them. The refusal must be clean:
// resource_exhausted naming the data dir, the process alive (a fault in
// badger's memory-mapped log would kill the test binary), reads answered.
// Deleting the ballast frees space; writes must resume without a restart.
// Every acknowledged write must be there, also after a restart.
func TestDiskFullSoak(t *testing.T) {
	if os.Getenv("VERBUND_SOAK") != "1" {
		t.Skip("soak test: set VERBUND_SOAK=1 (make soak)")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipped: mounting the tmpfs this test fills needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("skipped: cannot mount a 64 MiB tmpfs at %s (%v: %s); the real-volume disk-full test needs it", mnt, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { // after the node's Close (cleanups run last first)
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	const reserve = 16 << 20
	cfg := testConfig(t, filepath.Join(mnt, "node"))
	cfg.DiskReserveBytes = reserve
	n := startNode(t, cfg)
	pub := registryv1connect.NewPublishServiceClient(h2cClient(), n.APIURL())

	// Ballast: leave 3 MiB above the reserve for the writes to fill.
	free, err := diskspace.Statfs(mnt)
	if err != nil {
		t.Fatal(err)
	}
	ballast := filepath.Join(mnt, "ballast")
	writeBallast(t, ballast, int64(free)-reserve-3<<20)
	free, _ = diskspace.Statfs(mnt)
	t.Logf("tmpfs of 64 MiB at %s: %s free after the ballast, reserve %s", mnt, diskspace.Bytes(free), diskspace.Bytes(reserve))

	desc := strings.Repeat("Beschreibung einer Leistung. ", 8<<10/29)
	var seq atomic.Int64
	publish := func() (string, error) {
		id := fmt.Sprintf("9970%010d", seq.Add(1))
		jws, err := registry.SignCommand(registry.NewCommand("test-operator", &registryv1.Mutation{Op: &registryv1.Mutation_PutService{PutService: &registryv1.Service{
			LeikaKey: id, Name: "Leistung " + id, Description: desc,
		}}}), n.SigningKey())
		if err != nil {
			return id, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := pub.Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: []string{jws}}))
		if err != nil {
			return id, err
		}
		if r := res.Msg.GetResults()[0]; r.GetErrorCode() != "" {
			return id, fmt.Errorf("command refused: %s: %s", r.GetErrorCode(), r.GetErrorMessage())
		}
		return id, nil
	}
	var (
		mu      sync.Mutex
		acked   []string
		refused atomic.Int64
		other   atomic.Pointer[error]
	)
	// write runs writers until each has seen a refusal (stopAtRefusal) or
	// until want acknowledgements; it returns the first refusal.
	write := func(stopAtRefusal bool, want int) error {
		var first atomic.Pointer[error]
		var wg sync.WaitGroup
		start := len(acked)
		deadline := time.Now().Add(3 * time.Minute)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) && other.Load() == nil {
					id, err := publish()
					switch {
					case err == nil:
						mu.Lock()
						acked = append(acked, id)
						done := !stopAtRefusal && len(acked)-start >= want
						mu.Unlock()
						if done {
							return
						}
					case connecterr.IsDiskFull(err):
						refused.Add(1)
						first.CompareAndSwap(nil, &err)
						if stopAtRefusal {
							return
						}
						time.Sleep(50 * time.Millisecond)
					default:
						other.CompareAndSwap(nil, &err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if e := other.Load(); e != nil {
			t.Fatalf("write failed other than for disk space: %v", *e)
		}
		if e := first.Load(); e != nil {
			return *e
		}
		return nil
	}

	began := time.Now()
	refusal := write(true, 0)
	if refusal == nil {
		t.Fatalf("no write refused within 3 minutes; %d acknowledged", len(acked))
	}
	free, _ = diskspace.Statfs(mnt)
	t.Logf("refused after %d acknowledged writes in %v; %s free at the refusal: %v", len(acked), time.Since(began).Round(time.Millisecond), diskspace.Bytes(free), refusal)
	if !strings.Contains(refusal.Error(), cfg.DataDir) || !strings.Contains(refusal.Error(), "reserve of 16.0 MiB") {
		t.Fatalf("refusal %q does not name the data dir %s and the reserve", refusal, cfg.DataDir)
	}
	// Still refusing, still reading.
	if _, err := publish(); !connecterr.IsDiskFull(err) {
		t.Fatalf("write on the full disk: %v, want a disk-full refusal", err)
	}
	q := registryv1connect.NewQueryServiceClient(h2cClient(), n.APIURL())
	for _, id := range []string{acked[0], acked[len(acked)-1]} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := q.GetService(ctx, connect.NewRequest(&registryv1.GetServiceRequest{LeikaKey: id,
			Read: &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}}))
		cancel()
		if err != nil || res.Msg.GetService().GetDescription() != desc {
			t.Fatalf("linearizable read of %s on the full disk: %v", id, err)
		}
	}

	// Free the ballast: writes resume by themselves.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	full := len(acked)
	if err := write(false, 50); err != nil && len(acked)-full < 50 {
		t.Fatalf("after freeing the ballast: %d writes acknowledged, last refusal %v", len(acked)-full, err)
	}
	t.Logf("ballast deleted: %d more writes acknowledged", len(acked)-full)

	check := func(n *Node, when string) {
		for _, id := range acked {
			s, _, err := n.Reader().Service(id)
			if err != nil || s.GetDescription() != desc {
				t.Fatalf("%s: acknowledged write %s: %v", when, id, err)
			}
		}
	}
	check(n, "before restart")
	if err := n.Close(); err != nil {
		t.Fatalf("close after the full disk: %v", err)
	}
	cfg.RaftAddr = freeAddr(t)
	n2 := startNode(t, cfg)
	check(n2, "after restart")
	t.Logf("disk-full soak: %d writes acknowledged (all present after a restart), %d refused for disk space, 0 lost", len(acked), refused.Load())
}

// writeBallast writes size bytes to path (tmpfs allocates on write).
func writeBallast(t *testing.T, path string, size int64) {
	t.Helper()
	if size <= 0 {
		t.Fatalf("no room for a ballast file (%d bytes)", size)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for size > 0 {
		k := min(size, int64(len(buf)))
		if _, err := f.Write(buf[:k]); err != nil {
			t.Fatalf("ballast: %v", err)
		}
		size -= k
	}
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		t.Fatal(err)
	}
}
