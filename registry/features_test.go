package registry

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"strings"

	"github.com/hashicorp/raft"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

func raiseLog(t testing.TB, h *harness, level uint32) *raft.Log {
	t.Helper()
	h.index++
	data, err := RaiseFeatureLevelEntry(level, h.now)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: data}
}

func TestKindTableCoversEveryMutation(t *testing.T) {
	od := (&registryv1.Mutation{}).ProtoReflect().Descriptor().Oneofs().ByName("op")
	for i := 0; i < od.Fields().Len(); i++ {
		name := string(od.Fields().Get(i).Name())
		if l, ok := KindLevels()[name]; !ok || l < BaseFeatureLevel {
			t.Errorf("mutation kind %q has no feature level in kindLevels (every kind must name the level it needs)", name)
		}
	}
	// Level 2 brought put_next_steps and delete_next_steps (issue 10).
	if got := SupportedFeatureLevel(); got != 2 {
		t.Fatalf("SupportedFeatureLevel = %d, want 2 (the next-steps kinds are the highest released)", got)
	}
}

// TestFeatureLevelGate: a kind of level 2 is refused by the FSM (and by
// admission) while the recorded level is 1, on every replica alike; after a
// raise entry it is applied; a lower raise changes nothing.
func TestFeatureLevelGate(t *testing.T) {
	defer SetKindLevelForTest("put_audit_head", 2)()
	if SupportedFeatureLevel() != 2 {
		t.Fatalf("SupportedFeatureLevel = %d, want 2", SupportedFeatureLevel())
	}
	w := newWorld(t)
	if l, _ := w.fsm.FeatureLevel(); l != BaseFeatureLevel {
		t.Fatalf("fresh registry at level %d, want %d", l, BaseFeatureLevel)
	}
	head := mPutAuditHead(&registryv1.AuditHead{OrganisationId: w.muni.id(), Sequence: 1, Hash: strings.Repeat("ab", 32), AtUnixMs: w.now})
	raw := w.signed(w.muni, head)
	res := w.apply1(raw)
	requireCode(t, res, CodeFeatureLevel)
	if _, _, err := w.r.AuditHead(w.muni.id()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("audit head after refusal: %v", err)
	}
	// Admission keeps it out of the log with the same code.
	adm := NewAdmission(w.fsm, nil)
	rs, _, err := adm.Publish(t.Context(), []string{raw})
	if err != nil {
		t.Fatal(err)
	}
	requireCode(t, rs[0], CodeFeatureLevel)

	w.applyLog(raiseLog(t, w.harness, 2))
	if l, _ := w.fsm.FeatureLevel(); l != 2 {
		t.Fatalf("level after raise = %d, want 2", l)
	}
	// Lowering is impossible.
	w.applyLog(raiseLog(t, w.harness, 1))
	if l, _ := w.fsm.FeatureLevel(); l != 2 {
		t.Fatalf("level after a lower raise = %d, want 2", l)
	}
	// The same command (not recorded as applied) now succeeds.
	requireCode(t, w.apply1(raw), "")
	if _, _, err := w.r.AuditHead(w.muni.id()); err != nil {
		t.Fatalf("audit head after raise: %v", err)
	}
	// Replicas that apply the same log agree, and so does a restart.
	f := w.fork()
	if l, _ := f.fsm.FeatureLevel(); l != 2 {
		t.Fatalf("replica level = %d", l)
	}
	w.reopen()
	if l, _ := w.fsm.FeatureLevel(); l != 2 {
		t.Fatalf("level after restart = %d", l)
	}
	// A replica restored from a snapshot (Raft InstallSnapshot) has it too.
	dst := newHarness(t)
	if err := dst.fsm.Restore(io.NopCloser(bytes.NewReader(takeSnapshot(t, w.fsm)))); err != nil {
		t.Fatal(err)
	}
	if l, _ := dst.fsm.FeatureLevel(); l != 2 {
		t.Fatalf("level after snapshot restore = %d", l)
	}
}
