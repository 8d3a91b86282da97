package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// seededOrg gives rec a deterministic signing key, so that signed commands
// in the committed fuzz corpus stay verifiable.
func seededOrg(t testing.TB, rec *registryv1.Organisation, kid string, seed byte) *testOrg {
	t.Helper()
	k := keys.SigningFromSeed(kid, bytes.Repeat([]byte{seed}, 32))
	pk, err := keys.Published(k)
	if err != nil {
		t.Fatal(err)
	}
	rec.Keys = append(rec.Keys, pk)
	return &testOrg{rec: rec, key: k}
}

// fuzzCommand is a command with fixed id and time, signed with a seeded key.
func fuzzCommand(t testing.TB, o *testOrg, id string, at int64, muts ...*registryv1.Mutation) string {
	t.Helper()
	return signCmd(t, &registryv1.Command{Issuer: o.id(), Id: id, IssuedAtUnixMs: at, Mutations: muts}, o.key)
}

func FuzzParseCommand(f *testing.F) {
	op := seededOrg(f, operatorRecord(), "op-fuzz", 1)
	muni := seededOrg(f, &registryv1.Organisation{Id: arsMuni, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: "Musterdorf"}, "muni-fuzz", 2)
	valid := []string{
		fuzzCommand(f, op, "genesis-0000000001", baseTime, mPutOrg(op.rec)),
		fuzzCommand(f, op, "onboard-0000000001", baseTime+1, mPutOrg(muni.rec), mPutService(service(leikaGewerbe, "Gewerbe-Anmeldung", []string{"Gewerbe"}, []string{"Umzug"}))),
		fuzzCommand(f, muni, "offering-000000001", baseTime+2, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni, "09187"), preAbsent())),
		fuzzCommand(f, muni, "delete-00000000001", baseTime+3, mDeleteOffering(arsMuni+":"+leikaGewerbe, preRevision(7))),
		fuzzCommand(f, muni, "join-0000000000001", baseTime+4, mRequestJoin(muni.rec)),
		fuzzCommand(f, op, "status-00000000001", baseTime+5, mChangeStatus(arsMuni, registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, "geprüft", KeysDigest(muni.rec.GetKeys()))),
		fuzzCommand(f, op, "recover-0000000001", baseTime+6, mRecoverKeys(arsMuni, "verloren", muni.rec.GetKeys()...)),
		fuzzCommand(f, muni, "auth-0000000000001", baseTime+7, mPutAuth(authorisation(arsMuni, "ssc-fuzz", arsMuni))),
		fuzzCommand(f, muni, "withdraw-000000001", baseTime+8, mWithdrawAuth(authorisation(arsMuni, "ssc-fuzz", arsMuni).GetId())),
	}
	for _, raw := range valid {
		f.Add(raw)
		parts := strings.Split(raw, ".")
		f.Add(parts[0] + "." + parts[1] + ".")                   // unsigned
		f.Add(parts[0] + "." + parts[1])                         // two parts
		f.Add(parts[0] + ".." + parts[2])                        // no payload
		f.Add(raw[:len(raw)/2])                                  // truncated
		f.Add(strings.Replace(raw, parts[1][:8], "AAAAAAAA", 1)) // garbled payload
	}
	payload := b64(cmdPayload(f, &registryv1.Command{Issuer: arsMuni, Id: "0123456789abcdef", IssuedAtUnixMs: 1, Mutations: []*registryv1.Mutation{mDeleteOffering("abc")}}))
	pub, _ := json.Marshal(muni.key.Public())
	for _, h := range []string{
		`{"alg":"none","kid":"muni-fuzz","typ":"verbund-command+jws"}`,
		`{"alg":"HS256","kid":"muni-fuzz","typ":"verbund-command+jws"}`,
		`{"alg":"EdDSA","kid":"muni-fuzz","typ":"verbund-command+jws","jwk":` + string(pub) + `}`,
		`{"alg":"EdDSA","kid":"muni-fuzz","typ":"verbund-command+jws","b64":false,"crit":["b64"]}`,
		`{"alg":"EdDSA","kid":"muni-fuzz","typ":"JWT"}`,
		`{"alg":"EdDSA","kid":"muni-fuzz","typ":"verbund-command+jws","typ":"JWT"}`,
		`{"alg":"EdDSA","kid":"","typ":"verbund-command+jws"}`,
		`{"alg":"EdDSA","kid":"muni-fuzz","typ":"verbund-command+jws","\u006awk":{}}`,
		`[]`, `null`, `{`,
	} {
		in := b64([]byte(h)) + "." + payload
		f.Add(in + "." + b64(edSigner(muni.key)([]byte(in))))
	}
	for _, s := range []string{"", ".", "..", "...", "a.b.c", "eyJ9.eyJ9.eyJ9", "{\"payload\":\"\"}", strings.Repeat(".", 100)} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, raw string) {
		sc, err := ParseCommand(raw)
		if err != nil {
			if sc != nil {
				t.Fatal("command returned with an error")
			}
			switch ErrorCode(err) {
			case CodeInvalidSignature, CodeInvalidArgument, CodeTooLarge:
			default:
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		if err := ValidateCommand(sc.Command); err != nil {
			t.Fatalf("accepted an invalid command: %v", err)
		}
		if sc.KID == "" || sc.Raw != raw || sc.Digest != sha256.Sum256([]byte(raw)) {
			t.Fatalf("kid %q, raw or digest wrong", sc.KID)
		}
		if len(sc.jws.Signatures) != 1 {
			t.Fatalf("%d signatures", len(sc.jws.Signatures))
		}
		h := sc.jws.Signatures[0].Protected
		if h.Algorithm != string(jose.EdDSA) || h.JSONWebKey != nil || h.ExtraHeaders[jose.HeaderType] != CommandType {
			t.Fatalf("accepted header %+v", h)
		}
		// The payload is what the signature covers.
		again := &registryv1.Command{}
		if err := proto.Unmarshal(sc.jws.UnsafePayloadWithoutVerification(), again); err != nil || !proto.Equal(again, sc.Command) {
			t.Fatalf("payload does not decode to the command: %v", err)
		}
		// Verifying never panics, and only the seed key of the kid can
		// succeed.
		for _, k := range []jose.JSONWebKey{op.key, muni.key} {
			if err := sc.Verify(k.Public()); err == nil && k.KeyID != sc.KID {
				t.Fatalf("verified with key %s for kid %s", k.KeyID, sc.KID)
			}
		}
	})
}

