package registry

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

const (
	leikaWohnsitz = "99115005000000" // Wohnsitzanmeldung
	leikaHundSt   = "99102013104000" // Hundesteuer Anmeldung
	leikaParken   = "99108001000000" // Bewohnerparkausweis – Umschreibung
)

func mPutNext(n *registryv1.NextSteps, pre ...*registryv1.Precondition) *registryv1.Mutation {
	return withPre(&registryv1.Mutation{Op: &registryv1.Mutation_PutNextSteps{PutNextSteps: n}}, pre)
}

func mDeleteNext(id string, pre ...*registryv1.Precondition) *registryv1.Mutation {
	return withPre(&registryv1.Mutation{Op: &registryv1.Mutation_DeleteNextSteps{DeleteNextSteps: id}}, pre)
}

func nextSteps(id, life, state, trigger string, next ...string) *registryv1.NextSteps {
	return &registryv1.NextSteps{Id: id, LifeSituation: life, StateCode: state, TriggerLeikaKey: trigger, NextLeikaKeys: next, Note: "Nach dem Zuzug."}
}

func nextIDs(ns []*registryv1.NextSteps) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.GetId())
	}
	return out
}

// nextWorld is the fixture world with the next-steps services in the
// catalogue and the feature level raised to 2.
func nextWorld(t *testing.T) *world {
	t.Helper()
	w := newWorld(t)
	w.addService(service(leikaWohnsitz, "Wohnsitzanmeldung", []string{"Umzug"}, []string{"Umzug"}))
	w.addService(service(leikaHundSt, "Hundesteuer Anmeldung", []string{"Hund ummelden"}, []string{"Hund"}))
	w.addService(service(leikaParken, "Bewohnerparkausweis – Umschreibung", nil, []string{"Umzug"}))
	return w
}

func TestValidateNextSteps(t *testing.T) {
	many := make([]string, 21)
	for i := range many {
		many[i] = "9911500500" + strings.Repeat("0", 2) + string(rune('1'+i%9)) + string(rune('0'+i/9))
	}
	tests := []struct {
		name    string
		edit    func(n *registryv1.NextSteps)
		wantErr error
	}{
		{name: "valid", edit: func(*registryv1.NextSteps) {}},
		{name: "valid state relation", edit: func(n *registryv1.NextSteps) { n.StateCode = "09" }},
		{name: "bad id", edit: func(n *registryv1.NextSteps) { n.Id = "Umzug_1" }, wantErr: ErrInvalidArgument},
		{name: "id too long", edit: func(n *registryv1.NextSteps) { n.Id = strings.Repeat("a", 65) }, wantErr: ErrInvalidArgument},
		{name: "no life situation", edit: func(n *registryv1.NextSteps) { n.LifeSituation = "" }, wantErr: ErrInvalidArgument},
		{name: "bad trigger", edit: func(n *registryv1.NextSteps) { n.TriggerLeikaKey = "12345" }, wantErr: ErrInvalidArgument},
		{name: "no next key", edit: func(n *registryv1.NextSteps) { n.NextLeikaKeys = nil }, wantErr: ErrInvalidArgument},
		{name: "21 next keys", edit: func(n *registryv1.NextSteps) { n.NextLeikaKeys = many }, wantErr: ErrInvalidArgument},
		{name: "20 next keys", edit: func(n *registryv1.NextSteps) { n.NextLeikaKeys = many[:20] }},
		{name: "bad next key", edit: func(n *registryv1.NextSteps) { n.NextLeikaKeys = []string{"99x"} }, wantErr: ErrInvalidArgument},
		{name: "trigger is its own next step", edit: func(n *registryv1.NextSteps) { n.NextLeikaKeys = []string{leikaWohnsitz} }, wantErr: ErrInvalidArgument},
		{name: "next key twice", edit: func(n *registryv1.NextSteps) { n.NextLeikaKeys = []string{leikaHundSt, leikaHundSt} }, wantErr: ErrInvalidArgument},
		{name: "bad state", edit: func(n *registryv1.NextSteps) { n.StateCode = "9" }, wantErr: ErrInvalidArgument},
		{name: "note of 500 bytes", edit: func(n *registryv1.NextSteps) { n.Note = strings.Repeat("ü", 250) }},
		{name: "note of 501 bytes", edit: func(n *registryv1.NextSteps) { n.Note = strings.Repeat("a", 501) }, wantErr: ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := nextSteps("umzug-1", "Umzug", "", leikaWohnsitz, leikaHundSt)
			tc.edit(n)
			err := ValidateMutation(mPutNext(n))
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("ValidateMutation = %v, want %v", err, tc.wantErr)
			}
		})
	}
	if err := ValidateMutation(mDeleteNext("Bad Id")); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("delete with a bad id: %v", err)
	}
}

