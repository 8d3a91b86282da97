package registry

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// baseTime is the clock of the test registry (Unix ms). Commands are issued
// and logs proposed relative to it, so tests never depend on the wall clock.
var baseTime = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC).UnixMilli()

const operatorID = "verbund-betrieb"

// Fixture LeiKa keys.
const (
	leikaGewerbe   = "99050012104000" // Gewerbe-Anmeldung
	leikaUmmelden  = "99115004000000" // Wohnsitz ummelden (life situation Umzug)
	leikaNachsende = "99115099000000" // Nachsendeauftrag (keyword Umzug)
	leikaHund      = "99036001000000" // Hund anmelden
	leikaFuehrer   = "99121001000000" // Führerschein
	leikaUnknown   = "99999999999999"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testFSMConfig() FSMConfig {
	return FSMConfig{ReplayWindow: 24 * time.Hour, MaxClockSkew: 5 * time.Minute, Logger: discardLogger()}
}

// openDB opens badger in dir and closes it when the test ends.
func openDB(t testing.TB, dir string) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatalf("open badger: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func newFSM(t testing.TB, db *badger.DB) *FSM {
	t.Helper()
	f, err := NewFSM(db, testFSMConfig())
	if err != nil {
		t.Fatalf("NewFSM: %v", err)
	}
	return f
}

// ---- organisations and keys ----

// testOrg is an organisation the test can sign for.
type testOrg struct {
	rec *registryv1.Organisation // as submitted (no registry metadata)
	key jose.JSONWebKey          // private signing key, published in rec.Keys
}

func (o *testOrg) id() string { return o.rec.GetId() }

// clone returns a copy of the record for modification.
func (o *testOrg) clone() *registryv1.Organisation {
	return proto.Clone(o.rec).(*registryv1.Organisation)
}

func newSigningKey(t testing.TB, prefix string) (jose.JSONWebKey, *registryv1.PublicKey) {
	t.Helper()
	k, err := keys.GenerateSigning(keys.NewKID(prefix))
	if err != nil {
		t.Fatal(err)
	}
	pk, err := keys.Published(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, pk
}

// newTestOrg gives rec a fresh active signing key.
func newTestOrg(t testing.TB, rec *registryv1.Organisation) *testOrg {
	t.Helper()
	k, pk := newSigningKey(t, rec.GetId())
	rec.Keys = append(rec.Keys, pk)
	return &testOrg{rec: rec, key: k}
}

func operatorRecord() *registryv1.Organisation {
	return &registryv1.Organisation{
		Id:   operatorID,
		Kind: registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR,
		Name: "Verbund Netzbetrieb",
	}
}

// ---- mutations ----

func mPutOrg(o *registryv1.Organisation, pre ...*registryv1.Precondition) *registryv1.Mutation {
	return withPre(&registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: o}}, pre)
}

func mPutService(s *registryv1.Service, pre ...*registryv1.Precondition) *registryv1.Mutation {
	return withPre(&registryv1.Mutation{Op: &registryv1.Mutation_PutService{PutService: s}}, pre)
}

func mPutOffering(o *registryv1.Offering, pre ...*registryv1.Precondition) *registryv1.Mutation {
	return withPre(&registryv1.Mutation{Op: &registryv1.Mutation_PutOffering{PutOffering: o}}, pre)
}

func mDeleteOffering(id string, pre ...*registryv1.Precondition) *registryv1.Mutation {
	return withPre(&registryv1.Mutation{Op: &registryv1.Mutation_DeleteOffering{DeleteOffering: id}}, pre)
}

func mPutAuditHead(h *registryv1.AuditHead) *registryv1.Mutation {
	return &registryv1.Mutation{Op: &registryv1.Mutation_PutAuditHead{PutAuditHead: h}}
}

func mRequestJoin(o *registryv1.Organisation) *registryv1.Mutation {
	return &registryv1.Mutation{Op: &registryv1.Mutation_RequestJoin{RequestJoin: o}}
}