// fuzzRegistry makes fresh registries after genesis, with seeded keys:
// every fuzz input starts from the same state, so that a failing input
// reproduces on its own.
type fuzzRegistry struct {
	setup                            []*raft.Log
	op, state, muni, ssc, registered *testOrg
	nextIndex                        uint64
}

func newFuzzRegistry(f *testing.F) *fuzzRegistry {
	g := &harness{t: f, now: baseTime} // builds logs only
	op := seededOrg(f, operatorRecord(), "op-fuzz", 1)
	muni := seededOrg(f, &registryv1.Organisation{
		Id: arsMuni, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: "Musterdorf", Ars: arsMuni, Ags: "09187111",
		Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
	}, "muni-fuzz", 2)
	state := seededOrg(f, &registryv1.Organisation{
		Id: "by-fuzz", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY, Name: "Landesamt", StateCode: "09",
	}, "state-fuzz", 3)
	ssc := seededOrg(f, &registryv1.Organisation{
		Id: "ssc-fuzz", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: "Servicezentrum",
	}, "ssc-fuzz", 4)
	// Listed by its approver, without keys: it may join later.
	registered := seededOrg(f, &registryv1.Organisation{
		Id: arsMuni2, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: "Beispielstadt", Ars: arsMuni2,
	}, "muni2-fuzz", 5)
	listed := registered.clone()
	listed.Keys = nil
	reg := &fuzzRegistry{op: op, state: state, muni: muni, ssc: ssc, registered: registered}
	reg.setup = []*raft.Log{
		g.nextLogAt(baseTime+10, fuzzCommand(f, op, "genesis-0000000001", baseTime, mPutOrg(op.rec))),
		g.nextLogAt(baseTime+10, fuzzCommand(f, op, "onboard-0000000001", baseTime+1, mPutOrg(state.rec), mPutOrg(ssc.rec),
			mPutService(service(leikaGewerbe, "Gewerbe-Anmeldung", []string{"Gewerbe"}, []string{"Umzug"})))),
		g.nextLogAt(baseTime+10, fuzzCommand(f, state, "onboard-0000000002", baseTime+2, mPutOrg(muni.rec), mPutOrg(listed))),
		g.nextLogAt(baseTime+10, fuzzCommand(f, muni, "authorise-00000001", baseTime+3, mPutAuth(authorisation(arsMuni, "ssc-fuzz", arsMuni)))),
	}
	reg.nextIndex = g.index + 1
	// The setup must succeed.
	_, _, out := reg.open(f)
	for _, o := range out {
		for _, r := range o.(*LogResult).Results {
			requireCode(f, r, "")
		}
	}
	return reg
}

