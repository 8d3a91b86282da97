package registry

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// history returns every history entry of org, read page by page.
func history(t testing.TB, r *Reader, org string, pageSize int) []*registryv1.HistoryEntry {
	t.Helper()
	var out []*registryv1.HistoryEntry
	token := ""
	for {
		page, next, _, err := r.History(org, pageSize, token)
		if err != nil {
			t.Fatalf("History(%s): %v", org, err)
		}
		out = append(out, page...)
		if next == "" {
			return out
		}
		token = next
	}
}

func changesOf(es []*registryv1.HistoryEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.GetChange()+" "+e.GetSubject())
	}
	return out
}

func TestHistoryRecordsChangesWithTheirCommands(t *testing.T) {
	w := newWorld(t)
	off := w.addOffering(w.muni, leikaGewerbe, arsMuni)
	rev0 := getOffering(t, w.r, off.GetId()).GetRevision()

	// A put that changes nothing leaves no trace: no entry, no command kept.
	noop := w.cmd(w.muni, mPutOffering(off))
	w.mustApply(signCmd(t, noop, w.muni.key))
	if _, _, _, err := w.r.Command(w.muni.id(), noop.GetId()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Command(no-op) = %v, want ErrNotFound", err)
	}

	changed := proto.Clone(off).(*registryv1.Offering)
	changed.Name = "Gewerbe anmelden in Musterdorf"
	upd := w.cmd(w.muni, mPutOffering(changed))
	upd.Actor = "Erika Muster (node-1)"
	// The same content put again in the same log entry (group commit): the
	// first command made the change and keeps the entry.
	w.mustApply(signCmd(t, upd, w.muni.key), w.signed(w.muni, mPutOffering(changed)))

	// A deletion and a new offering of the same organisation in one log
	// entry (group commit): both recorded, in log order.
	del := w.signed(w.muni, mDeleteOffering(off.GetId()))
	second := offering(w.muni.id(), leikaGewerbe, arsMuni)
	second.Id += ":2"
	w.mustApply(del, w.signed(w.muni, mPutOffering(second)))

	got := history(t, w.r, w.muni.id(), 2)
	want := []string{
		"organisation " + arsMuni,
		"offering " + off.GetId(),
		"offering " + off.GetId(),
		"offering_deleted " + off.GetId(),
		"offering " + second.GetId(),
	}
	if !slices.Equal(changesOf(got), want) {
		t.Fatalf("history = %q, want %q", changesOf(got), want)
	}
	if s := got[1].GetSummary(); s != "published offering "+off.GetId()+" ("+leikaGewerbe+") for "+arsMuni {
		t.Errorf("summary of the publication = %q", s)
	}
	if s := got[2].GetSummary(); !strings.HasPrefix(s, "changed offering") {
		t.Errorf("summary of the change = %q", s)
	}
	if s := got[3].GetSummary(); !strings.HasPrefix(s, "deleted offering "+off.GetId()) {
		t.Errorf("summary of the deletion = %q", s)
	}
	if got[1].GetRevision() != rev0 || got[3].GetRevision() != 0 {
		t.Errorf("revisions %d, %d; want %d (the offering's) and 0 (a deletion)", got[1].GetRevision(), got[3].GetRevision(), rev0)
	}
	for i := 1; i < len(got); i++ {
		if got[i].GetIndex() < got[i-1].GetIndex() {
			t.Errorf("entry %d at index %d after index %d", i, got[i].GetIndex(), got[i-1].GetIndex())
		}
	}
	e := got[2]
	if e.GetIssuer() != w.muni.id() || e.GetCommandId() != upd.GetId() || e.GetKid() != w.muni.key.KeyID ||
		e.GetActor() != upd.GetActor() || e.GetIssuedAtUnixMs() != upd.GetIssuedAtUnixMs() {
		t.Errorf("entry %v does not name the command %s by %s (%s, %q)", e, upd.GetId(), w.muni.id(), w.muni.key.KeyID, upd.GetActor())
	}

	// Every entry's command is kept as signed, and verifies.
	for _, e := range got {
		raw, idx, _, err := w.r.Command(e.GetIssuer(), e.GetCommandId())
		if err != nil {
			t.Fatalf("Command(%s, %s): %v", e.GetIssuer(), e.GetCommandId(), err)
		}
		if idx != e.GetIndex() {
			t.Errorf("command %s applied at %d, history says %d", e.GetCommandId(), idx, e.GetIndex())
		}
		sc, err := ParseCommand(raw)
		if err != nil {
			t.Fatal(err)
		}
		var signer *testOrg
		for _, o := range []*testOrg{w.op, w.state, w.muni} {
			if o.id() == e.GetIssuer() {
				signer = o
			}
		}
		if err := sc.Verify(signer.key.Public()); err != nil || sc.Command.GetId() != e.GetCommandId() {
			t.Errorf("command %s: %v (id %s)", e.GetCommandId(), err, sc.Command.GetId())
		}
	}

	// The service entry concerns no organisation; the other municipality
	// has only its registration.
	if h := history(t, w.r, w.muni2.id(), 100); len(h) != 1 {
		t.Errorf("history of %s = %q, want its registration only", w.muni2.id(), changesOf(h))
	}
	// Same history on a replica that applied the logs one at a time.
	w.fork()
}

