package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/e2e/proc"
	"github.com/verbund/verbund/keys"
	"github.com/verbund/verbund/node"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

// publishOrgs publishes one PutOrganisation per id in one request, signed
// by the operator, and returns the index the node acknowledged.
func publishOrgs(ctx context.Context, api string, key jose.JSONWebKey, ids ...string) (uint64, error) {
	var jws []string
	for _, id := range ids {
		s, err := registry.SignCommand(registry.NewCommand(proc.Operator, &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
			Id: id, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: "backup test " + id,
		}}}), key)
		if err != nil {
			return 0, err
		}
		jws = append(jws, s)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := registryv1connect.NewPublishServiceClient(http.DefaultClient, api).Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: jws}))
	if err != nil {
		return 0, err
	}
	for _, r := range res.Msg.GetResults() {
		if r.GetErrorCode() != "" {
			return 0, fmt.Errorf("%s: %s", r.GetErrorCode(), r.GetErrorMessage())
		}
	}
	return res.Msg.GetIndex(), nil
}

// missingOrgs returns the ids node api does not have (a linearizable read
// would need a leader; the caller waits for the node to catch up first).
func missingOrgs(api string, ids []string) ([]string, error) {
	q := registryv1connect.NewQueryServiceClient(http.DefaultClient, api)
	var missing []string
	for _, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := q.GetOrganisation(ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{Id: id}))
		cancel()
		if connect.CodeOf(err) == connect.CodeNotFound {
			missing = append(missing, id)
			continue
		}
		if err != nil {
			return nil, err
		}
	}
	return missing, nil
}

