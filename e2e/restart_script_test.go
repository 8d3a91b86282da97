package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// clusterScript is one run of scripts/cluster.sh in its own process group.
type clusterScript struct {
	cmd *exec.Cmd
	out *lockedBuf
}

func startClusterScript(t *testing.T, env []string) *clusterScript {
	t.Helper()
	cmd := exec.Command("../scripts/cluster.sh")
	cmd.Env = env
	out := &lockedBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &clusterScript{cmd: cmd, out: out}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	return s
}

// waitUp waits until the script reports the network running, and returns
// how long that took.
func (s *clusterScript) waitUp(t *testing.T, bound time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for !strings.Contains(s.out.String(), "Ctrl-C stops every node") && !strings.Contains(s.out.String(), "Every node was already running") {
		if time.Since(start) > bound {
			t.Fatalf("cluster.sh did not report the network running within %v:\n%s", bound, s.out.String())
		}
		if s.cmd.ProcessState != nil {
			t.Fatalf("cluster.sh exited:\n%s", s.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

// TestClusterScriptResumes runs `make cluster`'s script as an operator
// would: it starts a fresh network, `cluster.sh stop` (make cluster-stop)
// stops it, the script resumes it; the script and every node are SIGKILLed
// (a crash) and it resumes again; one killed node is started again while the
// others run. Each time the network serves writes and linearizable reads at
// all five nodes within restartBound, the start-up table names one leader,
// and no acknowledged write is lost.
func TestClusterScriptResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level cluster test")
	}
	dir := t.TempDir()
	const off = 600 // ports 18681..; TestMakeCluster uses 500
	env := append(os.Environ(), "BIN="+binary, "CLUSTER_DIR="+dir, fmt.Sprintf("PORT_OFFSET=%d", off), "STOP_WAIT=40",
		"NODE_FLAGS=--rate-limits off") // the test reads every write at every node from 127.0.0.1
	apis := make([]string, 5)
	for i := range apis {
		apis[i] = fmt.Sprintf("http://127.0.0.1:%d", 18081+off+i)
	}
	stopScript := func() string {
		cmd := exec.Command("../scripts/cluster.sh", "stop")
		cmd.Env = env
		o, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cluster.sh stop: %v\n%s", err, o)
		}
		return string(o)
	}
	oneLeader := func(out string) {
		t.Helper()
		if n := strings.Count(out, " Leader "); n != 1 {
			t.Errorf("start-up table shows %d leaders, want 1:\n%s", n, out)
		}
	}

	s := startClusterScript(t, env)
	t.Logf("fresh network up in %v", s.waitUp(t, 120*time.Second).Round(time.Millisecond))
	oneLeader(s.out.String())
	w := newAckedWrites(t, filepath.Join(dir, "n1", "keys", "signing.jwk"), "verbund-operator", "09189")
	for i := range 20 {
		if err := w.write(apis[i%5], 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	// 1. Clean stop (make cluster-stop), resume.
	o := stopScript()
	if !strings.Contains(o, "all nodes stopped") {
		t.Fatalf("cluster.sh stop:\n%s", o)
	}
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("the first cluster.sh did not exit after its nodes were stopped:\n%s", s.out.String())
	}
	for i := 1; i <= 5; i++ {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("n%d.pid", i))); err == nil {
			t.Errorf("n%d.pid left after a clean stop", i)
		}
	}
	s = startClusterScript(t, env)
	up := s.waitUp(t, 90*time.Second)
	if !strings.Contains(s.out.String(), "resuming") {
		t.Errorf("second run did not resume:\n%s", s.out.String())
	}
	oneLeader(s.out.String())
	serving := untilServing(t, w, apis)
	t.Logf("after a clean stop: resumed in %v, serving at all 5 nodes %v later", up.Round(time.Millisecond), serving.Round(time.Millisecond))
	checkNoneLost(t, w, apis)

	// 2. Crash: SIGKILL the script and every node (one process group).
	if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Wait()
	time.Sleep(300 * time.Millisecond)
	s = startClusterScript(t, env)
	up = s.waitUp(t, 90*time.Second)
	oneLeader(s.out.String())
	serving = untilServing(t, w, apis)
	t.Logf("after SIGKILL of all: resumed in %v, serving at all 5 nodes %v later", up.Round(time.Millisecond), serving.Round(time.Millisecond))
	checkNoneLost(t, w, apis)

	// 3. One node killed while the others run: a second run starts it only.
	pidB, err := os.ReadFile(filepath.Join(dir, "n1.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(pidB), &pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s2 := startClusterScript(t, env)
	up = s2.waitUp(t, 90*time.Second)
	for _, id := range []string{"n2", "n3", "n4", "n5"} {
		if !strings.Contains(s2.out.String(), id+" already running") {
			t.Errorf("the second run did not leave %s alone:\n%s", id, s2.out.String())
		}
	}
	if strings.Contains(s2.out.String(), "failed") {
		t.Errorf("restarting n1 failed:\n%s", s2.out.String())
	}
	oneLeader(s2.out.String())
	serving = untilServing(t, w, apis)
	t.Logf("n1 killed and started again while the others ran: up in %v, serving at all 5 nodes %v later", up.Round(time.Millisecond), serving.Round(time.Millisecond))
	checkNoneLost(t, w, apis)
	for i := 2; i <= 5; i++ {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("n%d.pid", i))); err != nil {
			t.Errorf("n%d.pid lost: %v", i, err)
		}
	}

	// members on a member (n4): suffrage and leader as the servers see
	// them, each node's version and its public API (not the mTLS address).
	o, err = run(t, "members", "--addr", apis[3])
	if err != nil {
		t.Fatalf("members: %v\n%s", err, o)
	}
	row := regexp.MustCompile(`(?m)^(n[123])\s+\S+\s+voter\s+alive\s+Voter\s+\*\s+(\S+)\s+(\S+)`).FindStringSubmatch(o)
	if row == nil {
		t.Errorf("members on a member shows no leader with suffrage:\n%s", o)
	} else if want := apis[row[1][1]-'1']; row[3] != want || row[2] == "-" {
		t.Errorf("leader row %q: API %s, want the public %s; version %q", row[0], row[3], want, row[2])
	}
	t.Logf("members on n4:\n%s", o)

	// 4. make cluster-stop stops what runs (started by either run).
	o = stopScript()
	if strings.Count(o, ") stopped") != 5 {
		t.Errorf("cluster.sh stop did not stop 5 nodes:\n%s", o)
	}
	if o, _ := exec.Command("pgrep", "-f", "--", "--data-dir "+dir).Output(); len(strings.TrimSpace(string(o))) > 0 {
		t.Fatalf("nodes left running after cluster.sh stop: %s", o)
	}
}
