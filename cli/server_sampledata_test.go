package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
	"github.com/verbund/verbund/sampledata"
)

// sampleNode stands in for the in-process node's write path: it applies
// each command once (by issuer and id), answers repeats as duplicates and
// checks the signatures of the issuers it knows.
type sampleNode struct {
	t        *testing.T
	keys     map[string]jose.JSONWebKey // issuer → public key
	refuse   string                     // if set, every new command fails with this code
	mu       sync.Mutex
	index    uint64
	results  map[string]*registryv1.CommandResult
	issuers  map[string]int // issuer → commands applied
	verified int
}

func (s *sampleNode) Publish(_ context.Context, signed []string) ([]*registryv1.CommandResult, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*registryv1.CommandResult
	for _, raw := range signed {
		sc, err := registry.ParseCommand(raw)
		if err != nil {
			return nil, 0, err
		}
		id := sc.Command.GetIssuer() + "/" + sc.Command.GetId()
		if prev := s.results[id]; prev != nil {
			out = append(out, &registryv1.CommandResult{CommandId: prev.CommandId, Index: prev.Index, Duplicate: true})
			continue
		}
		s.index++
		res := &registryv1.CommandResult{CommandId: sc.Command.GetId(), Index: s.index}
		if s.refuse != "" {
			res.ErrorCode, res.ErrorMessage = s.refuse, "refused by test"
			out = append(out, res)
			continue
		}
		if pub, ok := s.keys[sc.Command.GetIssuer()]; ok {
			if err := sc.Verify(pub); err != nil {
				s.t.Errorf("command %s: %v", id, err)
			}
			s.verified++
		}
		s.results[id] = res
		s.issuers[sc.Command.GetIssuer()]++
		out = append(out, res)
	}
	return out, s.index, nil
}

func TestLoadSampleData(t *testing.T) {
	dir := t.TempDir()
	op, err := keys.GenerateSigning("verbund-dev-sig")
	if err != nil {
		t.Fatal(err)
	}
	n := &sampleNode{t: t, keys: map[string]jose.JSONWebKey{"verbund-dev": op.Public()},
		results: map[string]*registryv1.CommandResult{}, issuers: map[string]int{}}
	var logs bytes.Buffer
	log := newTestLogger(&logs)

	if err := loadSampleData(context.Background(), log, n, nil, dir, "verbund-dev", op); err != nil {
		t.Fatal(err)
	}
	// The sample organisations' keys are kept in the data dir; Munich's
	// signs Munich's commands, Bayern's agency's its listings and approval.
	keyFile := filepath.Join(dir, "keys", "sample", sampledata.MunichARS+".jwk")
	munich, err := keys.Load(keyFile)
	if err != nil {
		t.Fatalf("Munich's sample key: %v", err)
	}
	if n.issuers["verbund-dev"] == 0 || n.issuers[sampledata.MunichARS] == 0 || n.issuers["land-09"] == 0 || n.issuers[sampledata.SSCID] == 0 {
		t.Errorf("commands by issuer %v: want the operator's, Munich's, Bayern's and the service centre's", n.issuers)
	}
	if n.verified != n.issuers["verbund-dev"] {
		t.Errorf("%d operator commands verified, %d applied", n.verified, n.issuers["verbund-dev"])
	}
	contains(t, "log", logs.String(), []string{"generated sample key", "org=" + sampledata.MunichARS, "org=land-09", `msg="sample data import"`, `msg="sample data loaded"`, "took="})
	applied := len(n.results)

	// A restart resumes: same key, every command a duplicate.
	n.keys[sampledata.MunichARS] = munich.Public()
	logs.Reset()
	if err := loadSampleData(context.Background(), log, n, nil, dir, "verbund-dev", op); err != nil {
		t.Fatal(err)
	}
	if len(n.results) != applied {
		t.Errorf("second import applied %d new commands, want 0", len(n.results)-applied)
	}
	if again, err := keys.Load(keyFile); err != nil || again.KeyID != munich.KeyID {
		t.Errorf("Munich's key after restart: %v, %v (was %s)", again.KeyID, err, munich.KeyID)
	}
	if strings.Contains(logs.String(), "generated sample key") {
		t.Errorf("restart generated a new Munich key:\n%s", logs.String())
	}
	contains(t, "log", logs.String(), []string{`msg="sample data loaded"`})

	// A refused command fails the import.
	refusing := &sampleNode{t: t, refuse: registry.CodePermissionDenied, results: map[string]*registryv1.CommandResult{}, issuers: map[string]int{}}
	err = loadSampleData(context.Background(), log, refusing, nil, t.TempDir(), "verbund-dev", op)
	if err == nil || !strings.HasPrefix(err.Error(), "sample data import: ") || !errors.Is(err, registry.ErrPermissionDenied) {
		t.Errorf("refused import: err = %v, want a wrapped permission denied", err)
	}
}

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, nil))
}

