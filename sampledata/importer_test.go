package sampledata

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

const testOperator = "verbund-operator"

var (
	testOperatorKey = keys.SigningFromSeed("op-sig-1", make([]byte, 32))
	testMunichKey   = testKey(MunichARS)
)

// testKey is a sample organisation's deterministic test key.
func testKey(id string) jose.JSONWebKey {
	seed := sha256.Sum256([]byte(id))
	return keys.SigningFromSeed(id+"-sig-1", seed[:])
}

// testKeys is a KeySource of deterministic test keys.
func testKeys(id string) (jose.JSONWebKey, error) { return testKey(id), nil }

// fakeNode is an in-memory Publisher that behaves like the registry as far
// as the importer can tell: it verifies every JWS against the issuer's
// registered key, applies each command id once per issuer and answers
// "duplicate" for ids it has seen.
type fakeNode struct {
	t  *testing.T
	mu sync.Mutex

	keys    map[string]jose.JSONWebKey // issuer -> public signing key
	results map[string]*registryv1.CommandResult
	index   uint64

	orgs      map[string]*registryv1.Organisation
	applied   map[string]int    // record -> times applied
	signer    map[string]string // record -> kid that signed it
	ids       []string          // command ids in order of first application
	calls     int
	failFrom  int                  // calls >= failFrom fail with Internal (0: never)
	lostReply map[int]bool         // calls that are applied but answered Unavailable
	refuse    map[int]string       // calls refused with this error code
	unavail   map[int]int          // calls failing with Unavailable before reaching the log, n times
	unavailN  map[int]int          // attempts seen per call number
	before    func(call int) error // optional hook
	// sameIDRule: like the registry, a command id used before for other
	// content (the issue time left out) is refused with already_exists.
	sameIDRule bool
	payloads   map[string][]byte // issuer/id -> registry.CommandDigest of the first use
}

func newFakeNode(t *testing.T) *fakeNode {
	return &fakeNode{
		t:         t,
		keys:      map[string]jose.JSONWebKey{testOperator: testOperatorKey.Public()},
		results:   map[string]*registryv1.CommandResult{},
		orgs:      map[string]*registryv1.Organisation{},
		applied:   map[string]int{},
		signer:    map[string]string{},
		lostReply: map[int]bool{},
		refuse:    map[int]string{},
	}
}

func (f *fakeNode) Publish(ctx context.Context, signed []string) (*registryv1.PublishResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	call := f.calls
	f.calls++
	if f.failFrom > 0 && call >= f.failFrom {
		return nil, connect.NewError(connect.CodeInternal, errors.New("node crashed"))
	}
	resp := &registryv1.PublishResponse{}
	for _, raw := range signed {
		resp.Results = append(resp.Results, f.apply(raw, call))
	}
	resp.Index = f.index
	if f.lostReply[call] {
		delete(f.lostReply, call)
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("leader lost after commit"))
	}
	return resp, nil
}

