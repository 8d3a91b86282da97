package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// TestSnapshotByLogBytes: with Raft's entry threshold out of reach, the
// node snapshots once SnapshotThresholdBytes of log were appended, and the
// log keeps about TrailingLogBytes (at least minTrailingLogs entries)
// behind: the log stays bounded in bytes.
func TestSnapshotByLogBytes(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.SnapshotThreshold = 1 << 30 // never by entries
	cfg.SnapshotThresholdBytes = 64 << 10
	cfg.TrailingLogBytes = 16 << 10
	cfg.SnapshotLogRatio = -1 // the fixed threshold (TestSnapshotThresholdGrowsWithState)
	n := startNode(t, cfg)
	key := n.SigningKey()
	name := strings.Repeat("n", 200)
	const commands = 80
	var entryBytes int
	for i := 0; i < commands; i++ {
		var muts []*registryv1.Mutation
		for j := 0; j < 20; j++ {
			muts = append(muts, &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
				Id: fmt.Sprintf("ssc-%d-%d", i, j), Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: name,
			}}})
		}
		jws := sign(t, key, "test-operator", muts...)
		entryBytes = len(jws)
		res, _, err := n.Publish(t.Context(), []string{jws})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].GetErrorCode() != "" {
			t.Fatal(res[0].GetErrorMessage())
		}
	}
	// One entry per command (sequential): commands entries of entryBytes.
	maxKept := uint64(cfg.SnapshotThresholdBytes)/uint64(entryBytes) + minTrailingLogs + 16 // slack: appends during a snapshot
	deadline := time.Now().Add(10 * time.Second)
	for {
		first, _ := n.logStore.FirstIndex()
		last, _ := n.logStore.LastIndex()
		snap, _ := n.latestSnapshot()
		// Once the last snapshot is done, the configured TrailingLogs is back.
		trailing := n.raft.ReloadableConfig().TrailingLogs
		if snap > 0 && last-first+1 <= maxKept && trailing == cfg.TrailingLogs {
			t.Logf("log %d..%d (%d entries of about %d bytes kept, at most %d), snapshot at %d", first, last, last-first+1, entryBytes, maxKept, snap)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %d..%d: %d entries of about %d bytes kept (want at most %d), latest snapshot at %d, TrailingLogs %d", first, last, last-first+1, entryBytes, maxKept, snap, trailing)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSnapshotThresholdGrowsWithState: with SnapshotLogRatio, the next
// snapshot by log bytes waits for that share of the last snapshot's size,
// so a growing state is not copied whole every SnapshotThresholdBytes
// (with the fixed 64 KiB threshold below, the same load takes a snapshot
// for every 64 KiB appended, more than twice as many); the log still stays
// bounded, by about the ratio times the state.
func TestSnapshotThresholdGrowsWithState(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.SnapshotThreshold = 1 << 30 // never by entries
	cfg.SnapshotThresholdBytes = 64 << 10
	cfg.TrailingLogBytes = 16 << 10
	cfg.SnapshotLogRatio = 1
	n := startNode(t, cfg)
	key := n.SigningKey()
	name := strings.Repeat("n", 200)
	var appended int
	for i := 0; appended < 2<<20; i++ {
		var muts []*registryv1.Mutation
		for j := 0; j < 20; j++ {
			muts = append(muts, &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
				Id: fmt.Sprintf("ssc-%d-%d", i, j), Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: name,
			}}})
		}
		jws := sign(t, key, "test-operator", muts...)
		appended += len(jws)
		res, _, err := n.Publish(t.Context(), []string{jws})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].GetErrorCode() != "" {
			t.Fatal(res[0].GetErrorMessage())
		}
	}
	fixed := appended / int(cfg.SnapshotThresholdBytes)
	var w snapshotWritten
	deadline := time.Now().Add(10 * time.Second)
	for {
		w = n.snaps.written()
		first, _ := n.logStore.FirstIndex()
		last, _ := n.logStore.LastIndex()
		if w.count > 0 && n.raft.ReloadableConfig().TrailingLogs == cfg.TrailingLogs {
			t.Logf("%d bytes appended: %d snapshots (the fixed threshold: about %d), the last %d bytes at index %d; log %d..%d",
				appended, w.count, fixed, w.bytes, w.index, first, last)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot after %d bytes appended", appended)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if int(w.count) > fixed/2 {
		t.Fatalf("%d snapshots for %d bytes appended: the threshold did not grow with the state (fixed threshold: about %d)", w.count, appended, fixed)
	}
	// The log is bounded by about the last snapshot's size (ratio 1) plus
	// the trailing bytes and the entries appended while it was written.
	first, _ := n.logStore.FirstIndex()
	last, _ := n.logStore.LastIndex()
	perEntry := appended / int(last) // roughly: one entry per command
	if kept := int(last-first+1) * perEntry; kept > int(w.bytes)+int(cfg.TrailingLogBytes)+int(cfg.SnapshotThresholdBytes)+64<<10 {
		t.Fatalf("log %d..%d keeps about %d bytes; last snapshot %d bytes", first, last, kept, w.bytes)
	}
}
