package raftlog_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node/raftlog"
	"github.com/verbund/verbund/node/raftlog/faultfs"
)

type plStats struct {
	rounds, acked, crashedOps int
}

// powerLossRun drives a store on the fault FS through rounds of random
// operations (appends, gaps, head compactions, tail truncations, stable
// writes), cutting the power at a random mutating file call, restarting
// with tear, and checking after every restart that the store opens and
// serves exactly the acknowledged state, or that state plus the operation
// cut in flight. It returns the first violation.
func powerLossRun(seed uint64, noSync bool, tear faultfs.Tear, st *plStats) error {
	rng := rand.New(rand.NewPCG(seed, 77))
	fs := faultfs.New()
	opts := raftlog.Options{FS: fs, SegmentSize: 2048, NoSync: noSync, Logger: slog.New(slog.DiscardHandler)}
	const dir = "/node/raft"
	acked := newModel()
	var inflight *model
	term := uint64(1)
	for round := 0; round < 4; round++ {
		s, err := raftlog.Open(dir, opts)
		if err != nil {
			return fmt.Errorf("round %d: open after a power cut: %w", round, err)
		}
		if d := diff(s, acked); d != "" {
			if inflight == nil || diff(s, inflight) != "" {
				return fmt.Errorf("round %d: after a power cut: %s (acknowledged state lost or changed)", round, d)
			}
			acked = inflight
		}
		inflight = nil
		st.rounds++
		crashed := false
		for op := 0; op < 40 && !crashed; op++ {
			after := acked.clone()
			first, last := after.bounds()
			var err error
			switch k := rng.IntN(100); {
			case k < 10 && last > first+2 && op > 0:
				// Conflicting tail after an election.
				from := first + 1 + rng.Uint64N(last-first)
				err = s.DeleteRange(from, last)
				after.deleteRange(from, last)
				term++
			case k < 20 && last > first+2 && op > 0:
				// Compaction after a snapshot.
				to := first + rng.Uint64N(last-first)
				err = s.DeleteRange(first, to)
				after.deleteRange(first, to)
			case k < 30 && op > 0:
				key := []string{"CurrentTerm", "LastVoteTerm", "LastVoteCand"}[rng.IntN(3)]
				val := binary.BigEndian.AppendUint64(nil, rng.Uint64())
				err = s.Set([]byte(key), val)
				after.stable[key] = string(val)
			default:
				start := last + 1
				if k < 35 {
					start += 1 + rng.Uint64N(50) // a gap: snapshot installed
				}
				b := entries(start, start+rng.Uint64N(20), term, byte(rng.IntN(256)))
				err = s.StoreLogs(b)
				after.store(b)
			}
			if op == 0 {
				// One acknowledged append per round before the power may
				// go, so a store that syncs nothing is caught every run.
				fs.CrashAt(1 + rng.IntN(60))
			}
			switch {
			case err == nil:
				acked = after
				st.acked++
			case fs.Crashed():
				inflight = after
				crashed = true
				st.crashedOps++
			default:
				return fmt.Errorf("round %d op %d: %w", round, op, err)
			}
		}
		if !crashed {
			fs.Crash()
		}
		s.Close()
		fs.Restart(rng, tear)
	}
	s, err := raftlog.Open(dir, opts)
	if err != nil {
		return fmt.Errorf("final open after a power cut: %w", err)
	}
	defer s.Close()
	if d := diff(s, acked); d != "" && (inflight == nil || diff(s, inflight) != "") {
		return fmt.Errorf("final: %s (acknowledged state lost or changed)", d)
	}
	return nil
}

func plRuns(t *testing.T) int {
	if testing.Short() {
		return 60
	}
	return 300
}

// TestPowerLoss: every acknowledged write survives a power cut at any
// moment, whatever part of the unsynced writes reaches the disk, and the
// store always starts again (a torn tail is cut, never refused).
func TestPowerLoss(t *testing.T) {
	for _, tear := range []faultfs.Tear{faultfs.TearNone, faultfs.TearPrefix, faultfs.TearSectors} {
		t.Run(fmt.Sprint("tear=", tear), func(t *testing.T) {
			var st plStats
			for seed := range uint64(plRuns(t)) {
				if err := powerLossRun(seed, false, tear, &st); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
			}
			t.Logf("%d runs, %d restarts after a power cut, %d acknowledged operations, %d cut in flight, 0 lost",
				plRuns(t), st.rounds, st.acked, st.crashedOps)
		})
	}
}

// TestPowerLossControlNoSync is the control: with fsync switched off the
// same runs must lose acknowledged writes, on every run.
func TestPowerLossControlNoSync(t *testing.T) {
	var st plStats
	caught := 0
	for seed := range uint64(plRuns(t)) {
		err := powerLossRun(seed, true, faultfs.TearNone, &st)
		if err == nil {
			t.Errorf("seed %d: the power-loss check passed a store that never syncs", seed)
			continue
		}
		if errors.Is(err, raftlog.ErrCorrupt) {
			t.Errorf("seed %d: %v", seed, err)
		}
		caught++
		if seed == 0 {
			t.Logf("caught: %v", err)
		}
	}
	t.Logf("NoSync control: caught on %d of %d runs", caught, plRuns(t))
}

// TestWriteErrorKeepsStoreUsable: a failed write (a full disk) is refused,
// leaves nothing behind, and the store goes on when space returns; a failed
// sync makes the store refuse writes until it is reopened.
func TestWriteErrorKeepsStoreUsable(t *testing.T) {
	fs := faultfs.New()
	opts := raftlog.Options{FS: fs, SegmentSize: 4096}
	s := mustOpen(t, "/d", opts)
	m := newModel()
	b := entries(1, 10, 1, 0)
	if err := s.StoreLogs(b); err != nil {
		t.Fatal(err)
	}
	m.store(b)
	enospc := errors.New("no space left on device")
	fs.Inject(func(op faultfs.Op, _ string) error {
		if op == faultfs.OpWrite {
			return enospc
		}
		return nil
	})
	if err := s.StoreLogs(entries(11, 20, 1, 0)); !errors.Is(err, enospc) {
		t.Fatalf("write on a full disk: %v", err)
	}
	fs.Inject(nil)
	check(t, s, m)
	b = entries(11, 20, 1, 1)
	if err := s.StoreLogs(b); err != nil {
		t.Fatalf("after space returned: %v", err)
	}
	m.store(b)
	check(t, s, m)
	fs.Inject(func(op faultfs.Op, _ string) error {
		if op == faultfs.OpSync {
			return errors.New("input/output error")
		}
		return nil
	})
	if err := s.StoreLogs(entries(21, 22, 1, 0)); !errors.Is(err, raftlog.ErrFailed) {
		t.Fatalf("failed sync: %v", err)
	}
	fs.Inject(nil)
	if err := s.StoreLogs(entries(21, 22, 1, 0)); !errors.Is(err, raftlog.ErrFailed) {
		t.Fatalf("write after a failed sync: %v", err)
	}
	s.Close()
	s = mustOpen(t, "/d", opts)
	defer s.Close()
	var l raft.Log
	if err := s.GetLog(20, &l); err != nil {
		t.Fatal(err)
	}
}
