package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/verbund/verbund/e2e/proc"
)

// TestMakeCluster runs scripts/cluster.sh (what `make cluster` runs), kills
// the leader process with SIGKILL, writes through a surviving node during
// the outage, checks the write is readable on every remaining node, and that
// stopping the script leaves no node process behind.
func TestMakeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level cluster test")
	}
	dir := t.TempDir()
	const off = 500 // ports 18581.., away from a developer's `make cluster`
	cmd := exec.Command("../scripts/cluster.sh")
	cmd.Env = append(os.Environ(), "BIN="+binary, "CLUSTER_DIR="+dir, fmt.Sprintf("PORT_OFFSET=%d", off))
	out := &lockedBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Errorf("cluster script did not stop:\n%s", out.String())
		}
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(out.String(), "Ctrl-C stops every node") {
		if time.Now().After(deadline) {
			t.Fatalf("cluster did not start:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	api := func(i int) string { return fmt.Sprintf("http://127.0.0.1:%d", 18080+off+i) }
	// The case workers sign in (tokens stored for the CLI runs).
	t.Setenv("VERBUND_CONFIG_DIR", t.TempDir())
	for _, i := range []int{2, 3} {
		if _, err := proc.Authorize(binary, filepath.Join(dir, fmt.Sprintf("n%d", i)), api(i)); err != nil {
			t.Fatal(err)
		}
	}
	handoverRoundTrip(t, api(2), api(3))
	// Find the leader and its PID.
	var leader string
	if err := waitUntil(20*time.Second, func() error {
		o, err := run(t, "members", "--addr", api(2))
		if err != nil {
			return fmt.Errorf("%v: %s", err, o)
		}
		m := regexp.MustCompile(`(?m)^(n\d)\s+\S+\s+voter\s+alive\s+Voter\s+\*`).FindStringSubmatch(o)
		if m == nil {
			return fmt.Errorf("no leader yet:\n%s", o)
		}
		leader = m[1]
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pidB, err := os.ReadFile(filepath.Join(dir, leader+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(pidB), &pid)
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	survivor := 2
	if leader == "n2" {
		survivor = 3
	}
	doc := filepath.Join(t.TempDir(), "outage.yaml")
	os.WriteFile(doc, []byte("issuer: verbund-operator\nmutations:\n  - putOrganisation:\n      id: ssc-outage\n      kind: ORGANISATION_KIND_SHARED_SERVICE_CENTRE\n      name: written during the outage\n"), 0o644)
	if err := waitUntil(30*time.Second, func() error {
		o, err := run(t, "publish", "-f", doc, "--key", filepath.Join(dir, "n1", "keys", "signing.jwk"), "--addr", api(survivor))
		if err != nil {
			return fmt.Errorf("%v: %s", err, o)
		}
		return nil
	}); err != nil {
		t.Fatalf("write during the outage: %v", err)
	}
	t.Logf("leader %s killed; write through n%d accepted after %v", leader, survivor, time.Since(killed).Round(time.Millisecond))
	for i := 1; i <= 5; i++ {
		if fmt.Sprintf("n%d", i) == leader {
			continue
		}
		if err := waitUntil(10*time.Second, func() error {
			o, err := run(t, "orgs", "get", "ssc-outage", "--linearizable", "--addr", api(i))
			if err != nil || !strings.Contains(o, "written during the outage") {
				return fmt.Errorf("n%d: %v %s", i, err, o)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	if o, _ := exec.Command("pgrep", "-f", dir).Output(); len(strings.TrimSpace(string(o))) > 0 {
		t.Fatalf("processes left running after stop: %s", o)
	}
}

type lockedBuf struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// handoverRoundTrip: München's node hands a case to Augsburg's with the CLI;
// Augsburg accepts it and forwards it back; München accepts and completes
// it; `verbund track` on either node shows every step verified.
func handoverRoundTrip(t *testing.T, munich, augsburg string) {
	t.Helper()
	cli := func(args ...string) string {
		t.Helper()
		out, err := run(t, args...)
		if err != nil {
			t.Fatalf("verbund %v: %v\n%s", args, err, out)
		}
		return out
	}
	// Both nodes must see both organisations' onboarded keys (reads are
	// local; a node that just joined may still be catching up).
	for _, addr := range []string{munich, augsburg} {
		for _, org := range []string{"091620000000", "097610000000"} {
			if err := waitUntil(30*time.Second, func() error {
				o, err := run(t, "orgs", "get", org, "--addr", addr)
				if err != nil || !strings.Contains(o, "https://") {
					return fmt.Errorf("%s not yet onboarded on %s: %v", org, addr, err)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	out := cli("handover", "send", "-f", "../cli/testdata/case.json", "--to", "097610000000", "--service", "99115005000000",
		"--reason", "Zuständigkeit Augsburg", "--addr", munich, "-o", "json")
	code := regexp.MustCompile(`"trackingCode":\s*"([^"]+)"`).FindStringSubmatch(out)
	if code == nil {
		t.Fatalf("no tracking code in %s", out)
	}
	caseIn := func(addr string) string {
		var id string
		if err := waitUntil(20*time.Second, func() error {
			o := cli("inbox", "--addr", addr, "-o", "json")
			m := regexp.MustCompile(`"handoverId":\s*"([^"]+)"`).FindStringSubmatch(o)
			if m == nil {
				return fmt.Errorf("inbox of %s empty", addr)
			}
			id = m[1]
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	id := caseIn(augsburg)
	cli("case", "accept", id, "--addr", augsburg)
	cli("case", "forward", id, "--to", "091620000000", "--reason", "zurück an München", "--addr", augsburg)
	back := caseIn(munich)
	cli("case", "accept", back, "--addr", munich)
	cli("case", "complete", back, "--addr", munich)
	for _, addr := range []string{munich, augsburg} {
		if err := waitUntil(20*time.Second, func() error {
			o, err := run(t, "track", code[1], "--addr", addr)
			if err != nil || !strings.Contains(o, "6 of 6 steps verified") {
				return fmt.Errorf("track on %s: %v\n%s", addr, err, o)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("case %s went München → Augsburg → München; track shows 6 of 6 steps verified", code[1])
}