func (f *fakeNode) apply(raw string, call int) *registryv1.CommandResult {
	sc, err := registry.ParseCommand(raw)
	if err != nil {
		f.t.Errorf("call %d: unparsable command: %v", call, err)
		return &registryv1.CommandResult{ErrorCode: registry.ErrorCode(err), ErrorMessage: err.Error()}
	}
	cmd := sc.Command
	key := cmd.GetIssuer() + "/" + cmd.GetId()
	if f.sameIDRule {
		payload, err := registry.CommandDigest(cmd)
		if err != nil {
			f.t.Fatal(err)
		}
		if f.payloads == nil {
			f.payloads = map[string][]byte{}
		}
		if p, ok := f.payloads[key]; ok && !bytes.Equal(p, payload) {
			return &registryv1.CommandResult{CommandId: cmd.GetId(), Index: f.results[key].GetIndex(),
				ErrorCode: registry.CodeAlreadyExists, ErrorMessage: "command id used before for other content"}
		} else if !ok {
			f.payloads[key] = payload
		}
	}
	if prev := f.results[key]; prev != nil {
		dup := proto.Clone(prev).(*registryv1.CommandResult)
		dup.Duplicate = true
		return dup
	}
	f.index++
	res := &registryv1.CommandResult{CommandId: cmd.GetId(), Index: f.index}
	if code := f.refuse[call]; code != "" {
		res.ErrorCode, res.ErrorMessage = code, "refused by test"
		f.results[key] = res
		return res
	}
	pub, ok := f.keys[cmd.GetIssuer()]
	if muts := cmd.GetMutations(); len(muts) == 1 && muts[0].GetRequestJoin() != nil {
		// Proof of possession: verified against the key in the request.
		for _, k := range muts[0].GetRequestJoin().GetKeys() {
			if k.GetUse() == keys.UseSig {
				jwk, err := keys.ParsePublic(k)
				if err != nil {
					f.t.Errorf("join request key: %v", err)
				}
				pub, ok = jwk, true
			}
		}
	}
	if !ok {
		res.ErrorCode, res.ErrorMessage = registry.CodeUnknownKey, "issuer has no key: "+cmd.GetIssuer()
		f.results[key] = res
		return res
	}
	if err := sc.Verify(pub); err != nil {
		res.ErrorCode, res.ErrorMessage = registry.CodeInvalidSignature, err.Error()
		f.results[key] = res
		return res
	}
	isOp := cmd.GetIssuer() == testOperator
	register := func(o *registryv1.Organisation) {
		for _, k := range o.GetKeys() {
			if k.GetStatus() == registryv1.KeyStatus_KEY_STATUS_ACTIVE && k.GetUse() == keys.UseSig {
				jwk, err := keys.ParsePublic(k)
				if err != nil {
					f.t.Errorf("organisation %s: key: %v", o.GetId(), err)
				}
				f.keys[o.GetId()] = jwk
			}
		}
	}
	for _, m := range cmd.GetMutations() {
		var rec string
		switch op := m.GetOp().(type) {
		case *registryv1.Mutation_PutOrganisation:
			o := op.PutOrganisation
			rec = "org/" + o.GetId()
			// The governance rules as far as the importer can tell: the
			// operator registers the state agencies, each state agency its
			// state's organisations.
			switch {
			case o.GetKind() == registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY:
				if !isOp {
					f.t.Errorf("state agency %s registered by %s", o.GetId(), cmd.GetIssuer())
				}
			case cmd.GetIssuer() != StateID(o.GetStateCode()):
				f.t.Errorf("organisation %s of state %s registered by %s", o.GetId(), o.GetStateCode(), cmd.GetIssuer())
			}
			if o.GetId() == MunichARS {
				f.t.Errorf("Munich listed by %s: it joins", cmd.GetIssuer())
			}
			f.orgs[o.GetId()] = o
			if o.GetStatus() == registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE {
				register(o)
			}
		case *registryv1.Mutation_RequestJoin:
			o := proto.Clone(op.RequestJoin).(*registryv1.Organisation)
			rec = "join/" + o.GetId()
			if o.GetId() != cmd.GetIssuer() {
				f.t.Errorf("join request for %s signed by %s", o.GetId(), cmd.GetIssuer())
			}
			o.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_PENDING
			f.orgs[o.GetId()] = o
		case *registryv1.Mutation_ChangeStatus:
			c := op.ChangeStatus
			rec = "status/" + c.GetOrganisationId()
			o := f.orgs[c.GetOrganisationId()]
			if o.GetStatus() != registryv1.OrganisationStatus_ORGANISATION_STATUS_PENDING {
				f.t.Errorf("approval of %s in status %v", c.GetOrganisationId(), o.GetStatus())
			}
			if cmd.GetIssuer() != StateID(o.GetStateCode()) || c.GetReason() == "" || c.GetKeysSha256() != registry.KeysDigest(o.GetKeys()) {
				f.t.Errorf("approval of %s by %s: %v", o.GetId(), cmd.GetIssuer(), c)
			}
			o.Status = c.GetStatus()
			register(o)
		case *registryv1.Mutation_PutAuthorisation:
			a := op.PutAuthorisation
			rec = "auth/" + a.GetId()
			if a.GetGrantorId() != cmd.GetIssuer() || f.orgs[a.GetGranteeId()] == nil {
				f.t.Errorf("authorisation %v signed by %s", a, cmd.GetIssuer())
			}
			if m := f.orgs[a.GetOnBehalfOf()]; m.GetStatus() == registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE {
				f.t.Errorf("authorisation on behalf of %s, which has joined", a.GetOnBehalfOf())
			}
		case *registryv1.Mutation_PutService:
			rec = "svc/" + op.PutService.GetLeikaKey()
			if !isOp {
				f.t.Errorf("service %s signed by %s", op.PutService.GetLeikaKey(), cmd.GetIssuer())
			}
		case *registryv1.Mutation_PutOffering:
			o := op.PutOffering
			rec = "off/" + o.GetId()
			if o.GetOrganisationId() != cmd.GetIssuer() {
				f.t.Errorf("offering %s of %s signed by %s", o.GetId(), o.GetOrganisationId(), cmd.GetIssuer())
			}
		case *registryv1.Mutation_PutNextSteps:
			rec = "next/" + op.PutNextSteps.GetId()
			if !isOp {
				f.t.Errorf("next steps %s signed by %s", op.PutNextSteps.GetId(), cmd.GetIssuer())
			}
		default:
			f.t.Errorf("unexpected mutation %T", op)
		}
		f.applied[rec]++
		f.signer[rec] = sc.KID
	}
	f.ids = append(f.ids, cmd.GetId())
	f.results[key] = res
	return res
}

