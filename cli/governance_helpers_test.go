package cli

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Helpers of the governance tests (bootstrap_test.go, life_test.go): they
// run the command line as an operator or a clerk would type it.

// mustRun runs the command line and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := cli(t, nil, args...)
	if code != 0 {
		t.Fatalf("verbund %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// mustRefuse runs the command line and fails the test unless the registry
// refused the command with a message containing every one of want (exit 1).
func mustRefuse(t *testing.T, want []string, args ...string) string {
	t.Helper()
	code, stdout, stderr := cli(t, nil, args...)
	if code != 1 || !strings.Contains(stderr, "refused by the registry") {
		t.Fatalf("verbund %s: want a refusal, got exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout, stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("verbund %s: refusal does not mention %q:\n%s", strings.Join(args, " "), w, stderr)
		}
	}
	return stderr
}

var reFingerprint = regexp.MustCompile(`Keys SHA-256:\s+([0-9a-f]{64})`)

// fingerprint returns the "Keys SHA-256" that out (of init, join or orgs
// get) shows.
func fingerprint(t *testing.T, out string) string {
	t.Helper()
	m := reFingerprint.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no Keys SHA-256 in:\n%s", out)
	}
	return m[1]
}

// startNode runs "verbund node args..." in this process until the test
// ends and returns its API URL.
func startNode(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, &Env{Stdout: out, Stderr: errOut}, commands, append([]string{"node"}, args...))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("node did not stop")
		}
	})
	deadline := time.After(time.Minute)
	for !strings.Contains(out.String(), "Stop with Ctrl-C.") {
		select {
		case code := <-done:
			t.Fatalf("node exited with %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		case <-deadline:
			t.Fatalf("node did not start\nstdout:\n%s\nstderr:\n%s", out, errOut)
		case <-time.After(20 * time.Millisecond):
		}
	}
	api := regexp.MustCompile(`API \(Connect, gRPC, gRPC-Web\): (\S+)`).FindStringSubmatch(out.String())
	if api == nil {
		t.Fatalf("no API address in:\n%s", out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node log:\n%s", errOut)
		}
	})
	return api[1]
}
