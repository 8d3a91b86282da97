// Package e2e runs the real verbund binary as separate processes (through
// the e2e/proc harness): the tests here kill them with SIGKILL, pause them
// with SIGSTOP and check what survives on disk and what clients see.
package e2e

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/verbund/verbund/e2e/proc"
)

var binary string

func TestMain(m *testing.M) {
	bin, cleanup, err := proc.Build("../cmd/verbund")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = bin
	code := m.Run()
	cleanup()
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := proc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// start runs `verbund args...` and waits until it prints its API address;
// the process is killed when the test ends.
func start(t *testing.T, args ...string) *proc.Process {
	t.Helper()
	return proc.StartT(t, binary, args...)
}

// stop sends SIGTERM and fails the test unless the process exits cleanly.
func stop(t *testing.T, p *proc.Process) {
	t.Helper()
	if err := p.Terminate(30 * time.Second); err != nil {
		t.Fatalf("%v:\n%s", err, p.Logs())
	}
}

// run runs a client command to completion.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return proc.Run(binary, 60*time.Second, args...)
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	if err := proc.WaitHTTP(url, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

func waitUntil(bound time.Duration, f func() error) error { return proc.WaitUntil(bound, f) }
