// Package proc runs the verbund binary as operating-system processes for
// tests: start a node with given flags and wait until its API is up, read
// its logs, and fault it the way a machine does: SIGKILL (a crash: nothing
// after the last fsync is promised), SIGSTOP/SIGCONT (a pause: a stalled
// VM, a long GC or swap storm; timers and goroutines stop, the sockets stay
// open), SIGTERM (a clean stop), and restart from the same flags and data
// directory.
//
// The e2e tests share it, and Cluster starts a network of voters as
// processes. Everything listens on loopback.
package proc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// StartTimeout bounds how long Start waits for a node's API.
var StartTimeout = 60 * time.Second

// Build compiles the verbund command (pkg, e.g. "../cmd/verbund" from a
// test in e2e/) into a new temporary directory and returns the binary's
// path and a function that removes it.
func Build(pkg string) (bin string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "verbund-proc-")
	if err != nil {
		return "", nil, err
	}
	bin = filepath.Join(dir, "verbund")
	build := exec.Command("go", "build", "-o", bin, pkg)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build %s: %w", pkg, err)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// Process is one run of the binary. Restart starts a new Process with the
// same binary and arguments.
type Process struct {
	Bin  string
	Args []string
	// API is the base URL the node printed ("http://127.0.0.1:port").
	API string

	cmd    *exec.Cmd
	mu     sync.Mutex
	logs   strings.Builder
	done   chan struct{}
	paused atomic.Bool
}

var apiLine = regexp.MustCompile(`API \(Connect, gRPC, gRPC-Web\): (http://\S+)`)

// Start runs `bin args...` and waits until the node prints its API
// address. It fails if the process exits first or StartTimeout passes
// (the process is then killed).
func Start(bin string, args ...string) (*Process, error) {
	p := &Process{Bin: bin, Args: args, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = logWriter{p}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	found := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			p.appendLog(line + "\n")
			if m := apiLine.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	go func() {
		<-scanned // stdout drained before Wait closes the pipe
		_ = p.cmd.Wait()
		close(p.done)
	}()
	select {
	case p.API = <-found:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("verbund %s exited early: %s\n%s", strings.Join(args, " "), p.cmd.ProcessState, p.Logs())
	case <-time.After(StartTimeout):
		p.Kill()
		return nil, fmt.Errorf("verbund %s did not print its API address within %v:\n%s", strings.Join(args, " "), StartTimeout, p.Logs())
	}
}

// StartT is Start for a test: it fails the test on error and kills the
// process when the test ends.
func StartT(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	p, err := Start(bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

type logWriter struct{ p *Process }

func (w logWriter) Write(b []byte) (int, error) { w.p.appendLog(string(b)); return len(b), nil }

func (p *Process) appendLog(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.logs.WriteString(s)
}

// Logs returns everything the process wrote to stdout and stderr so far.
func (p *Process) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL (which also ends a paused process) and waits until
// the process is gone. Safe to call more than once.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.paused.Store(false)
}

// Terminate sends SIGTERM (resuming a paused process first) and waits up
// to bound for a clean exit; it kills the process and returns an error if
// it did not exit, or the exit error if it exited with a failure.
func (p *Process) Terminate(bound time.Duration) error {
	if p.Exited() {
		return nil
	}
	if p.paused.Load() {
		_ = p.Resume()
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if s := p.cmd.ProcessState; s != nil && !s.Success() {
			return fmt.Errorf("verbund exited with %s", s)
		}
		return nil
	case <-time.After(bound):
		p.Kill()
		return fmt.Errorf("no clean shutdown within %v", bound)
	}
}

// Pause stops the process with SIGSTOP: it keeps its sockets, but no
// goroutine runs and no timer fires until Resume.
func (p *Process) Pause() error {
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	p.paused.Store(true)
	return nil
}

// Resume continues a paused process with SIGCONT.
func (p *Process) Resume() error {
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return err
	}
	p.paused.Store(false)
	return nil
}

// Paused reports whether the process was paused and not resumed.
func (p *Process) Paused() bool { return p.paused.Load() }

// Restart kills the process if it still runs and starts the binary again
// with the same arguments (and so the same data directory and addresses).
func (p *Process) Restart() (*Process, error) {
	p.Kill()
	return Start(p.Bin, p.Args...)
}

// Run runs a client command of bin to completion (bounded by timeout) and
// returns its combined output.
func Run(bin string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}

// FreeAddr returns a loopback address whose port was free for TCP and UDP
// a moment ago (gossip binds both). The port is drawn from 10000–16999:
// below Linux's ephemeral range (32768–60999), from which the kernel also
// picks the local ports of outgoing connections and of port-0 listeners
// (other tests, the nodes' own connections), so no such port takes it
// between this check and the process binding it; and below the ports of
// scripts/cluster.sh (17001 and up, shifted up by the benchmark).
func FreeAddr() (string, error) {
	const lo, n = 10000, 7000
	start := rand.IntN(n)
	for i := range n {
		addr := fmt.Sprintf("127.0.0.1:%d", lo+(start+i)%n)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return addr, nil
	}
	return "", errors.New("no free loopback port in 10000-16999")
}

// WaitHTTP waits until url answers any HTTP response.
func WaitHTTP(url string, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	var err error
	for time.Now().Before(deadline) {
		var resp *http.Response
		if resp, err = http.Get(url); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.Join(fmt.Errorf("%s not reachable within %v", url, bound), err)
}

// WaitUntil polls f until it returns nil or bound passes, and returns f's
// last error.
func WaitUntil(bound time.Duration, f func() error) error {
	deadline := time.Now().Add(bound)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}