// TestNextStepsGovernance: the kinds need feature level 2; the operator
// publishes nationwide relations, the ACTIVE state agency of a state its
// state's; nobody else, and each refusal names rule next-steps-publisher.
// Keys must be in the catalogue; preconditions work like for the other
// records.
func TestNextStepsGovernance(t *testing.T) {
	w := nextWorld(t)
	nation := nextSteps("umzug-wohnsitz", "Umzug", "", leikaWohnsitz, leikaHundSt, leikaParken)
	requireCode(t, w.apply1(w.signed(w.op, mPutNext(nation))), CodeFeatureLevel)
	w.applyLog(raiseLog(t, w.harness, 2))

	denied := func(res *registryv1.CommandResult) {
		t.Helper()
		requireCode(t, res, CodePermissionDenied)
		if !strings.Contains(res.GetErrorMessage(), "rule "+ruleNextSteps) {
			t.Fatalf("refusal %q does not name rule %s", res.GetErrorMessage(), ruleNextSteps)
		}
	}
	// Nationwide: the operator only.
	denied(w.apply1(w.signed(w.state, mPutNext(nation))))
	denied(w.apply1(w.signed(w.muni, mPutNext(nation))))
	requireCode(t, w.apply1(w.signed(w.op, mPutNext(nation, preAbsent()))), "")
	// A state's: its ACTIVE state agency only.
	bavarian := nextSteps("umzug-by", "Umzug", "09", leikaWohnsitz, leikaParken)
	denied(w.apply1(w.signed(w.op, mPutNext(bavarian))))
	denied(w.apply1(w.signed(w.muni, mPutNext(bavarian))))
	other := w.stateAgency("08")
	denied(w.apply1(w.signed(other, mPutNext(bavarian))))
	requireCode(t, w.apply1(w.signed(w.state, mPutNext(bavarian))), "")
	// Moving a record to another scope needs the right to both.
	moved := proto.Clone(bavarian).(*registryv1.NextSteps)
	moved.StateCode = "08"
	denied(w.apply1(w.signed(other, mPutNext(moved))))

	// The catalogue must hold every key.
	unknown := nextSteps("umzug-x", "Umzug", "", leikaWohnsitz, "99999999999999")
	requireCode(t, w.apply1(w.signed(w.op, mPutNext(unknown))), CodeNotFound)
	// Preconditions.
	requireCode(t, w.apply1(w.signed(w.op, mPutNext(nation, preAbsent()))), CodePreconditionFailed)
	rec, _, err := w.r.ListNextSteps(leikaWohnsitz, "", "")
	if err != nil || len(rec) != 1 || rec[0].GetUpdatedBy() != w.op.id() || rec[0].GetRevision() == 0 {
		t.Fatalf("ListNextSteps = %v, %v", rec, err)
	}
	changed := proto.Clone(nation).(*registryv1.NextSteps)
	changed.NextLeikaKeys = []string{leikaParken}
	requireCode(t, w.apply1(w.signed(w.op, mPutNext(changed, preRevision(rec[0].GetRevision()+1)))), CodePreconditionFailed)
	requireCode(t, w.apply1(w.signed(w.op, mPutNext(changed, preRevision(rec[0].GetRevision())))), "")

	// A suspended state agency may not publish (the general rule
	// "suspended" refuses it before ours).
	w.mustApply(w.signed(w.op, mChangeStatus(w.state.id(), registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED, "test", "")))
	requireCode(t, w.apply1(w.signed(w.state, mDeleteNext("umzug-by"))), CodePermissionDenied)
	w.mustApply(w.signed(w.op, mChangeStatus(w.state.id(), registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, "test", "")))

	// Withdrawal: by whoever may publish the record's scope.
	denied(w.apply1(w.signed(w.state, mDeleteNext("umzug-wohnsitz"))))
	requireCode(t, w.apply1(w.signed(w.state, mDeleteNext("umzug-by"))), "")
	requireCode(t, w.apply1(w.signed(w.state, mDeleteNext("umzug-by"))), CodeNotFound)
	if got, _, _ := w.r.ListNextSteps(leikaWohnsitz, "", arsMuni); !slices.Equal(nextIDs(got), []string{"umzug-wohnsitz"}) {
		t.Fatalf("after withdrawal: %v", nextIDs(got))
	}

	// History: the publishers' entries.
	h, _, _, err := w.r.History(w.state.id(), 100, "")
	if err != nil {
		t.Fatal(err)
	}
	var changes []string
	for _, e := range h {
		if strings.HasPrefix(e.GetChange(), "next_steps") {
			changes = append(changes, e.GetChange()+" "+e.GetSubject())
		}
	}
	if !slices.Equal(changes, []string{"next_steps umzug-by", "next_steps_withdrawn umzug-by"}) {
		t.Fatalf("state agency history: %v", changes)
	}
	// Replicas agree.
	w.fork()
}