func mChangeStatus(org string, status registryv1.OrganisationStatus, reason, keysSHA string) *registryv1.Mutation {
	return &registryv1.Mutation{Op: &registryv1.Mutation_ChangeStatus{ChangeStatus: &registryv1.ChangeOrganisationStatus{
		OrganisationId: org, Status: status, Reason: reason, KeysSha256: keysSHA,
	}}}
}

func mRecoverKeys(org, reason string, ks ...*registryv1.PublicKey) *registryv1.Mutation {
	return &registryv1.Mutation{Op: &registryv1.Mutation_RecoverKeys{RecoverKeys: &registryv1.KeyRecovery{
		OrganisationId: org, Keys: ks, Reason: reason,
	}}}
}

func mPutAuth(a *registryv1.Authorisation, pre ...*registryv1.Precondition) *registryv1.Mutation {
	return withPre(&registryv1.Mutation{Op: &registryv1.Mutation_PutAuthorisation{PutAuthorisation: a}}, pre)
}

func mWithdrawAuth(id string) *registryv1.Mutation {
	return &registryv1.Mutation{Op: &registryv1.Mutation_WithdrawAuthorisation{WithdrawAuthorisation: id}}
}

// authorisation builds a grant of grantor to grantee for areas (every service).
func authorisation(grantor, grantee string, areas ...string) *registryv1.Authorisation {
	return &registryv1.Authorisation{Id: grantor + ":" + grantee + ":" + strings.Join(areas, "-"), GrantorId: grantor, GranteeId: grantee, Areas: areas}
}

func withPre(m *registryv1.Mutation, pre []*registryv1.Precondition) *registryv1.Mutation {
	if len(pre) > 0 {
		m.Precondition = pre[0]
	}
	return m
}

func preAbsent() *registryv1.Precondition {
	return &registryv1.Precondition{Condition: &registryv1.Precondition_Absent{Absent: true}}
}

func preRevision(r uint64) *registryv1.Precondition {
	return &registryv1.Precondition{Condition: &registryv1.Precondition_Revision{Revision: r}}
}

func service(leika, name string, keywords, life []string) *registryv1.Service {
	return &registryv1.Service{LeikaKey: leika, Name: name, Keywords: keywords, LifeSituations: life}
}

func offering(org, leika string, areas ...string) *registryv1.Offering {
	return &registryv1.Offering{Id: org + ":" + leika, OrganisationId: org, LeikaKey: leika, Areas: areas, Name: "Angebot " + leika}
}

// ---- signing and logs ----

func signCmd(t testing.TB, cmd *registryv1.Command, key jose.JSONWebKey) string {
	t.Helper()
	raw, err := SignCommand(cmd, key)
	if err != nil {
		t.Fatalf("sign command: %v", err)
	}
	return raw
}

func makeLog(t testing.TB, index uint64, proposedAt int64, raws ...string) *raft.Log {
	t.Helper()
	data, err := proto.Marshal(&registryv1.LogEntry{SignedCommands: raws, ProposedAtUnixMs: proposedAt})
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// harness is a registry FSM over badger in a temp dir, with a clock and a
// log index of its own.
type harness struct {
	t     testing.TB
	dir   string
	db    *badger.DB
	fsm   *FSM
	r     *Reader
	index uint64 // index of the last log built
	now   int64  // issued_at of the last command built
	op    *testOrg
	logs  []*raft.Log // every log applied, in order
	// states are the state agencies that approve organisations, by state code.
	states map[string]*testOrg
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), now: baseTime}
	h.db = openDB(t, h.dir)
	h.fsm = newFSM(t, h.db)
	h.r = NewReader(h.db)
	return h
}

// reopen closes badger and opens it again with a new FSM (a restart).
func (h *harness) reopen() {
	h.t.Helper()
	if err := h.db.Close(); err != nil {
		h.t.Fatalf("close badger: %v", err)
	}
	h.db = openDB(h.t, h.dir)
	h.fsm = newFSM(h.t, h.db)
	h.r = NewReader(h.db)
}