func TestHistoryOrganisationSummaries(t *testing.T) {
	w := newWorld(t)
	rec := w.ssc.clone()
	rec.Name = "Servicezentrum Inntal-Chiemgau"
	rec.ApiEndpoint = "https://ssc.example.org"
	w.mustApply(w.signed(w.ssc, mPutOrg(rec)))
	got := history(t, w.r, w.ssc.id(), 100)
	if len(got) != 2 {
		t.Fatalf("history = %q, want registration and change", changesOf(got))
	}
	if s := got[0].GetSummary(); !strings.Contains(s, "registered shared service centre") || !strings.Contains(s, w.ssc.key.KeyID) {
		t.Errorf("registration summary = %q", s)
	}
	if s := got[1].GetSummary(); !strings.Contains(s, `name "Servicezentrum Inntal" → "Servicezentrum Inntal-Chiemgau"`) ||
		!strings.Contains(s, `endpoint "" → "https://ssc.example.org"`) {
		t.Errorf("change summary = %q", s)
	}
}

func TestHistoryAndCommandInput(t *testing.T) {
	w := newWorld(t)
	if _, _, _, err := w.r.History("Not An Id", 0, ""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("History(bad id) = %v", err)
	}
	if _, _, _, err := w.r.History(arsMuni, 1001, ""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("History(page 1001) = %v", err)
	}
	if _, _, _, err := w.r.History(arsMuni, 0, "!!"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("History(bad token) = %v", err)
	}
	if _, _, _, err := w.r.Command(arsMuni, "short"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Command(bad id) = %v", err)
	}
	if _, _, _, err := w.r.Command(arsMuni, NewCommandID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Command(unknown) = %v", err)
	}
}

// entriesFor returns the entries of org whose change is one of kinds.
func entriesFor(t *testing.T, r *Reader, org string, kinds ...string) []*registryv1.HistoryEntry {
	t.Helper()
	var out []*registryv1.HistoryEntry
	for _, e := range history(t, r, org, 100) {
		if slices.Contains(kinds, e.GetChange()) {
			out = append(out, e)
		}
	}
	return out
}

func TestHistoryGovernance(t *testing.T) {
	g := newGovWorld(t)

	// Join and approval, signed by the municipality and its state agency.
	g.approveJoiner()
	es := entriesFor(t, g.r, arsJoiner, "join_request", "status")
	if len(es) != 2 {
		t.Fatalf("joiner history = %q", changesOf(history(t, g.r, arsJoiner, 100)))
	}
	if s := es[0].GetSummary(); es[0].GetIssuer() != arsJoiner || !strings.HasPrefix(s, "join request: new → PENDING; keys "+g.joiner.key.KeyID) {
		t.Errorf("join request entry %v", es[0])
	}
	if e := es[1]; e.GetIssuer() != g.state.id() || e.GetKid() != g.state.key.KeyID || e.GetSummary() != "PENDING → ACTIVE: geprüft" ||
		e.GetRevision() != getOrg(t, g.r, arsJoiner).GetRevision() {
		t.Errorf("approval entry %v", e)
	}

	// Suspension and key recovery.
	g.mustApply(g.signed(g.state, mChangeStatus(arsJoiner, stSuspended, "Missbrauch gemeldet", "")))
	_, pk := newSigningKey(t, "neudorf-neu")
	g.mustApply(g.signed(g.state, mRecoverKeys(arsJoiner, "Schlüssel verloren", pk)))
	es = entriesFor(t, g.r, arsJoiner, "status", "key_recovery")
	if len(es) != 3 || es[1].GetSummary() != "ACTIVE → SUSPENDED: Missbrauch gemeldet" {
		t.Fatalf("entries %v", es)
	}
	if s := es[2].GetSummary(); !strings.Contains(s, "key "+g.joiner.key.KeyID+" ACTIVE → REVOKED") ||
		!strings.Contains(s, "key "+pk.GetKid()+" (sig) added") || !strings.HasSuffix(s, "reason: Schlüssel verloren") {
		t.Errorf("key recovery summary %q", s)
	}

	// A grant on behalf of the listed municipality concerns the district,
	// the centre and the municipality; so does its withdrawal by the
	// municipality once it joined.
	g.grantOnBehalfAndJoin()
	const id = "091870000000:ssc-inntal:listed"
	g.mustApply(g.signed(g.listed, mWithdrawAuth(id)))
	for _, org := range []string{g.district.id(), g.ssc.id(), arsListed} {
		es := entriesFor(t, g.r, org, "authorisation", "authorisation_withdrawn")
		if len(es) != 2 || es[0].GetSubject() != id || es[1].GetSubject() != id {
			t.Fatalf("authorisation history of %s = %q", org, changesOf(es))
		}
		if s := es[0].GetSummary(); s != "granted authorisation "+id+": 091870000000 entitles ssc-inntal to offer every service for "+arsListed+" on behalf of "+arsListed {
			t.Errorf("grant summary %q", s)
		}
		if e := es[1]; e.GetIssuer() != arsListed || e.GetRevision() != 0 || !strings.HasPrefix(e.GetSummary(), "withdrew authorisation "+id) {
			t.Errorf("withdrawal entry %v", e)
		}
	}
	if es := entriesFor(t, g.r, arsListed, "join_request"); len(es) != 1 || !strings.HasPrefix(es[0].GetSummary(), "join request: REGISTERED → PENDING") {
		t.Errorf("listed join request %v", es)
	}
	g.fork()
}
