package registry

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// scenario builds a sequence of logs exercising most of the FSM: genesis,
// onboarding, catalogue, offerings, refused commands of every kind, key
// rotation across entries, suspension, duplicates, a non-command entry, the
// governance commands (join, approval, authorisations and their withdrawal,
// key recovery, also by the operator's recovery key) with refusals of each
// rule, and a jump of the leader clock that prunes dedupe records.
func scenario(t testing.TB) []*raft.Log {
	g := &harness{t: t, now: baseTime} // builds logs only; no state
	var logs []*raft.Log
	add := func(raws ...string) { logs = append(logs, g.nextLog(raws...)) }

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
	g.op = op
	add(g.signed(op, mPutOrg(op.rec)))
	municipality := func(ars, name string) *testOrg {
		return newTestOrg(t, &registryv1.Organisation{
			Id: ars, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: name,
			StateCode: ars[:2], Ars: ars, Ags: ars[:5] + ars[9:], Location: &registryv1.GeoPoint{Lat: 47.8, Lon: 12.1},
		})
	}
	muni := municipality(arsMuni, "Musterdorf")
	muni2 := municipality(arsMuni2, "Beispielstadt")
	ssc := newTestOrg(t, &registryv1.Organisation{Id: "ssc-inntal", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: "Servicezentrum Inntal", StateCode: "09"})
	state := newTestOrg(t, &registryv1.Organisation{Id: "by-lfst", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY, Name: "Landesamt", StateCode: "09"})
	add(g.signed(op, mPutOrg(state.rec)))
	add(g.signed(state, mPutOrg(muni.rec), mPutOrg(muni2.rec)), g.signed(state, mPutOrg(ssc.rec)),
		g.signed(op, mPutOrg(muni.rec))) // the operator is not a municipality's approver
	// Authorisations: the municipalities entitle the centre, the state
	// agency entitles muni2 for the district; a forged one is refused.
	add(g.signed(muni, mPutAuth(authorisation(arsMuni, "ssc-inntal", arsMuni))),
		g.signed(muni2, mPutAuth(authorisation(arsMuni2, "ssc-inntal", arsMuni2))),
		g.signed(muni2, mPutAuth(authorisation(arsMuni2, "ssc-inntal", arsMuni))), // not its area
		g.signed(muni, mPutAuth(authorisation(arsMuni2, "ssc-inntal", arsMuni2))), // not its grant
		g.signed(state, mPutAuth(authorisation("by-lfst", arsMuni2, "09187"))))
	add(g.signed(op, mPutService(service(leikaGewerbe, "Gewerbe-Anmeldung", []string{"Gewerbe anmelden"}, []string{"Unternehmensgründung"}))),
		g.signed(state, mPutService(service(leikaHund, "Hund anmelden", []string{"Hundesteuer"}, []string{"Hund"}))))
	add(g.signed(muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))))
	dupe := g.signed(muni2, mPutOffering(offering(arsMuni2, leikaGewerbe, arsMuni2)))
	add(dupe, dupe)
	add(g.signed(ssc, mPutOffering(offering("ssc-inntal", leikaHund, arsMuni, arsMuni2))),
		g.signed(state, mPutOffering(offering("by-lfst", leikaHund, "09"))))

	// Refused commands.
	forger, _ := newSigningKey(t, "forger")
	forger.KeyID = muni.key.KeyID
	add(g.signed(muni, mPutService(service(leikaFuehrer, "Führerschein", nil, nil))), // permission denied
		signCmd(t, g.cmd(muni, mDeleteOffering(arsMuni+":"+leikaGewerbe)), forger), // invalid signature
		"kein jws", dupe)
	old := g.cmd(muni2, mPutOffering(offering(arsMuni2, leikaGewerbe, "09187")))
	add(g.signed(muni2, mPutOffering(offering(arsMuni2, leikaGewerbe, arsMuni2, "091870126"))))
	add(signCmd(t, old, muni2.key)) // stale
	future := g.cmd(muni2, mDeleteOffering(arsMuni2+":"+leikaGewerbe))
	future.IssuedAtUnixMs += time.Hour.Milliseconds()
	add(signCmd(t, future, muni2.key),
		g.signed(muni2, mPutOffering(offering(arsMuni2, leikaFuehrer, arsMuni2)))) // not found
	add(g.signed(state, mPutService(service(leikaFuehrer, "Führerschein", []string{"Fahrerlaubnis"}, []string{"Mobilität"})),
		mPutOffering(offering("by-lfst", leikaFuehrer, "09")),
		mPutOffering(offering("by-lfst", leikaUnknown, "09")))) // all or nothing
	add(g.signed(muni, mPutOffering(offering(arsMuni, leikaGewerbe, "09187")))) // not its area

	// Key rotation: muni revokes its key in one entry; the next entries are
	// signed with the new key (accepted) and the old one (refused).
	next, pk := newSigningKey(t, "next")
	rotated := proto.Clone(muni.rec).(*registryv1.Organisation)
	rotated.Keys[0].Status = registryv1.KeyStatus_KEY_STATUS_REVOKED
	rotated.Keys = append(rotated.Keys, pk)
	add(g.signed(muni, mPutOrg(rotated)))
	oldKey := muni.key
	muni.key = next
	add(g.signed(muni, mPutOffering(offering(arsMuni, leikaHund, arsMuni))))
	add(signCmd(t, g.cmd(muni, mDeleteOffering(arsMuni+":"+leikaHund)), oldKey))
	// The same rotation with both commands in one entry, for muni2.
	next2, pk2 := newSigningKey(t, "next2")
	rotated2 := proto.Clone(muni2.rec).(*registryv1.Organisation)
	rotated2.Keys = []*registryv1.PublicKey{pk2}
	c1 := g.signed(muni2, mPutOrg(rotated2))
	c2 := g.signed(muni2, mPutAuditHead(&registryv1.AuditHead{OrganisationId: arsMuni2, Sequence: 1, Hash: fmt.Sprintf("%064x", 1)}))
	muni2.key = next2
	add(c1, c2, g.signed(muni2, mPutAuditHead(&registryv1.AuditHead{OrganisationId: arsMuni2, Sequence: 2, Hash: fmt.Sprintf("%064x", 2)})))

	// Withdrawal: a stranger may not; muni may, and the centre's offering
	// leaves muni's area in the same entry.
	add(g.signed(muni2, mWithdrawAuth(authorisation(arsMuni, "ssc-inntal", arsMuni).GetId())),
		g.signed(muni, mWithdrawAuth(authorisation(arsMuni, "ssc-inntal", arsMuni).GetId())))

	// Suspension takes effect for the next entry.
	add(g.signed(muni, mChangeStatus("ssc-inntal", registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED, "fremd", "")), // not its approver
		g.signed(state, mChangeStatus("ssc-inntal", registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED, "Prüfung", "")))
	add(g.signed(ssc, mDeleteOffering("ssc-inntal:"+leikaHund)))
	// A raft no-op entry in between.
	g.index++
	logs = append(logs, &raft.Log{Index: g.index, Term: 2, Type: raft.LogNoop})
	add(g.signed(state, mChangeStatus("ssc-inntal", registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, "geprüft", "")))
	add(g.signed(ssc, mDeleteOffering("ssc-inntal:"+leikaHund)))

	// A join: refused while pending, approved only by its own state's
	// agency with the keys it checked, then it publishes.
	joiner := municipality("091870126444", "Neudorf")
	joinRec := proto.Clone(joiner.rec).(*registryv1.Organisation)
	add(g.signed(joiner, mRequestJoin(joinRec)))
	add(g.signed(joiner, mPutOffering(offering(joiner.id(), leikaGewerbe, joiner.id()))), // not approved
		g.signed(op, mChangeStatus(joiner.id(), registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, "ok", KeysDigest(joinRec.GetKeys()))),     // not its approver
		g.signed(state, mChangeStatus(joiner.id(), registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, "ok", KeysDigest(muni.rec.GetKeys()))), // other keys
		g.signed(state, mChangeStatus(joiner.id(), registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, "ok", KeysDigest(joinRec.GetKeys()))),
		g.signed(joiner, mPutOffering(offering(joiner.id(), leikaGewerbe, joiner.id()))))

	// Key recovery of muni2 by its approver, and of the operator by its
	// recovery key; the new keys sign, the old do not.
	next3, pk3 := newSigningKey(t, "next3")
	add(g.signed(state, mRecoverKeys(arsMuni2, "Schlüssel verloren", pk3)))
	oldKey2 := muni2.key
	muni2.key = next3
	add(g.signed(muni2, mPutOffering(offering(arsMuni2, leikaHund, arsMuni2))),
		signCmd(t, g.cmd(muni2, mDeleteOffering(arsMuni2+":"+leikaHund)), oldKey2))
	opNext, opPub := newSigningKey(t, "op-next")
	add(signCmd(t, g.cmd(op, mPutService(service(leikaNachsende, "x", nil, nil))), recKey), // a recovery key signs recovery only
		signCmd(t, g.cmd(op, mRecoverKeys(operatorID, "Betriebsschlüssel verloren", opPub)), recKey))
	op.key = opNext

	// Same id, other content: already_exists; the same command: duplicate.
	reuse := g.cmd(muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))
	first := signCmd(t, reuse, muni.key)
	reuse.Mutations = []*registryv1.Mutation{mDeleteOffering(arsMuni + ":" + leikaGewerbe)}
	add(first, signCmd(t, reuse, muni.key), first)

	// Many small commands in one entry and spread over entries.
	for i := 0; i < 20; i++ {
		o := offering(arsMuni, leikaGewerbe, arsMuni)
		o.Name = fmt.Sprintf("Version %d", i)
		if i%2 == 0 {
			add(g.signed(muni, mPutOffering(o)))
		} else {
			add(g.signed(muni, mPutOffering(o)), g.signed(state, mPutService(service(leikaHund, fmt.Sprintf("Hund %d", i), nil, []string{"Hund"}))))
		}
	}

	// The leader clock jumps two days: dedupe records of the commands so far
	// are pruned, and the replayed duplicate is now stale.
	g.now += 2 * 24 * time.Hour.Milliseconds()
	add(g.signed(muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))), dupe)
	add(dupe, g.signed(op, mPutService(service(leikaNachsende, "Nachsendeauftrag", []string{"Umzug"}, nil))))
	return logs
}

