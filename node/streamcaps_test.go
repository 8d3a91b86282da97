package node

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestStreamSlots: the slot table refuses a caller over its cap and the
// node over its total, names which, and a release frees the slot (once).
func TestStreamSlots(t *testing.T) {
	st := newSlotTable(2, 3)
	a1, err := st.acquire("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.acquire("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.acquire("a"); !errors.Is(err, errCapPerCaller) {
		t.Fatalf("third stream of a: %v; want the per-caller cap", err)
	}
	if _, err := st.acquire("b"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.acquire("c"); !errors.Is(err, errCapPerNode) {
		t.Fatalf("fourth stream on the node: %v; want the node cap", err)
	}
	a1()
	a1() // twice: freed once
	if st.open() != 2 {
		t.Fatalf("%d open after a release; want 2", st.open())
	}
	if _, err := st.acquire("c"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if _, err := st.acquire("d"); !errors.Is(err, errCapPerNode) {
		t.Fatalf("double release freed two slots: %v", err)
	}
}

// TestSnapshotSlotWait: a snapshot transfer waits for the node's slot and
// gets it when one is released; it is refused at once over the caller's
// cap and after SnapshotWait otherwise.
func TestSnapshotSlotWait(t *testing.T) {
	cfg := DefaultRateLimits()
	cfg.MaxSnapshotTransfers, cfg.MaxSnapshotTransfersPerCaller, cfg.SnapshotWait = 1, 1, 300*time.Millisecond
	rl := newRateLimiter(cfg, nil)
	ctx := context.Background()
	rel, err := rl.acquireSnapshot(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := rl.acquireSnapshot(ctx, "a"); !errors.Is(err, errCapPerCaller) || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("same caller: %v after %v; want refused at once", err, time.Since(start))
	}
	if _, err := rl.acquireSnapshot(ctx, "b"); !errors.Is(err, errCapPerNode) || time.Since(start) < cfg.SnapshotWait {
		t.Fatalf("other caller, slot busy: %v after %v; want refused after %v", err, time.Since(start), cfg.SnapshotWait)
	}
	go func() { time.Sleep(50 * time.Millisecond); rel() }()
	if rel2, err := rl.acquireSnapshot(ctx, "b"); err != nil {
		t.Fatalf("after the release: %v", err)
	} else {
		rel2()
	}
}