// fork returns a new registry in another directory that applied the same
// logs, one at a time, with the same clock and log index.
func (h *harness) fork() *harness {
	h.t.Helper()
	f := newHarness(h.t)
	for _, l := range h.logs {
		f.fsm.Apply(l)
	}
	f.logs = slices.Clone(h.logs)
	f.index, f.now, f.op, f.states = h.index, h.now, h.op, maps.Clone(h.states)
	requireSameState(h.t, dumpState(h.t, h.db), dumpState(h.t, f.db))
	return f
}

// cmd builds a command of o, issued 1 ms after the previous one.
func (h *harness) cmd(o *testOrg, muts ...*registryv1.Mutation) *registryv1.Command {
	h.now++
	return &registryv1.Command{Issuer: o.id(), Id: NewCommandID(), IssuedAtUnixMs: h.now, Mutations: muts}
}

// signed builds and signs a command of o.
func (h *harness) signed(o *testOrg, muts ...*registryv1.Mutation) string {
	h.t.Helper()
	return signCmd(h.t, h.cmd(o, muts...), o.key)
}

// nextLog builds the next log entry, proposed at the current clock.
func (h *harness) nextLog(raws ...string) *raft.Log {
	return h.nextLogAt(h.now, raws...)
}

func (h *harness) nextLogAt(proposedAt int64, raws ...string) *raft.Log {
	h.index++
	return makeLog(h.t, h.index, proposedAt, raws...)
}

// applyLog applies one log through FSM.Apply and returns its results.
func (h *harness) applyLog(l *raft.Log) []*registryv1.CommandResult {
	h.t.Helper()
	out := h.fsm.Apply(l)
	h.logs = append(h.logs, l)
	lr, ok := out.(*LogResult)
	if !ok {
		h.t.Fatalf("Apply(%d) returned %T, want *LogResult", l.Index, out)
	}
	if lr.Index != l.Index || h.fsm.AppliedIndex() != l.Index {
		h.t.Fatalf("LogResult.Index %d, AppliedIndex %d, want %d", lr.Index, h.fsm.AppliedIndex(), l.Index)
	}
	return lr.Results
}

// apply applies the commands as one log entry proposed now.
func (h *harness) apply(raws ...string) []*registryv1.CommandResult {
	h.t.Helper()
	return h.applyLog(h.nextLog(raws...))
}

// apply1 applies one command and returns its result.
func (h *harness) apply1(raw string) *registryv1.CommandResult {
	h.t.Helper()
	res := h.apply(raw)
	if len(res) != 1 {
		h.t.Fatalf("got %d results, want 1", len(res))
	}
	return res[0]
}

// mustApply applies the commands as one entry and fails unless all succeed.
func (h *harness) mustApply(raws ...string) []*registryv1.CommandResult {
	h.t.Helper()
	res := h.apply(raws...)
	if len(res) != len(raws) {
		h.t.Fatalf("got %d results for %d commands", len(res), len(raws))
	}
	for i, r := range res {
		if r.GetErrorCode() != "" || r.GetDuplicate() {
			h.t.Fatalf("command %d: %s: %s (duplicate=%v)", i, r.GetErrorCode(), r.GetErrorMessage(), r.GetDuplicate())
		}
	}
	return res
}

// genesis registers the network operator.
func (h *harness) genesis() *testOrg {
	h.t.Helper()
	op := newTestOrg(h.t, operatorRecord())
	h.mustApply(h.signed(op, mPutOrg(op.rec)))
	h.op = op
	return op
}

// onboard lets rec's approver register it with a fresh key (ACTIVE): the
// operator for federal-level organisations, else the state agency of its
// state (created by the operator if the harness has none yet).
func (h *harness) onboard(rec *registryv1.Organisation) *testOrg {
	h.t.Helper()
	o := newTestOrg(h.t, rec)
	h.mustApply(h.signed(h.approverFor(rec), mPutOrg(o.rec)))
	if rec.GetKind() == registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY {
		if h.states == nil {
			h.states = map[string]*testOrg{}
		}
		if _, ok := h.states[stateOf(rec)]; !ok {
			h.states[stateOf(rec)] = o
		}
	}
	return o
}