// expectedRecords lists every record the import must write.
func expectedRecords(t *testing.T) map[string]bool {
	want := map[string]bool{}
	for id := range allOrgs(t) {
		if id != MunichARS {
			want["org/"+id] = true
		}
	}
	want["join/"+MunichARS], want["status/"+MunichARS] = true, true
	want["org/"+SSCID], want["auth/"+DelegationID] = true, true
	want["off/"+SSCID+":"+DelegatedLeiKa+":"+DelegatedARS] = true
	services, offerings := mustMunich(t)
	for _, s := range services {
		want["svc/"+s.GetLeikaKey()] = true
	}
	for _, o := range offerings {
		want["off/"+o.GetId()] = true
	}
	for _, s := range CatalogueAdditions() {
		want["svc/"+s.GetLeikaKey()] = true
	}
	for _, n := range DefaultNextSteps() {
		want["next/"+n.GetId()] = true
	}
	return want
}

func testOptions(onProgress func(Progress)) Options {
	return Options{
		OperatorID: testOperator, OperatorKey: testOperatorKey, Keys: testKeys,
		BatchSize: 400, Parallel: 3, OnProgress: onProgress, RetryBackoff: 1,
	}
}

func (f *fakeNode) checkAppliedOnce(t *testing.T, want map[string]bool) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for rec := range want {
		if n := f.applied[rec]; n != 1 {
			t.Errorf("%s applied %d times", rec, n)
		}
	}
	for rec := range f.applied {
		if !want[rec] {
			t.Errorf("unexpected record %s", rec)
		}
	}
}

func TestImport(t *testing.T) {
	node := newFakeNode(t)
	want := expectedRecords(t)
	var progress []Progress
	sum, err := Import(context.Background(), node, testOptions(func(p Progress) { progress = append(progress, p) }))
	if err != nil {
		t.Fatal(err)
	}
	node.checkAppliedOnce(t, want)
	if sum.Records != len(want) || sum.Applied != len(want) || sum.Duplicates != 0 || sum.LastIndex != node.index || sum.Commands != len(node.ids) {
		t.Errorf("summary %+v; %d records, %d commands, index %d", sum, len(want), len(node.ids), node.index)
	}
	t.Logf("first run: %d records in %d commands, %v", sum.Records, sum.Commands, sum.Elapsed)
	var phases []string
	for _, p := range sum.Phases {
		phases = append(phases, fmt.Sprintf("%s:%d/%d", p.Phase, p.Records, p.Commands))
	}
	t.Logf("phases: %v", phases)

	// Signers: state agencies and services by the operator, the other
	// organisations by their state's agency, Munich's join request and
	// offerings by Munich, its approval and the delegation by Bayern.
	for rec, kid := range node.signer {
		kind, id, _ := strings.Cut(rec, "/")
		wantKID := testOperatorKey.KeyID
		switch {
		case kind == "org" && node.orgs[id].GetKind() != registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY:
			wantKID = testKey(StateID(node.orgs[id].GetStateCode())).KeyID
		case kind == "join" || (kind == "off" && !strings.HasPrefix(id, SSCID)):
			wantKID = testMunichKey.KeyID
		case kind == "status" || kind == "auth":
			wantKID = testKey("land-09").KeyID
		case kind == "off":
			wantKID = testKey(SSCID).KeyID
		}
		if kid != wantKID {
			t.Errorf("%s signed with %s, want %s", rec, kid, wantKID)
		}
	}
	m := node.orgs[MunichARS]
	if m.GetStatus() != registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE || len(m.GetKeys()) != 1 || m.GetKeys()[0].GetKid() != testMunichKey.KeyID {
		t.Errorf("Munich: %v", m)
	}
	for _, o := range node.orgs {
		active := o.GetStatus() == registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE
		if want := o.GetKind() == registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY || o.GetId() == MunichARS || o.GetId() == SSCID; active != want {
			t.Errorf("%s (%v) is %v", o.GetId(), o.GetKind(), o.GetStatus())
		}
	}
	reID := regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)
	for _, id := range node.ids {
		if !reID.MatchString(id) {
			t.Errorf("command id %q", id)
		}
	}

	// Progress: a start and one report per command for every phase; Done
	// grows to Total.
	if len(progress) != sum.Commands+len(sum.Phases) {
		t.Errorf("%d progress reports for %d commands in %d phases", len(progress), sum.Commands, len(sum.Phases))
	}
	last := map[string]Progress{}
	for _, p := range progress {
		if prev, ok := last[p.Phase]; ok && p.Done <= prev.Done {
			t.Errorf("progress went from %+v to %+v", prev, p)
		}
		last[p.Phase] = p
	}
	for _, ps := range sum.Phases {
		if p := last[ps.Phase]; p.Done != p.Total || p.Total != ps.Records {
			t.Errorf("phase %s ended at %+v, want %d", ps.Phase, p, ps.Records)
		}
	}

	// A second run is all duplicates and applies nothing.
	before := len(node.ids)
	sum2, err := Import(context.Background(), node, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	if sum2.Applied != 0 || sum2.Duplicates != len(want) || len(node.ids) != before {
		t.Errorf("second run: %+v, %d new commands", sum2, len(node.ids)-before)
	}
	node.checkAppliedOnce(t, want)
}

