package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/verbund/verbund/node/raftlog"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// stoppedNodeWithWrites runs a one-node cluster, commits 20 writes and
// stops it; it returns the config and the applied index.
func stoppedNodeWithWrites(t *testing.T) (Config, uint64) {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	n := startNode(t, cfg)
	f := &fixture{n: n, pub: registryv1connect.NewPublishServiceClient(h2cClient(), n.APIURL())}
	var cmds []string
	for i := range 20 {
		cmds = append(cmds, sign(t, n.SigningKey(), "test-operator", &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
			Id: fmt.Sprintf("09162%07d", i), Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: fmt.Sprintf("Gemeinde %d", i),
		}}}))
	}
	for _, c := range cmds {
		mustOK(t, f.publish(t, c))
	}
	applied := n.FSM().AppliedIndex()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.Bootstrap, cfg.Genesis = false, false
	return cfg, applied
}

func removeSegments(t *testing.T, dir string) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "raft", raftLogDir, "seg-*.wal"))
	if len(segs) == 0 {
		t.Fatal("no segments")
	}
	for _, s := range segs {
		if err := os.Remove(s); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRaftLogBehindRefused: the log's segments are gone (the stable file
// stays): the state applied entries the log no longer holds, so New
// refuses, naming the data dir, the indexes and the recovery.
func TestRaftLogBehindRefused(t *testing.T) {
	cfg, applied := stoppedNodeWithWrites(t)
	removeSegments(t, cfg.DataDir)
	n, err := New(cfg)
	if err == nil {
		n.Close()
		t.Fatal("node started on a log that lost every entry its state applied")
	}
	if !errors.Is(err, ErrRaftLogBehind) {
		t.Fatalf("err %v, want ErrRaftLogBehind", err)
	}
	for _, want := range []string{
		filepath.Join(cfg.DataDir, "raft", raftLogDir), "ends at index 0",
		fmt.Sprintf("applied index %d", applied), "verbund recover raft-log --data " + cfg.DataDir,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal lacks %q: %v", want, err)
		}
	}
	t.Logf("refused: %v", err)
}

// TestOldBadgerRaftLogRefused: a data dir whose Raft log is the badger
// store of earlier versions (raft/log) is refused, not silently ignored;
// RecoverRaftLog moves it aside with its term and vote carried over, and
// the node's storage opens again.
func TestOldBadgerRaftLogRefused(t *testing.T) {
	cfg, _ := stoppedNodeWithWrites(t)
	// What an earlier version left: raft/log (badger), no raft/wal.
	if err := os.RemoveAll(filepath.Join(cfg.DataDir, "raft", raftLogDir)); err != nil {
		t.Fatal(err)
	}
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(cfg.DataDir, "raft", oldRaftLogDir)).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte("s/CurrentTerm"), binary.BigEndian.AppendUint64(nil, 12)); err != nil {
			return err
		}
		return txn.Set([]byte("s/LastVoteCand"), []byte("127.0.0.1:7000"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg)
	if err == nil {
		n.Close()
		t.Fatal("node started next to an old badger raft log")
	}
	if !errors.Is(err, ErrRaftLogOldFormat) || !strings.Contains(err.Error(), "verbund recover raft-log --data "+cfg.DataDir) {
		t.Fatalf("err %v, want ErrRaftLogOldFormat naming the recovery", err)
	}
	t.Logf("refused: %v", err)
	rec, err := RecoverRaftLog(cfg.DataDir, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if rec.OldFormatDir == "" || rec.Term != 12 || rec.VotedFor != "127.0.0.1:7000" {
		t.Fatalf("recovery %+v: want the old log moved aside, term 12 and the vote kept", rec)
	}
	n, err = New(cfg)
	if err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	defer n.Close()
	if term, _ := n.logStore.GetUint64([]byte("CurrentTerm")); term != 12 {
		t.Errorf("term after recovery %d, want 12", term)
	}
	if n.FSM().AppliedIndex() != 0 {
		t.Errorf("state after recovery at index %d, want empty (rebuilt from the leader)", n.FSM().AppliedIndex())
	}
}

// TestRaftLogOnFS: Config.RaftLogFS carries the log (nothing under the
// data dir's raft/wal on disk).
func TestRaftLogOnFS(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	var fs countingFS
	cfg.RaftLogFS = &fs
	startNode(t, cfg)
	if fs.opens == 0 {
		t.Fatal("the node did not open its raft log through Config.RaftLogFS")
	}
}

type countingFS struct {
	raftlog.OS
	opens int
}

func (c *countingFS) OpenFile(name string, flag int) (raftlog.File, error) {
	c.opens++
	return c.OS.OpenFile(name, flag)
}

// TestRecoverRefusesRunningNode: RecoverRaftLog leaves a running node's
// files alone.
func TestRecoverRefusesRunningNode(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	startNode(t, cfg)
	_, err := RecoverRaftLog(cfg.DataDir, nil, time.Now())
	if err == nil || !strings.Contains(err.Error(), "is running") {
		t.Fatalf("recovery of a running node: err %v", err)
	}
	if segs, _ := filepath.Glob(filepath.Join(cfg.DataDir, "raft", raftLogDir, "seg-*.wal")); len(segs) == 0 {
		t.Error("segments of the running node were moved")
	}
}