// approverFor returns the test organisation that approves rec.
func (h *harness) approverFor(rec *registryv1.Organisation) *testOrg {
	h.t.Helper()
	if federalLevel(rec) {
		return h.op
	}
	return h.stateAgency(stateOf(rec))
}

// stateAgency returns the harness's state agency of state code, registering
// one ("land-<code>") if there is none yet.
func (h *harness) stateAgency(code string) *testOrg {
	h.t.Helper()
	if a, ok := h.states[code]; ok {
		return a
	}
	return h.onboard(&registryv1.Organisation{
		Id: "land-" + code, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY,
		Name: "Landesamt " + code, StateCode: code,
	})
}

func (h *harness) addMunicipality(ars, name string, lat, lon float64) *testOrg {
	h.t.Helper()
	return h.onboard(&registryv1.Organisation{
		Id: ars, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: name,
		StateCode: ars[:2], Ars: ars, Ags: ars[:5] + ars[9:], Location: &registryv1.GeoPoint{Lat: lat, Lon: lon},
		ParentId: ars[:5] + "0000000", Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
	})
}

func (h *harness) addService(s *registryv1.Service) {
	h.t.Helper()
	h.mustApply(h.signed(h.op, mPutService(s)))
}

// addOffering lets o publish its offering of leika for areas. Areas
// outside o's own area are first granted to o by the area's state agency
// (rule area-responsibility).
func (h *harness) addOffering(o *testOrg, leika string, areas ...string) *registryv1.Offering {
	h.t.Helper()
	for _, a := range areas {
		if !within(a, ownArea(o.rec)) {
			h.authorise(h.stateAgency(a[:2]), o, a)
		}
	}
	off := offering(o.id(), leika, areas...)
	h.mustApply(h.signed(o, mPutOffering(off)))
	return off
}

// authorise lets grantor entitle grantee to offer every service for areas.
func (h *harness) authorise(grantor, grantee *testOrg, areas ...string) *registryv1.Authorisation {
	h.t.Helper()
	a := authorisation(grantor.id(), grantee.id(), areas...)
	h.mustApply(h.signed(grantor, mPutAuth(a)))
	return a
}

// ---- fixture world ----

// world is a registry with an operator, municipalities, a shared service
// centre, a state agency and one service.
type world struct {
	*harness
	muni, muni2, ssc, state *testOrg
}

const (
	arsMuni  = "091870126111" // Musterdorf, Verwaltungsgemeinschaft 091870126, Landkreis 09187
	arsMuni2 = "091870126222"
)

func newWorld(t testing.TB) *world {
	t.Helper()
	h := newHarness(t)
	h.genesis()
	w := &world{harness: h}
	// The state agency first: it approves the state's organisations.
	w.state = h.onboard(&registryv1.Organisation{
		Id: "by-lfst", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY,
		Name: "Bayerisches Landesamt für Steuern", StateCode: "09",
	})
	w.muni = h.addMunicipality(arsMuni, "Musterdorf", 47.85, 12.12)
	w.muni2 = h.addMunicipality(arsMuni2, "Beispielstadt", 47.90, 12.20)
	w.ssc = h.onboard(&registryv1.Organisation{
		Id: "ssc-inntal", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE,
		Name: "Servicezentrum Inntal", StateCode: "09", Ars: "091870000000",
	})
	h.addService(service(leikaGewerbe, "Gewerbe-Anmeldung", []string{"Gewerbe anmelden"}, []string{"Unternehmensgründung"}))
	return w
}

// ---- state dumps ----

// dumpState returns every key and value in badger.
func dumpState(t testing.TB, db *badger.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().KeyCopy(nil))] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("dump state: %v", err)
	}
	return out
}

