package raftlog_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node/raftlog"
)

// sumFSM applies commands that are 8-byte numbers: it keeps their count
// and sum, and snapshots both.
type sumFSM struct {
	mu         sync.Mutex
	count, sum uint64
}

func (f *sumFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count++
	f.sum += binary.BigEndian.Uint64(l.Data)
	return f.count
}

func (f *sumFSM) state() (uint64, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count, f.sum
}

func (f *sumFSM) Snapshot() (raft.FSMSnapshot, error) {
	c, s := f.state()
	return snap(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, c), s)), nil
}

func (f *sumFSM) Restore(r io.ReadCloser) error {
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil || len(b) != 16 {
		return fmt.Errorf("restore: %d bytes, %v", len(b), err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count, f.sum = binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])
	return nil
}

type snap []byte

func (s snap) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}
func (snap) Release() {}

// TestRaftOnStore runs a real one-voter Raft on the store: apply, snapshot
// (which compacts the log's head), apply more, restart on the same
// directory, and check Raft recovers its state from snapshot plus log.
func TestRaftOnStore(t *testing.T) {
	dir, snapDir := t.TempDir(), t.TempDir()
	conf := raft.DefaultConfig()
	conf.LocalID = "n1"
	conf.HeartbeatTimeout = 50 * time.Millisecond
	conf.ElectionTimeout = 50 * time.Millisecond
	conf.LeaderLeaseTimeout = 50 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.TrailingLogs = 10
	conf.SnapshotThreshold = 1 << 30 // snapshots only when asked
	conf.Logger = hclog.New(&hclog.LoggerOptions{Output: io.Discard})
	opts := raftlog.Options{SegmentSize: 8 << 10}

	start := func(bootstrap bool) (*raft.Raft, *raftlog.Store, *sumFSM) {
		t.Helper()
		store := mustOpen(t, dir, opts)
		snaps, err := raft.NewFileSnapshotStoreWithLogger(snapDir, 2, conf.Logger)
		if err != nil {
			t.Fatal(err)
		}
		_, trans := raft.NewInmemTransport("n1")
		if bootstrap {
			if err := raft.BootstrapCluster(conf, store, store, snaps, trans, raft.Configuration{
				Servers: []raft.Server{{ID: "n1", Address: trans.LocalAddr()}},
			}); err != nil {
				t.Fatal(err)
			}
		}
		fsm := &sumFSM{}
		r, err := raft.NewRaft(conf, fsm, store, store, snaps, trans)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for r.State() != raft.Leader {
			if time.Now().After(deadline) {
				t.Fatal("no leader")
			}
			time.Sleep(10 * time.Millisecond)
		}
		return r, store, fsm
	}
	apply := func(r *raft.Raft, from, to uint64) {
		t.Helper()
		var futs []raft.ApplyFuture
		for i := from; i <= to; i++ {
			futs = append(futs, r.Apply(binary.BigEndian.AppendUint64(nil, i), time.Second))
		}
		for _, f := range futs {
			if err := f.Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	sum := func(n uint64) uint64 { return n * (n + 1) / 2 }

	r, store, fsm := start(true)
	apply(r, 1, 200)
	if err := r.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	first, _ := store.FirstIndex()
	if first < 150 {
		t.Fatalf("after a snapshot the log starts at %d: not compacted", first)
	}
	apply(r, 201, 300)
	if c, s := fsm.state(); c != 300 || s != sum(300) {
		t.Fatalf("fsm %d %d", c, s)
	}
	last, _ := store.LastIndex()
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	r, store, fsm = start(false)
	defer store.Close()
	defer r.Shutdown()
	if err := r.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if c, s := fsm.state(); c != 300 || s != sum(300) {
		t.Fatalf("after restart the fsm has %d commands summing to %d, want 300 and %d", c, s, sum(300))
	}
	if l, _ := store.LastIndex(); l <= last {
		t.Fatalf("last index %d after restart and barrier, was %d", l, last)
	}
	apply(r, 301, 310)
	if c, s := fsm.state(); c != 310 || s != sum(310) {
		t.Fatalf("fsm %d %d", c, s)
	}
	var l raft.Log
	li, _ := store.LastIndex()
	if err := store.GetLog(li, &l); err != nil || !bytes.Equal(l.Data, binary.BigEndian.AppendUint64(nil, 310)) {
		t.Fatalf("last entry %+v %v", l, err)
	}
}