func TestDeterminism(t *testing.T) {
	logs := scenario(t)
	type run struct {
		name    string
		batches []int // sizes, cycled
		workers int
	}
	runs := []run{
		{name: "one log at a time", batches: []int{1}},
		{name: "mixed batches", batches: []int{1, 3, 7, 2, 16}},
		{name: "mixed batches, one verify worker", batches: []int{5, 1, 4}, workers: 1},
		{name: "one batch", batches: []int{len(logs)}},
	}
	var wantDump map[string]string
	var wantResults [][]*registryv1.CommandResult
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			db := openDB(t, t.TempDir())
			cfg := testFSMConfig()
			cfg.VerifyWorkers = r.workers
			f, err := NewFSM(db, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var results [][]*registryv1.CommandResult
			for i, b := 0, 0; i < len(logs); b++ {
				n := min(r.batches[b%len(r.batches)], len(logs)-i)
				out := f.ApplyBatch(logs[i : i+n])
				if len(out) != n {
					t.Fatalf("%d results for %d logs", len(out), n)
				}
				for _, o := range out {
					if o == nil {
						results = append(results, nil)
						continue
					}
					results = append(results, o.(*LogResult).Results)
				}
				i += n
			}
			if f.AppliedIndex() != logs[len(logs)-1].Index {
				t.Fatalf("applied %d", f.AppliedIndex())
			}
			dump := dumpState(t, db)
			if wantDump == nil {
				wantDump, wantResults = dump, results
				checkScenarioOutcome(t, NewReader(db), results)
				return
			}
			requireSameState(t, wantDump, dump)
			for i := range results {
				if len(results[i]) != len(wantResults[i]) {
					t.Fatalf("log %d: %d results, want %d", i+1, len(results[i]), len(wantResults[i]))
				}
				for j := range results[i] {
					if !proto.Equal(results[i][j], wantResults[i][j]) {
						t.Errorf("log %d command %d: %v, want %v", i+1, j, results[i][j], wantResults[i][j])
					}
				}
			}
		})
	}
}