func statusOf(api string) (*nodev1.GetStatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := nodev1connect.NewNodeServiceClient(http.DefaultClient, api).GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// flagValue returns the value of --name in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// TestSnapshotSaveInspectRestore: a 3-voter cluster of processes serves
// writes while `verbund snapshot save` streams a backup from its leader;
// `snapshot inspect` verifies it (and refuses a flipped byte and a
// truncated copy); `snapshot restore` seeds a fresh data dir, a node
// started on it leads a new one-voter cluster holding every write
// acknowledged before save started and every concurrent write at or below
// the snapshot's index, accepts new writes, and a second node joins it.
func TestSnapshotSaveInspectRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster of processes")
	}
	t.Setenv("VERBUND_CONFIG_DIR", t.TempDir())
	c := proc.StartCluster(t, binary, 3)
	li, err := c.Leader()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proc.Authorize(binary, c.Dir(li), c.API(li)); err != nil {
		t.Fatal(err)
	}
	opKey, err := keys.Load(c.OperatorKey())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Acknowledged before save starts.
	var before []string
	for b := range 10 {
		var ids []string
		for k := range 20 {
			ids = append(ids, fmt.Sprintf("pre-%d-%d", b, k))
		}
		if _, err := publishOrgs(ctx, c.API(li), opKey, ids...); err != nil {
			t.Fatal(err)
		}
		before = append(before, ids...)
	}
	// Writes while save runs: each acknowledged id with its index.
	type ack struct {
		id  string
		idx uint64
	}
	var (
		mu     sync.Mutex
		during []ack
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			id := fmt.Sprintf("during-%d", i)
			idx, err := publishOrgs(ctx, c.API(li), opKey, id)
			if err == nil {
				mu.Lock()
				during = append(during, ack{id, idx})
				mu.Unlock()
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	file := filepath.Join(t.TempDir(), "registry.snap")
	start := time.Now()
	out, err := run(t, "snapshot", "save", file, "--addr", c.API(li))
	took := time.Since(start)
	time.Sleep(300 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatalf("snapshot save: %v\n%s", err, out)
	}
	t.Logf("snapshot save took %v: %s", took, strings.TrimSpace(out))

	out, err = run(t, "snapshot", "inspect", file)
	if err != nil {
		t.Fatalf("snapshot inspect: %v\n%s", err, out)
	}
	t.Logf("inspect:\n%s", out)
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	info, err := node.InspectBackup(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The Raft index counts the barrier entry too, which the registry
	// does not record as applied.
	if info.Applied > info.Header.Index || info.Applied+2 < info.Header.Index || info.Counts["organisations"] < len(before) {
		t.Fatalf("backup at index %d holds applied %d and %d organisations, want >= %d", info.Header.Index, info.Applied, info.Counts["organisations"], len(before))
	}
	var inSnap, afterSnap []string
	mu.Lock()
	for _, a := range during {
		if a.idx <= info.Header.Index {
			inSnap = append(inSnap, a.id)
		} else {
			afterSnap = append(afterSnap, a.id)
		}
	}
	mu.Unlock()
	t.Logf("writes acknowledged: %d before save, %d during (%d at or below the snapshot index %d, %d after)", len(before), len(inSnap)+len(afterSnap), len(inSnap), info.Header.Index, len(afterSnap))
	if len(inSnap)+len(afterSnap) == 0 {
		t.Fatal("no write was acknowledged while save ran: the cluster did not serve writes")
	}

	// A flipped byte and a truncated copy are refused.
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), raw...)
	bad[len(bad)/2] ^= 0x01
	badFile := filepath.Join(t.TempDir(), "flipped.snap")
	os.WriteFile(badFile, bad, 0o600)
	if out, err := run(t, "snapshot", "inspect", badFile); err == nil || !strings.Contains(out, "corrupt") {
		t.Fatalf("inspect of a file with a flipped byte: err %v\n%s", err, out)
	}
	truncFile := filepath.Join(t.TempDir(), "truncated.snap")
	os.WriteFile(truncFile, raw[:len(raw)-100], 0o600)
	if out, err := run(t, "snapshot", "inspect", truncFile); err == nil || !strings.Contains(out, "corrupt") {
		t.Fatalf("inspect of a truncated file: err %v\n%s", err, out)
	}
	if out, err := run(t, "snapshot", "restore", badFile, "--data", filepath.Join(t.TempDir(), "x"), "--node-id", "r0", "--raft-addr", freeAddr(t)); err == nil {
		t.Fatalf("restore of a damaged file succeeded:\n%s", out)
	}

	// Restore into a fresh cluster.
	dir := filepath.Join(t.TempDir(), "r0")
	raftAddr, gossip := freeAddr(t), freeAddr(t)
	if out, err := run(t, "snapshot", "restore", file, "--data", dir, "--node-id", "r0", "--raft-addr", raftAddr); err != nil {
		t.Fatalf("snapshot restore: %v\n%s", err, out)
	}
	start = time.Now()
	r0 := start0(t, "node", "--node-id", "r0", "--data-dir", dir, "--role", "voter", "--org", proc.Operator,
		"--http-addr", freeAddr(t), "--raft-addr", raftAddr, "--gossip-addr", gossip, "--log-level", "warn", "--rate-limits", "off")
	if err := waitUntil(30*time.Second, func() error {
		st, err := statusOf(r0.API)
		if err != nil {
			return err
		}
		if st.GetRaftState() != "Leader" || st.GetAppliedIndex() < info.Applied {
			return fmt.Errorf("r0 %s at %d", st.GetRaftState(), st.GetAppliedIndex())
		}
		return nil
	}); err != nil {
		t.Fatalf("restored node: %v\n%s", err, r0.Logs())
	}
	t.Logf("restored node leads at applied index >= %d after %v", info.Applied, time.Since(start))
	missing, err := missingOrgs(r0.API, append(append([]string(nil), before...), inSnap...))
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("lost in the restored cluster: %d of %d acknowledged writes: %v", len(missing), len(before)+len(inSnap), missing)
	}
	if _, err := publishOrgs(ctx, r0.API, opKey, "after-restore"); err != nil {
		t.Fatalf("write to the restored cluster: %v", err)
	}
	// Another node joins the restored cluster and gets everything.
	j := start0(t, "node", "--node-id", "r1", "--data-dir", filepath.Join(t.TempDir(), "r1"), "--role", "voter", "--org", "091620000000",
		"--http-addr", freeAddr(t), "--raft-addr", freeAddr(t), "--gossip-addr", freeAddr(t), "--join", gossip, "--log-level", "warn", "--rate-limits", "off")
	if err := waitUntil(60*time.Second, func() error {
		m, err := missingOrgs(j.API, []string{before[0], before[len(before)-1], "after-restore"})
		if err != nil {
			return err
		}
		if len(m) > 0 {
			return fmt.Errorf("r1 misses %v", m)
		}
		return nil
	}); err != nil {
		t.Fatalf("joining the restored cluster: %v\n%s", err, j.Logs())
	}
	t.Logf("nothing lost: %d writes acknowledged before save and %d concurrent ones within the snapshot are all in the restored cluster; r1 joined it", len(before), len(inSnap))
}

// start0 is start without waiting for anything but the API address.
func start0(t *testing.T, args ...string) *proc.Process { return start(t, args...) }