// Prefixes of bookkeeping keys: the applied index, and dedupe records (which
// failed commands write too).
var (
	ignoreApplied = []string{keyApplied}
	ignoreBooks   = []string{keyApplied, pCmd, pCmdExpiry}
)

// without returns d without keys starting with any of the prefixes.
func without(d map[string]string, prefixes ...string) map[string]string {
	out := maps.Clone(d)
	for k := range out {
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				delete(out, k)
				break
			}
		}
	}
	return out
}

// diffState describes the differences between two dumps ("" if equal).
func diffState(a, b map[string]string) string {
	var diffs []string
	for _, k := range slices.Sorted(maps.Keys(a)) {
		if v, ok := b[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("- %q", k))
		} else if v != a[k] {
			diffs = append(diffs, fmt.Sprintf("~ %q", k))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(b)) {
		if _, ok := a[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("+ %q", k))
		}
	}
	if len(diffs) > 20 {
		diffs = append(diffs[:20], fmt.Sprintf("... and %d more", len(diffs)-20))
	}
	return strings.Join(diffs, "\n")
}

// requireSameState fails if the dumps differ outside the ignored prefixes.
func requireSameState(t testing.TB, before, after map[string]string, ignore ...string) {
	t.Helper()
	if d := diffState(without(before, ignore...), without(after, ignore...)); d != "" {
		t.Fatalf("state changed:\n%s", d)
	}
}

// requireCode fails unless res has error code want ("" = success).
func requireCode(t testing.TB, res *registryv1.CommandResult, want string) {
	t.Helper()
	if res.GetErrorCode() != want {
		t.Fatalf("error code %q (%s), want %q", res.GetErrorCode(), res.GetErrorMessage(), want)
	}
	if want != "" && res.GetErrorMessage() == "" {
		t.Fatalf("error %q without a message", want)
	}
}

func getOrg(t testing.TB, r *Reader, id string) *registryv1.Organisation {
	t.Helper()
	o, _, err := r.Organisation(id)
	if err != nil {
		t.Fatalf("organisation %s: %v", id, err)
	}
	return o
}

func getOffering(t testing.TB, r *Reader, id string) *registryv1.Offering {
	t.Helper()
	o, _, err := r.Offering(id)
	if err != nil {
		t.Fatalf("offering %s: %v", id, err)
	}
	return o
}

func getService(t testing.TB, r *Reader, leika string) *registryv1.Service {
	t.Helper()
	s, _, err := r.Service(leika)
	if err != nil {
		t.Fatalf("service %s: %v", leika, err)
	}
	return s
}

// storedKey reports whether key is in the state r reads.
func storedKey(t testing.TB, r *Reader, key []byte) bool {
	t.Helper()
	var ok bool
	if _, err := r.view(func(st *stage) (err error) { ok, err = st.exists(key); return err }); err != nil {
		t.Fatal(err)
	}
	return ok
}

// keysWithPrefix lists the badger keys under prefix.
func keysWithPrefix(d map[string]string, prefix string) []string {
	var out []string
	for k := range d {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// providerIDs returns the offering ids FindProviders returns, in order.
func providerIDs(t testing.TB, r *Reader, leika, area string) []string {
	t.Helper()
	p, err := r.FindProviders(leika, area, 100)
	if err != nil {
		t.Fatalf("FindProviders(%s, %s): %v", leika, area, err)
	}
	var ids []string
	for _, m := range p.Matches {
		ids = append(ids, m.GetOffering().GetId())
	}
	return ids
}

// searchIDs returns the LeiKa keys SearchServices returns, in order.
func searchIDs(t testing.TB, r *Reader, text, life string, limit int) []string {
	t.Helper()
	hits, _, err := r.SearchServices(text, life, limit)
	if err != nil {
		t.Fatalf("SearchServices(%q, %q): %v", text, life, err)
	}
	var ids []string
	for _, h := range hits {
		ids = append(ids, h.Service.GetLeikaKey())
	}
	return ids
}