// syncBuffer is a bytes.Buffer safe for a command writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDevLoadsSampleData runs "verbund dev" in this process: the node starts,
// genesis registers the operator, the command line loads the sample data
// through the node, and a client finds Munich's offerings. A restart on the
// same data dir resumes (nothing new, Munich's key kept).
func TestDevLoadsSampleData(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and imports 12,000 records")
	}
	newTestEnv(t)
	dir := t.TempDir()
	dev := func() (stdout, stderr string) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		out, errOut := &syncBuffer{}, &syncBuffer{}
		done := make(chan int, 1)
		go func() {
			done <- dispatch(ctx, &Env{Stdout: out, Stderr: errOut}, commands,
				[]string{"dev", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"})
		}()
		deadline := time.After(3 * time.Minute)
		for !strings.Contains(out.String(), "Stop with Ctrl-C.") {
			select {
			case code := <-done:
				cancel()
				t.Fatalf("dev exited with %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			case <-deadline:
				cancel()
				t.Fatalf("dev did not start\nstdout:\n%s\nstderr:\n%s", out, errOut)
			case <-time.After(50 * time.Millisecond):
			}
		}
		api := regexp.MustCompile(`API \(Connect, gRPC, gRPC-Web\): (\S+)`).FindStringSubmatch(out.String())
		if api == nil {
			t.Fatalf("no API address in:\n%s", out)
		}
		code, stdout, stderr := cli(t, nil, "providers", "--service", "99050012104000", "--area", sampledata.MunichARS, "--addr", api[1])
		if code != 0 || !strings.Contains(stdout, "München") {
			t.Errorf("providers: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("dev exit code %d after Ctrl-C\nstderr:\n%s", code, errOut)
		}
		return out.String(), errOut.String()
	}

	_, logs := dev()
	contains(t, "first start's log", logs, []string{"genesis: registered network operator", "generated sample key", "org=" + sampledata.MunichARS, `msg="sample data loaded"`, "took="})
	if strings.Index(logs, "genesis: registered network operator") > strings.Index(logs, `msg="sample data import"`) {
		t.Errorf("sample data imported before genesis:\n%s", logs)
	}
	key, err := keys.Load(filepath.Join(dir, "keys", "sample", sampledata.MunichARS+".jwk"))
	if err != nil {
		t.Fatal(err)
	}

	_, logs = dev()
	contains(t, "restart's log", logs, []string{`msg="sample data loaded"`, "Applied:0"})
	if strings.Contains(logs, "generated sample key") || strings.Contains(logs, "genesis: registered") {
		t.Errorf("restart made a new key or a new genesis:\n%s", logs)
	}
	if again, err := keys.Load(filepath.Join(dir, "keys", "sample", sampledata.MunichARS+".jwk")); err != nil || again.KeyID != key.KeyID {
		t.Errorf("Munich's key after restart: %v %v", again.KeyID, err)
	}
}