// checkScenarioOutcome checks that the scenario exercised what it claims:
// a mix of accepted and refused commands with the expected codes.
func checkScenarioOutcome(t *testing.T, r *Reader, results [][]*registryv1.CommandResult) {
	t.Helper()
	codes := map[string]int{}
	dups := 0
	for _, rs := range results {
		for _, res := range rs {
			codes[res.GetErrorCode()]++
			if res.GetDuplicate() {
				dups++
			}
		}
	}
	for _, c := range []string{"", CodePermissionDenied, CodeInvalidSignature, CodeUnknownKey, CodeStale, CodeInvalidArgument, CodeNotFound,
		CodePreconditionFailed, CodeAlreadyExists} {
		if codes[c] == 0 {
			t.Errorf("scenario has no result with code %q (codes %v)", c, codes)
		}
	}
	if dups < 2 {
		t.Errorf("%d duplicates", dups)
	}
	// Key rotation: the new key signed, the old did not.
	if _, _, err := r.Offering(arsMuni + ":" + leikaHund); err != nil {
		t.Errorf("offering signed with the rotated key: %v", err)
	}
	if h, _, err := r.AuditHead(arsMuni2); err != nil || h.GetSequence() != 2 {
		t.Errorf("audit head of muni2: %v %v", h, err)
	}
	// Suspended: refused; reinstated: accepted.
	if _, _, err := r.Offering("ssc-inntal:" + leikaHund); err == nil {
		t.Error("ssc offering not deleted after reinstatement")
	}
	if _, _, err := r.Service(leikaFuehrer); err == nil {
		t.Error("all-or-nothing command left its service")
	}
	// Governance: the joiner was approved and published; muni2's and the
	// operator's keys were recovered.
	if o, _, err := r.Organisation("091870126444"); err != nil || o.GetStatus() != registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE || o.GetStatusChangedBy() != "by-lfst" {
		t.Errorf("joiner: %v %v", o, err)
	}
	if _, _, err := r.Offering("091870126444:" + leikaGewerbe); err != nil {
		t.Errorf("joiner's offering: %v", err)
	}
	if _, _, err := r.Offering(arsMuni2 + ":" + leikaHund); err != nil {
		t.Errorf("offering signed with muni2's recovered key: %v", err)
	}
	if s, _, err := r.Service(leikaNachsende); err != nil || s.GetName() != "Nachsendeauftrag" {
		t.Errorf("service signed with the operator's recovered key: %v %v", s, err)
	}
	if storedKey(t, r, authKey(authorisation(arsMuni, "ssc-inntal", arsMuni).GetId())) {
		t.Error("withdrawn authorisation still stored")
	}
	if !storedKey(t, r, authKey(authorisation(arsMuni2, "ssc-inntal", arsMuni2).GetId())) {
		t.Error("muni2's authorisation missing")
	}
}