// open returns a fresh in-memory registry with the setup applied.
func (reg *fuzzRegistry) open(t testing.TB) (*FSM, *badger.DB, []interface{}) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithLogger(nil).
		WithMemTableSize(8 << 20).WithBlockCacheSize(1 << 20).WithNumCompactors(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	fsm := newFSM(t, db)
	return fsm, db, fsm.ApplyBatch(reg.setup)
}

func FuzzApplyLogEntry(f *testing.F) {
	reg := newFuzzRegistry(f)
	op, muni, state, ssc, registered := reg.op, reg.muni, reg.state, reg.ssc, reg.registered
	entry := func(at int64, raws ...string) []byte {
		b, err := proto.Marshal(&registryv1.LogEntry{SignedCommands: raws, ProposedAtUnixMs: at})
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	off := fuzzCommand(f, muni, "offering-000000001", baseTime+20, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))
	del := fuzzCommand(f, muni, "delete-00000000001", baseTime+21, mDeleteOffering(arsMuni+":"+leikaGewerbe))
	svc := fuzzCommand(f, muni, "service-0000000001", baseTime+22, mPutService(service(leikaHund, "Hund", nil, nil)))
	opOff := fuzzCommand(f, op, "op-offering-000001", baseTime+23, mPutOffering(offering(arsMuni, leikaGewerbe, "09")), mPutOffering(offering(arsMuni, leikaUnknown, "09")))
	rename := muni.clone()
	rename.Name = "Markt Musterdorf"
	self := fuzzCommand(f, muni, "rename-0000000001", baseTime+24, mPutOrg(rename))
	f.Add(entry(baseTime+30, off))
	f.Add(entry(baseTime+30, off, del, off))
	f.Add(entry(baseTime+30, svc, opOff))
	f.Add(entry(baseTime+30, self, off))
	// Governance: join of the listed municipality, approval by the wrong and
	// the right approver, suspension, key recovery, authorisations granted,
	// forged and withdrawn, and an id reused for other content.
	join := fuzzCommand(f, registered, "join-0000000000001", baseTime+25, mRequestJoin(registered.clone()))
	approve := fuzzCommand(f, state, "approve-0000000001", baseTime+26,
		mChangeStatus(arsMuni2, registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, "geprüft", KeysDigest(registered.rec.GetKeys())))
	opApprove := fuzzCommand(f, op, "approve-0000000002", baseTime+26,
		mChangeStatus(arsMuni2, registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, "geprüft", KeysDigest(registered.rec.GetKeys())))
	suspend := fuzzCommand(f, state, "suspend-0000000001", baseTime+27, mChangeStatus(arsMuni, registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED, "Prüfung", ""))
	recovered := seededOrg(f, muni.clone(), "muni-fuzz-2", 6)
	recover := fuzzCommand(f, state, "recover-0000000001", baseTime+27, mRecoverKeys(arsMuni, "verloren", recovered.rec.GetKeys()[len(recovered.rec.GetKeys())-1]))
	sscOff := fuzzCommand(f, ssc, "ssc-offering-00001", baseTime+28, mPutOffering(offering("ssc-fuzz", leikaGewerbe, arsMuni)))
	withdraw := fuzzCommand(f, muni, "withdraw-000000001", baseTime+28, mWithdrawAuth(authorisation(arsMuni, "ssc-fuzz", arsMuni).GetId()))
	strangerWithdraw := fuzzCommand(f, ssc, "withdraw-000000002", baseTime+28, mWithdrawAuth(authorisation(arsMuni, "ssc-fuzz", arsMuni).GetId()))
	forged := fuzzCommand(f, muni, "auth-0000000000002", baseTime+28, mPutAuth(authorisation(arsMuni, "ssc-fuzz", "09187")))
	onBehalf := fuzzCommand(f, state, "auth-0000000000003", baseTime+28, mPutAuth(&registryv1.Authorisation{
		Id: "by-fuzz:ssc-fuzz:1", GrantorId: "by-fuzz", GranteeId: "ssc-fuzz", Areas: []string{arsMuni2}, OnBehalfOf: arsMuni2}))
	reused := fuzzCommand(f, muni, "authorise-00000001", baseTime+3, mPutAuth(authorisation(arsMuni, "ssc-fuzz", arsMuni, "091870126")))
	f.Add(entry(baseTime+30, join, opApprove, approve))
	f.Add(entry(baseTime+30, join, approve, fuzzCommand(f, registered, "offering-000000002", baseTime+29, mPutOffering(offering(arsMuni2, leikaGewerbe, arsMuni2)))))
	f.Add(entry(baseTime+30, suspend, off))
	f.Add(entry(baseTime+30, recover, off))
	f.Add(entry(baseTime+30, sscOff, strangerWithdraw, withdraw))
	f.Add(entry(baseTime+30, forged, onBehalf, sscOff))
	f.Add(entry(baseTime+30, reused))
	f.Add(entry(baseTime+30+2*24*3600*1000, off))      // stale
	f.Add(entry(baseTime-3600*1000, off))              // future
	f.Add(entry(baseTime+30, "kein jws", "a.b.c", "")) // garbage commands
	f.Add(entry(0))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte("not protobuf at all"))

	f.Fuzz(func(t *testing.T, data []byte) {
		fsm, db, _ := reg.open(t)
		before := dumpState(t, db)
		index := reg.nextIndex
		out := fsm.ApplyBatch([]*raft.Log{{Index: index, Term: 1, Type: raft.LogCommand, Data: data}})
		if fsm.AppliedIndex() != index {
			t.Fatalf("applied %d, want %d", fsm.AppliedIndex(), index)
		}
		after := dumpState(t, db)
		e := &registryv1.LogEntry{}
		decodes := proto.Unmarshal(data, e) == nil
		lr, _ := out[0].(*LogResult)
		if !decodes {
			if out[0] != nil {
				t.Fatalf("undecodable entry gave %v", out[0])
			}
			requireSameState(t, before, after, ignoreApplied...)
			return
		}
		if lr == nil || lr.Index != index || len(lr.Results) != len(e.GetSignedCommands()) {
			t.Fatalf("result %#v for %d commands", out[0], len(e.GetSignedCommands()))
		}
		changed := false
		for _, r := range lr.Results {
			if r.GetErrorCode() == "" && !r.GetDuplicate() {
				changed = true
			}
			if r.GetErrorCode() == CodeInternal {
				t.Fatalf("internal error: %s", r.GetErrorMessage())
			}
		}
		if !changed {
			// Failed commands leave dedupe records (and old ones may be
			// pruned), nothing else.
			requireSameState(t, before, after, ignoreBooks...)
		}
		if op, err := NewReader(db).Operator(); err != nil || op != operatorID {
			t.Fatalf("operator %q: %v", op, err)
		}
	})
}
