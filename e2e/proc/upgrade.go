package proc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RestartWith stops node i (SIGTERM, as an operator stops a node for an
// upgrade; SIGKILL if it does not stop) and starts bin on the same data
// directory with the same command line: an upgrade, or a downgrade. Later
// Restarts use bin.
func (c *Cluster) RestartWith(i int, bin string) error {
	if err := c.Node(i).Terminate(StopTimeout); err != nil {
		c.t.Logf("n%d: %v", i, err)
	}
	p, err := Start(bin, c.args[i]...)
	if err != nil {
		return err
	}
	c.t.Cleanup(p.Kill)
	c.mu.Lock()
	c.proc[i] = p
	c.mu.Unlock()
	return nil
}

// StopTimeout bounds a clean stop in RestartWith.
var StopTimeout = 30 * time.Second

// ErrNoHistory is returned by BuildPrevious when the git history is not
// available (not a git checkout, or a shallow clone).
var ErrNoHistory = fmt.Errorf("the git history is not available")

// BuildPrevious builds the previous version of the verbund command: the
// newest release tag (v*) before HEAD, or the previous commit if there is
// none. It checks the commit out with `git worktree add` into a temporary
// directory (removed by t.Cleanup) and builds it there. It returns the
// binary, the ref it built, and ErrNoHistory (wrapped) in a shallow clone
// or outside git.
func BuildPrevious(t testing.TB) (bin, ref string, err error) {
	t.Helper()
	git := func(args ...string) (string, error) {
		out, err := exec.Command("git", args...).Output()
		return strings.TrimSpace(string(out)), err
	}
	if _, err := git("rev-parse", "HEAD"); err != nil {
		return "", "", fmt.Errorf("%w: not a git checkout: %v", ErrNoHistory, err)
	}
	if s, _ := git("rev-parse", "--is-shallow-repository"); s == "true" {
		return "", "", fmt.Errorf("%w: shallow clone (git fetch --unshallow --tags)", ErrNoHistory)
	}
	head, _ := git("rev-parse", "HEAD")
	ref, err = git("describe", "--tags", "--abbrev=0", "--match", "v*", "HEAD")
	if err == nil {
		if c, _ := git("rev-parse", ref+"^{commit}"); c == head {
			// HEAD is the release itself: the previous one.
			ref, err = git("describe", "--tags", "--abbrev=0", "--match", "v*", "HEAD^")
		}
	}
	if err != nil {
		ref = "HEAD~1"
	}
	commit, err := git("rev-parse", ref+"^{commit}")
	if err != nil {
		return "", "", fmt.Errorf("%w: %s: %v", ErrNoHistory, ref, err)
	}
	tmp := t.TempDir()
	wt := filepath.Join(tmp, "src")
	if out, err := exec.Command("git", "worktree", "add", "--detach", wt, commit).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("git worktree add %s: %v: %s", ref, err, out)
	}
	t.Cleanup(func() {
		_ = exec.Command("git", "worktree", "remove", "--force", wt).Run()
	})
	bin = filepath.Join(tmp, "verbund-"+ref)
	build := exec.Command("go", "build", "-o", bin, "./cmd/verbund")
	build.Dir = wt
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", "", fmt.Errorf("build %s (%s): %w", ref, commit[:12], err)
	}
	return bin, fmt.Sprintf("%s (%s)", ref, commit[:12]), nil
}