func TestImportResume(t *testing.T) {
	want := expectedRecords(t)
	for _, failFrom := range []int{1, 7, 33, 36} {
		t.Run(fmt.Sprint(failFrom), func(t *testing.T) {
			node := newFakeNode(t)
			node.failFrom = failFrom
			sum, err := Import(context.Background(), node, testOptions(nil))
			var be *BatchError
			if !errors.As(err, &be) || connect.CodeOf(err) != connect.CodeInternal || be.Phase == "" {
				t.Fatalf("interrupted import: %v", err)
			}
			if sum.Applied == len(want) {
				t.Errorf("summary after crash: %+v", sum)
			}
			applied := len(node.ids)
			node.failFrom = 0
			sum2, err := Import(context.Background(), node, testOptions(nil))
			if err != nil {
				t.Fatal(err)
			}
			node.checkAppliedOnce(t, want)
			if sum2.Duplicates == 0 && applied > 0 {
				t.Errorf("resume after %d applied commands reported no duplicates: %+v", applied, sum2)
			}
			if sum.Applied+sum2.Applied != len(want) {
				t.Errorf("applied %d + %d, want %d", sum.Applied, sum2.Applied, len(want))
			}
		})
	}
}

// TestImportResumeAfterSameIDRule: a later run signs the same commands
// with a new issue time; the registry (which refuses a command id used for
// other content) compares without the issue time, so the resumed run gets
// duplicates and finishes.
func TestImportResumeAfterSameIDRule(t *testing.T) {
	node := newFakeNode(t)
	node.sameIDRule = true
	node.failFrom = 20
	if _, err := Import(context.Background(), node, testOptions(nil)); err == nil {
		t.Fatal("interrupted import succeeded")
	}
	node.failFrom = 0
	time.Sleep(2 * time.Millisecond) // another issue time
	sum, err := Import(context.Background(), node, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	node.checkAppliedOnce(t, expectedRecords(t))
	if sum.Duplicates == 0 {
		t.Errorf("resume counted no duplicates: %+v", sum)
	}
}

func TestImportRetriesTransientErrors(t *testing.T) {
	node := newFakeNode(t)
	// Calls 2 and 5 are committed but their replies are lost: the retry
	// gets "duplicate".
	node.lostReply[2], node.lostReply[5] = true, true
	sum, err := Import(context.Background(), node, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	node.checkAppliedOnce(t, expectedRecords(t))
	if sum.Duplicates == 0 {
		t.Errorf("retried commands not counted as duplicates: %+v", sum)
	}
}

func TestImportStopsOnRefusal(t *testing.T) {
	node := newFakeNode(t)
	node.refuse[3] = registry.CodePermissionDenied
	_, err := Import(context.Background(), node, testOptions(nil))
	var be *BatchError
	if !errors.As(err, &be) || be.Code != registry.CodePermissionDenied || !errors.Is(err, registry.ErrPermissionDenied) || be.CommandID == "" {
		t.Fatalf("refused command: %v", err)
	}
	t.Logf("error: %v", err)
	// The refusal is remembered by the registry: a re-run stops again.
	_, err = Import(context.Background(), node, testOptions(nil))
	if !errors.Is(err, registry.ErrPermissionDenied) {
		t.Fatalf("re-run after refusal: %v", err)
	}
}

// flaky fails every call with Unavailable.
type flaky struct{ calls int }

func (f *flaky) Publish(ctx context.Context, _ []string) (*registryv1.PublishResponse, error) {
	f.calls++
	return nil, connect.NewError(connect.CodeUnavailable, errors.New("no leader"))
}

func TestImportGivesUpAfterFiveTries(t *testing.T) {
	f := &flaky{}
	opt := testOptions(nil)
	opt.Parallel = 1
	_, err := Import(context.Background(), f, opt)
	if connect.CodeOf(err) != connect.CodeUnavailable || f.calls != 5 {
		t.Fatalf("err %v after %d calls", err, f.calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Import(ctx, newFakeNode(t), opt); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled import: %v", err)
	}
}

func TestImportOptions(t *testing.T) {
	for name, opt := range map[string]Options{
		"operator id":  {OperatorID: "Not An Id", OperatorKey: testOperatorKey, Keys: testKeys},
		"operator key": {OperatorID: testOperator, OperatorKey: testOperatorKey.Public(), Keys: testKeys},
		"no keys":      {OperatorID: testOperator, OperatorKey: testOperatorKey},
		"public key": {OperatorID: testOperator, OperatorKey: testOperatorKey, Keys: func(id string) (jose.JSONWebKey, error) {
			k := testKey(id)
			return k.Public(), nil
		}},
	} {
		if _, err := Import(context.Background(), newFakeNode(t), opt); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestCommandIDsDeterministic: the same data yields the same ids, and the
// ids depend on the content.
func TestCommandIDsDeterministic(t *testing.T) {
	a, err := plan(testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	b, err := plan(testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i := range a {
		for j := range a[i].batches {
			id := a[i].batches[j].id
			if id != b[i].batches[j].id {
				t.Errorf("%s batch %d: ids %s, %s", a[i].name, j, id, b[i].batches[j].id)
			}
			if seen[id] {
				t.Errorf("id %s used twice", id)
			}
			seen[id] = true
		}
	}
	// A different Munich key changes Munich's join request and its
	// approval (the keys' digest), but not the other phases' contents
	// (the offerings' ids stay; only their signature changes).
	opt := testOptions(nil)
	opt.Keys = func(id string) (jose.JSONWebKey, error) {
		if id == MunichARS {
			return keys.SigningFromSeed("muc-sig-2", append(make([]byte, 31), 2)), nil
		}
		return testKey(id), nil
	}
	c, err := plan(opt)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		same := a[i].batches[0].id == c[i].batches[0].id
		if same != (a[i].name != PhaseMunichJoin && a[i].name != PhaseMunichApproval) {
			t.Errorf("phase %s: id changed=%v", a[i].name, !same)
		}
	}
	// Commands stay well under the registry's size limit.
	for _, ph := range a {
		for _, bt := range ph.batches {
			if bt.bytes > maxBatchBytes || len(bt.muts) > 400 {
				t.Errorf("%s batch %d: %d mutations, %d bytes", ph.name, bt.num, len(bt.muts), bt.bytes)
			}
		}
	}
}

func TestMakeBatchesCutsBySize(t *testing.T) {
	var muts []*registryv1.Mutation
	for i := range 10 {
		s := &registryv1.Service{LeikaKey: fmt.Sprintf("99%012d", i), Name: "x", Description: strings.Repeat("a", 60<<10)}
		muts = append(muts, &registryv1.Mutation{Op: &registryv1.Mutation_PutService{PutService: s}})
	}
	ph, err := makeBatches("test", testOperator, muts, 500)
	if err != nil {
		t.Fatal(err)
	}
	if len(ph.batches) != 3 || len(ph.batches[0].muts) != 4 || len(ph.batches[2].muts) != 2 {
		t.Errorf("%d batches", len(ph.batches))
	}
	ph2, _ := makeBatches("test", testOperator, muts, 3)
	if len(ph2.batches) != 4 || ph2.batches[0].id == ph.batches[0].id {
		t.Errorf("%d batches of 3", len(ph2.batches))
	}
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"unavailable over the wire", connect.NewError(connect.CodeUnavailable, errors.New("no leader")), true},
		{"outcome unknown over the wire", connect.NewError(connect.CodeUnknown, errors.New("outcome unknown: leadership lost")), true},
		{"deadline", connect.NewError(connect.CodeDeadlineExceeded, errors.New("slow")), true},
		{"outcome unknown in process", fmt.Errorf("publish: %w", registry.ErrIndeterminate), true},
		{"internal", connect.NewError(connect.CodeInternal, errors.New("node crashed")), false},
		{"permission", connect.NewError(connect.CodePermissionDenied, errors.New("no")), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryable(tc.err); got != tc.want {
				t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
