package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

func takeSnapshot(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

// populated returns a world with offerings, an audit head and a few
// refused commands (whose dedupe records are state too).
func populated(t testing.TB) *world {
	w := newWorld(t)
	w.addService(service(leikaHund, "Hund anmelden", []string{"Hundesteuer"}, []string{"Hund"}))
	w.addOffering(w.muni, leikaGewerbe, arsMuni)
	w.addOffering(w.ssc, leikaHund, arsMuni, arsMuni2)
	w.mustApply(w.signed(w.muni2, mPutAuditHead(&registryv1.AuditHead{OrganisationId: arsMuni2, Sequence: 3, Hash: "ab" + string(bytes.Repeat([]byte("0"), 62))})))
	w.apply(w.signed(w.muni, mPutService(service(leikaFuehrer, "Führerschein", nil, nil))))
	return w
}

func TestSnapshotRestore(t *testing.T) {
	tests := []struct {
		name string
		// target returns the FSM to restore into.
		target func(t *testing.T) *harness
	}{
		{name: "into an empty registry", target: func(t *testing.T) *harness { return newHarness(t) }},
		{name: "into a registry with other state", target: func(t *testing.T) *harness {
			h := newHarness(t)
			h.genesis()
			h.addService(service(leikaNachsende, "Nachsendeauftrag", nil, nil))
			return h
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := populated(t)
			snap := takeSnapshot(t, w.fsm)
			dst := tc.target(t)
			if err := dst.fsm.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if dst.fsm.AppliedIndex() != w.fsm.AppliedIndex() {
				t.Fatalf("applied %d, want %d", dst.fsm.AppliedIndex(), w.fsm.AppliedIndex())
			}
			requireSameState(t, dumpState(t, w.db), dumpState(t, dst.db))
			if _, _, err := dst.r.Service(leikaNachsende); err == nil {
				t.Fatal("state from before the restore survived")
			}
			// Both continue identically, and logs up to the snapshot are
			// skipped by the restored one.
			l := w.nextLog(w.signed(w.muni2, mPutOffering(offering(arsMuni2, leikaGewerbe, arsMuni2))))
			for _, old := range w.logs {
				if out := dst.fsm.Apply(old); out != nil {
					t.Fatalf("log %d replayed after restore: %v", old.Index, out)
				}
			}
			w.applyLog(l)
			dst.fsm.Apply(l)
			requireSameState(t, dumpState(t, w.db), dumpState(t, dst.db))
			// A snapshot of the restored state is byte for byte the same.
			if !bytes.Equal(takeSnapshot(t, w.fsm), takeSnapshot(t, dst.fsm)) {
				t.Fatal("snapshots of equal states differ")
			}
		})
	}
}

// TestSnapshotIsPointInTime: Raft persists a snapshot while the FSM keeps
// applying; the snapshot holds the state at Snapshot().
func TestSnapshotIsPointInTime(t *testing.T) {
	w := populated(t)
	want := dumpState(t, w.db)
	index := w.fsm.AppliedIndex()
	snap, err := w.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	w.addOffering(w.muni2, leikaGewerbe, arsMuni2)
	w.mustApply(w.signed(w.muni, mDeleteOffering(arsMuni+":"+leikaGewerbe)))
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	dst := newHarness(t)
	if err := dst.fsm.Restore(io.NopCloser(&sink.Buffer)); err != nil {
		t.Fatal(err)
	}
	if dst.fsm.AppliedIndex() != index {
		t.Fatalf("applied %d, want %d", dst.fsm.AppliedIndex(), index)
	}
	requireSameState(t, want, dumpState(t, dst.db))
}

func TestRestoreCorrupt(t *testing.T) {
	w := populated(t)
	good := takeSnapshot(t, w.fsm)
	empty := takeSnapshot(t, newHarness(t).fsm) // valid format, no applied index
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x01
		return b
	}
	tests := []struct {
		name string
		data []byte
	}{
		{name: "empty", data: nil},
		{name: "not a snapshot", data: []byte("hello world, this is not a registry snapshot at all")},
		{name: "only the magic", data: snapshotMagic},
		{name: "bad magic", data: flip(0)},
		{name: "flipped byte in the first record", data: flip(len(snapshotMagic) + 3)},
		{name: "flipped byte in the middle", data: flip(len(good) / 2)},
		{name: "flipped byte before the end marker", data: flip(len(good) - 6)},
		{name: "flipped checksum", data: flip(len(good) - 1)},
		{name: "truncated by one byte", data: good[:len(good)-1]},
		{name: "truncated checksum", data: good[:len(good)-4]},
		{name: "truncated in the middle", data: good[:len(good)/2]},
		{name: "truncated after the magic", data: good[:len(snapshotMagic)+1]},
		{name: "no applied index", data: empty},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := newHarness(t)
			dst.genesis()
			err := dst.fsm.Restore(io.NopCloser(bytes.NewReader(tc.data)))
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("Restore: %v, want ErrBadSnapshot", err)
			}
			// A failed restore leaves index 0, so the node restores again.
			if dst.fsm.AppliedIndex() != 0 {
				t.Fatalf("applied index %d after a failed restore", dst.fsm.AppliedIndex())
			}
			if _, ok := dumpState(t, dst.db)[keyApplied]; ok {
				t.Fatal("applied index stored after a failed restore")
			}
			// And the good snapshot still restores over the debris.
			if err := dst.fsm.Restore(io.NopCloser(bytes.NewReader(good))); err != nil {
				t.Fatal(err)
			}
			requireSameState(t, dumpState(t, w.db), dumpState(t, dst.db))
		})
	}
}