// TestListNextSteps: a trigger's relations, the area's state's first, then
// the nationwide ones; other states' are left out; the life situation
// filter ignores case and umlaut spelling; snapshots carry the records.
func TestListNextSteps(t *testing.T) {
	w := nextWorld(t)
	w.applyLog(raiseLog(t, w.harness, 2))
	w.mustApply(w.signed(w.op,
		mPutNext(nextSteps("umzug-a", "Umzug", "", leikaWohnsitz, leikaHundSt)),
		mPutNext(nextSteps("hund-a", "Hund", "", leikaWohnsitz, leikaHundSt)),
	))
	w.mustApply(w.signed(w.state, mPutNext(nextSteps("umzug-by", "Umzug", "09", leikaWohnsitz, leikaParken))))
	w.mustApply(w.signed(w.stateAgency("08"), mPutNext(nextSteps("umzug-bw", "Umzug", "08", leikaWohnsitz, leikaParken))))
	tests := []struct {
		name, life, area string
		want             []string
	}{
		{name: "nationwide only", want: []string{"hund-a", "umzug-a"}},
		{name: "state first", area: arsMuni, want: []string{"umzug-by", "hund-a", "umzug-a"}},
		{name: "AGS area", area: "09187111", want: []string{"umzug-by", "hund-a", "umzug-a"}},
		{name: "other state", area: "081110000000", want: []string{"umzug-bw", "hund-a", "umzug-a"}},
		{name: "life situation, case folded", life: "UMZUG", area: arsMuni, want: []string{"umzug-by", "umzug-a"}},
		{name: "unknown life situation", life: "Geburt", area: arsMuni, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, idx, err := w.r.ListNextSteps(leikaWohnsitz, tc.life, tc.area)
			if err != nil || idx != w.fsm.AppliedIndex() {
				t.Fatalf("ListNextSteps: %v (index %d)", err, idx)
			}
			if !slices.Equal(nextIDs(got), tc.want) {
				t.Fatalf("got %v, want %v", nextIDs(got), tc.want)
			}
		})
	}
	if got, _, _ := w.r.ListNextSteps(leikaHundSt, "", ""); len(got) != 0 {
		t.Fatalf("relations of another trigger: %v", nextIDs(got))
	}
	for _, bad := range [][2]string{{"123", ""}, {leikaWohnsitz, "0918"}} {
		if _, _, err := w.r.ListNextSteps(bad[0], "", bad[1]); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ListNextSteps(%q, area %q) = %v, want ErrInvalidArgument", bad[0], bad[1], err)
		}
	}
	// A replica restored from a snapshot has them.
	dst := newHarness(t)
	if err := dst.fsm.Restore(io.NopCloser(bytes.NewReader(takeSnapshot(t, w.fsm)))); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := dst.r.ListNextSteps(leikaWohnsitz, "", arsMuni); !slices.Equal(nextIDs(got), []string{"umzug-by", "hund-a", "umzug-a"}) {
		t.Fatalf("after restore: %v", nextIDs(got))
	}
}
