package registry

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// TestAdmissionGovernancePaths: admission verifies a join request against
// the key it carries and the operator's recovery by its recovery key (it
// does not refuse them as unknown_key), refuses a recovery key signing
// anything else, and answers a reuse of a command id for other content
// with already_exists without proposing it.
func TestAdmissionGovernancePaths(t *testing.T) {
	h := newHarness(t)
	r := newRaftNode(t, h.fsm)
	app := &countingApplier{next: r}
	w := NewWriter(app, WriterConfig{Logger: discardLogger()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	adm := NewAdmission(h.fsm, w)
	publish := func(raws ...string) []*registryv1.CommandResult {
		t.Helper()
		res, _, err := adm.Publish(ctx, raws)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	sign := func(o *testOrg, muts ...*registryv1.Mutation) string {
		return signCmd(t, NewCommand(o.id(), muts...), o.key)
	}

	op := newTestOrg(t, operatorRecord())
	recKey, err := keys.GenerateRecovery(keys.NewKID("op-rec"))
	if err != nil {
		t.Fatal(err)
	}
	recPub, err := keys.Published(recKey)
	if err != nil {
		t.Fatal(err)
	}
	op.rec.Keys = append(op.rec.Keys, recPub)
	state := newTestOrg(t, &registryv1.Organisation{Id: "by-lfst", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY, Name: "Landesamt", StateCode: "09"})
	for _, res := range publish(sign(op, mPutOrg(op.rec)), sign(op, mPutOrg(state.rec))) {
		requireCode(t, res, "")
	}

	// A join request of an organisation the registry does not know.
	joiner := newTestOrg(t, municipalityRecord(arsJoiner, "Neudorf"))
	requireCode(t, publish(sign(joiner, mRequestJoin(joiner.clone())))[0], "")
	if o := getOrg(t, h.r, arsJoiner); o.GetStatus() != stPending {
		t.Fatalf("joiner %v", o.GetStatus())
	}
	// Pending: it signs nothing else.
	requireCode(t, publish(sign(joiner, mPutOffering(offering(arsJoiner, leikaGewerbe, arsJoiner))))[0], CodePermissionDenied)

	// The recovery key: nothing but the operator's own recovery.
	before := app.commands.Load()
	res := publish(signCmd(t, NewCommand(operatorID, mPutService(service(leikaHund, "Hund", nil, nil))), recKey))[0]
	requireCode(t, res, CodePermissionDenied)
	if app.commands.Load() != before {
		t.Fatal("a command signed with the recovery key was proposed")
	}
	next, nextPub := newSigningKey(t, "op-neu")
	requireCode(t, publish(signCmd(t, NewCommand(operatorID, mRecoverKeys(operatorID, "verloren", nextPub)), recKey))[0], "")
	op.key = next
	requireCode(t, publish(sign(op, mPutService(service(leikaHund, "Hund", nil, nil))))[0], "")

	// Same id, other content: refused before the log; a retry is a duplicate.
	cmd := NewCommand(operatorID, mPutService(service(leikaGewerbe, "Gewerbe", nil, nil)))
	first := publish(signCmd(t, cmd, op.key))[0]
	requireCode(t, first, "")
	other := proto.Clone(cmd).(*registryv1.Command)
	other.Mutations = []*registryv1.Mutation{mPutService(service(leikaGewerbe, "Gewerbe, anders", nil, nil))}
	before = app.commands.Load()
	reuse := publish(signCmd(t, other, op.key))[0]
	requireCode(t, reuse, CodeAlreadyExists)
	if app.commands.Load() != before {
		t.Fatal("the reused id was proposed")
	}
	if !errors.Is(ErrorFromCode(reuse.GetErrorCode(), reuse.GetErrorMessage()), ErrAlreadyExists) {
		t.Fatal("code does not map back to ErrAlreadyExists")
	}
	again := publish(signCmd(t, cmd, op.key))[0]
	if !again.GetDuplicate() || again.GetIndex() != first.GetIndex() {
		t.Fatalf("retry %v", again)
	}
	if s := getService(t, h.r, leikaGewerbe); s.GetName() != "Gewerbe" {
		t.Fatalf("service %q", s.GetName())
	}
}
