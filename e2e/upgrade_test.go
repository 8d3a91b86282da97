package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/e2e/proc"
	"github.com/verbund/verbund/internal/storeformat"
	"github.com/verbund/verbund/keys"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// TestRollingUpgradeMixedVersions builds the previous release (the newest
// v* tag before HEAD, or HEAD~1) with `git worktree add` + `go build`,
// starts three voters of it, and replaces them one at a time (SIGTERM, then
// the other binary on the same data directory and command line) while
// clients keep writing through the running nodes: first n2 (a cluster of
// two old nodes and one new), then n1 and n0, then n1 back to the old
// version (a downgrade). Every acknowledged write must be present on every
// node afterwards, and all nodes must agree on the applied index.
func TestRollingUpgradeMixedVersions(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the previous release and runs a process cluster")
	}
	start := time.Now()
	old, ref, err := proc.BuildPrevious(t)
	if errors.Is(err, proc.ErrNoHistory) {
		t.Skipf("mixed-version test needs the git history (a full clone with tags): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built the previous version %s in %v", ref, time.Since(start).Round(time.Second))

	c := proc.StartCluster(t, old, 3)
	key, err := keys.Load(c.OperatorKey())
	if err != nil {
		t.Fatal(err)
	}
	r := &faultRun{t: t, c: c, key: key, hc: &http.Client{Timeout: 10 * time.Second},
		faulted: map[int]bool{}, stats: map[string]int{}}
	stop := r.writers(2, 11)

	swap := func(i int, bin, what string) {
		t.Helper()
		r.setFaulted(i, true)
		began := time.Now()
		if err := c.RestartWith(i, bin); err != nil {
			t.Fatalf("%s n%d: %v", what, i, err)
		}
		r.setFaulted(i, false)
		if err := c.WaitReady(60 * time.Second); err != nil {
			t.Fatalf("cluster not ready after %s of n%d: %v", what, i, err)
		}
		time.Sleep(time.Second) // writes through the swapped node too
		for k := range c.Len() {
			r.readLast(k, 5*time.Second)
		}
		r.mu.Lock()
		n := len(r.acked)
		r.mu.Unlock()
		t.Logf("%s n%d: ready again after %v; %d writes acknowledged so far", what, i, time.Since(began).Round(time.Millisecond), n)
	}
	time.Sleep(time.Second)
	swap(2, binary, "upgrade") // two old nodes, one new
	swap(1, binary, "upgrade")
	swap(0, binary, "upgrade")
	swap(1, old, "downgrade") // and back
	stop()
	// A restarted seed (n0 has no --join) learns the others' API addresses
	// only when their gossip rejoins it; linearizable reads there need the
	// leader's address (the restart issue's item; not a version question).
	gossipAt := time.Now()
	if err := proc.WaitUntil(120*time.Second, func() error {
		for i := range c.Len() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			ms, err := nodev1connect.NewClusterServiceClient(r.hc, c.API(i)).ListMembers(ctx, connect.NewRequest(&nodev1.ListMembersRequest{}))
			cancel()
			if err != nil {
				return err
			}
			alive := 0
			for _, m := range ms.Msg.GetMembers() {
				if m.GetState() == "alive" && m.GetApiAddress() != "" {
					alive++
				}
			}
			if alive != c.Len() {
				return fmt.Errorf("n%d sees %d of %d nodes alive in gossip", i, alive, c.Len())
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("gossip complete on every node %v after the last swap", time.Since(gossipAt).Round(time.Millisecond))
	r.check()

	// Every node holds every acknowledged write (local reads after all
	// reached the same applied index), and they agree on the index.
	if err := proc.WaitUntil(30*time.Second, func() error {
		var first uint64
		for i := range c.Len() {
			st, err := c.Status(i, 2*time.Second)
			if err != nil {
				return err
			}
			if i == 0 {
				first = st.GetAppliedIndex()
			} else if st.GetAppliedIndex() != first {
				return errors.New("applied indexes differ")
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	acked := append([]string(nil), r.acked...)
	r.mu.Unlock()
	for i := range c.Len() {
		q := registryv1connect.NewQueryServiceClient(r.hc, c.API(i))
		for _, id := range acked {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err := q.GetOrganisation(ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{Id: id}))
			cancel()
			if err != nil {
				t.Fatalf("n%d misses acknowledged write %s: %v", i, id, err)
			}
		}
	}
	// The stores v0.8.0 wrote had no format markers: the new binary
	// recorded format 1 in each; the downgraded n1 runs the old binary with
	// them in place.
	for _, i := range []int{0, 1} {
		for store, kind := range map[string]string{"state": "registry-state", "raft": "raft", "handover": "handover", "users": "users"} {
			if v, ok, err := storeformat.Read(filepath.Join(c.Dir(i), store), kind); err != nil || !ok || v != 1 {
				t.Errorf("n%d %s: format %d (marker %v, %v), want 1", i, store, v, ok, err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := nodev1connect.NewClusterServiceClient(r.hc, c.API(0)).ListMembers(ctx, connect.NewRequest(&nodev1.ListMembersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms.Msg.GetMembers() {
		t.Logf("member %s version %s suffrage %s", m.GetNodeId(), m.GetVersion(), m.GetRaftSuffrage())
	}
	st, _ := c.Status(0, 2*time.Second)
	t.Logf("%d acknowledged writes present on all %d nodes (applied index %d); nothing lost; whole run %v", len(acked), c.Len(), st.GetAppliedIndex(), time.Since(start).Round(time.Second))
}
