package peertls

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// listFSM records applied commands.
type listFSM struct {
	mu   sync.Mutex
	logs []string
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = append(f.logs, string(l.Data))
	return len(f.logs)
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("not supported") }
func (f *listFSM) Restore(io.ReadCloser) error         { return errors.New("not supported") }

func (f *listFSM) applied() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.logs)
}

// TestRaftClusterOverTLS runs a real three-node raft cluster over the TLS
// transport, with an Authorize hook that admits the three members only.
func TestRaftClusterOverTLS(t *testing.T) {
	p := newPKI(t, "Test CA")
	ids := []string{"n1", "n2", "n3"}
	members := func(id string) error {
		if slices.Contains(ids, id) {
			return nil
		}
		return fmt.Errorf("%q is not a member", id)
	}

	var (
		servers []raft.Server
		trans   []*raft.NetworkTransport
	)
	for _, id := range ids {
		tr := newTestTransport(t, p.bundle(t, id), WithAuthorize(members))
		trans = append(trans, tr)
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: tr.LocalAddr()})
	}

	var (
		rafts []*raft.Raft
		fsms  []*listFSM
	)
	for i, id := range ids {
		conf := raft.DefaultConfig()
		conf.LocalID = raft.ServerID(id)
		conf.HeartbeatTimeout = 100 * time.Millisecond
		conf.ElectionTimeout = 100 * time.Millisecond
		conf.LeaderLeaseTimeout = 50 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
		conf.Logger = hclog.NewNullLogger()
		logs, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(conf, logs, logs, snaps, trans[i], raft.Configuration{Servers: servers}); err != nil {
			t.Fatal(err)
		}
		fsm := &listFSM{}
		r, err := raft.NewRaft(conf, fsm, logs, logs, snaps, trans[i])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Shutdown().Error() })
		rafts = append(rafts, r)
		fsms = append(fsms, fsm)
	}

	// Under load, leadership may move while we apply: retry with the
	// current leader until the deadline.
	deadline := time.Now().Add(15 * time.Second)
	for {
		var err error = errors.New("no leader")
		for _, r := range rafts {
			if r.State() == raft.Leader {
				err = r.Apply([]byte("hello"), 5*time.Second).Error()
				break
			}
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("apply: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, f := range fsms {
		for !slices.Contains(f.applied(), "hello") {
			if time.Now().After(deadline) {
				t.Fatalf("%s applied %q, want hello", ids[i], f.applied())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