// TestQuorumLossRecovery: 3 voters as processes, writes acknowledged, the
// two followers killed for good (SIGKILL, data dirs gone), the survivor
// killed too; `verbund recover quorum` rewrites its Raft configuration;
// restarted with its own command line it elects itself, every
// acknowledged write is there, it accepts writes, and a new node joins it.
func TestQuorumLossRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster of processes")
	}
	c := proc.StartCluster(t, binary, 3)
	li, err := c.Leader()
	if err != nil {
		t.Fatal(err)
	}
	opKey, err := keys.Load(c.OperatorKey())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var acked []string
	for b := range 10 {
		var ids []string
		for k := range 20 {
			ids = append(ids, fmt.Sprintf("q-%d-%d", b, k))
		}
		if _, err := publishOrgs(ctx, c.API(li), opKey, ids...); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, ids...)
	}
	st, err := c.Status(li, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	id, raftAddr := st.GetNodeId(), st.GetLeaderAddress()
	for i := range c.Len() {
		if i != li {
			c.Kill(i)
			os.RemoveAll(c.Dir(i)) // for good
		}
	}
	// Without a quorum the survivor cannot commit.
	if _, err := publishOrgs(ctx, c.API(li), opKey, "no-quorum"); err == nil {
		t.Fatal("a write was acknowledged without a quorum")
	}
	c.Kill(li)
	out, err := run(t, "recover", "quorum", "--data", c.Dir(li), "--voters", id+"="+raftAddr)
	if err != nil {
		t.Fatalf("recover quorum: %v\n%s", err, out)
	}
	t.Logf("recover quorum: %s", strings.TrimSpace(out))
	start := time.Now()
	if err := c.Restart(li); err != nil {
		t.Fatal(err)
	}
	if err := waitUntil(30*time.Second, func() error {
		st, err := c.Status(li, time.Second)
		if err != nil {
			return err
		}
		if st.GetRaftState() != "Leader" {
			return fmt.Errorf("%s is %s", id, st.GetRaftState())
		}
		return nil
	}); err != nil {
		t.Fatalf("survivor did not lead after recovery: %v\n%s", err, c.Node(li).Logs())
	}
	t.Logf("survivor %s leads %v after its restart", id, time.Since(start))
	missing, err := missingOrgs(c.API(li), acked)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("lost %d of %d acknowledged writes: %v", len(missing), len(acked), missing)
	}
	// The write refused for want of a quorum was in the survivor's log:
	// recovery commits what the survivor holds (as with peers.json).
	if m, err := missingOrgs(c.API(li), []string{"no-quorum"}); err == nil {
		t.Logf("the write that timed out without a quorum is present after the recovery: %v", len(m) == 0)
	}
	if _, err := publishOrgs(ctx, c.API(li), opKey, "after-recovery"); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
	// New nodes join the recovered cluster.
	args := c.Args(li)
	gossip := flagValue(args, "gossip-addr")
	var joined []*proc.Process
	for k, org := range []string{"097610000000", "095640000000"} {
		p := start0(t, "node", "--node-id", fmt.Sprintf("new%d", k), "--data-dir", filepath.Join(t.TempDir(), "new"), "--role", "voter", "--org", org,
			"--http-addr", freeAddr(t), "--raft-addr", freeAddr(t), "--gossip-addr", freeAddr(t), "--join", gossip,
			"--dead-server-grace", "1h", "--log-level", "warn", "--rate-limits", "off")
		joined = append(joined, p)
	}
	if err := waitUntil(90*time.Second, func() error {
		for _, p := range joined {
			m, err := missingOrgs(p.API, []string{acked[0], acked[len(acked)-1], "after-recovery"})
			if err != nil {
				return err
			}
			if len(m) > 0 {
				return fmt.Errorf("%s misses %v", p.API, m)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("new nodes joining the recovered cluster: %v", err)
	}
	// With the new voters the cluster has a quorum of three again: a write
	// survives the loss of the recovered node.
	if err := waitUntil(60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		ms, err := nodev1connect.NewClusterServiceClient(http.DefaultClient, c.API(li)).ListMembers(ctx, connect.NewRequest(&nodev1.ListMembersRequest{}))
		if err != nil {
			return err
		}
		voters := 0
		for _, m := range ms.Msg.GetMembers() {
			if m.GetRaftSuffrage() == "Voter" {
				voters++
			}
		}
		if voters < 3 {
			return fmt.Errorf("%d voters", voters)
		}
		return nil
	}); err != nil {
		t.Fatalf("new nodes did not become voters: %v", err)
	}
	t.Logf("nothing lost: all %d acknowledged writes on the recovered node; 2 new nodes joined as voters", len(acked))
}