func TestRestart(t *testing.T) {
	tests := []struct {
		name   string
		replay func(t *testing.T, f *FSM, logs []*raft.Log) []interface{}
	}{
		{name: "replayed one at a time", replay: func(t *testing.T, f *FSM, logs []*raft.Log) []interface{} {
			var out []interface{}
			for _, l := range logs {
				out = append(out, f.Apply(l))
			}
			return out
		}},
		{name: "replayed as one batch", replay: func(t *testing.T, f *FSM, logs []*raft.Log) []interface{} {
			return f.ApplyBatch(logs)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := populated(t)
			want := dumpState(t, w.db)
			index := w.fsm.AppliedIndex()
			w.reopen()
			if w.fsm.AppliedIndex() != index {
				t.Fatalf("applied %d after restart, want %d", w.fsm.AppliedIndex(), index)
			}
			requireSameState(t, want, dumpState(t, w.db))
			for i, out := range tc.replay(t, w.fsm, w.logs) {
				if out != nil {
					t.Fatalf("replayed log %d returned %v, want nil", i+1, out)
				}
			}
			requireSameState(t, want, dumpState(t, w.db))
			if w.fsm.AppliedIndex() != index {
				t.Fatalf("applied %d after replay", w.fsm.AppliedIndex())
			}
			// A batch straddling the restart point applies only the new log.
			next := w.nextLog(w.signed(w.muni2, mPutOffering(offering(arsMuni2, leikaGewerbe, arsMuni2))))
			out := w.fsm.ApplyBatch([]*raft.Log{w.logs[len(w.logs)-1], next})
			if out[0] != nil {
				t.Fatalf("old log applied again: %v", out[0])
			}
			requireCode(t, out[1].(*LogResult).Results[0], "")
			if w.fsm.AppliedIndex() != next.Index {
				t.Fatalf("applied %d, want %d", w.fsm.AppliedIndex(), next.Index)
			}
			// The new state survives another restart.
			after := dumpState(t, w.db)
			w.reopen()
			requireSameState(t, after, dumpState(t, w.db))
		})
	}
}

// TestWaitApplied: WaitApplied waits until the index is applied (and no
// longer), and gives up with the context.
func TestWaitApplied(t *testing.T) {
	w := newWorld(t)
	target := w.index + 1
	short, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := w.fsm.WaitApplied(short, target); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitApplied before the index was applied: %v, want the context's deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- w.fsm.WaitApplied(t.Context(), target) }()
	w.addOffering(w.muni, leikaGewerbe, arsMuni)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
