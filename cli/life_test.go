package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/node/nodetest"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

var reIndex = regexp.MustCompile(`index (\d+)`)

// indexOf returns the last Raft index out mentions ("at index N").
func indexOf(t *testing.T, out string) string {
	t.Helper()
	m := reIndex.FindAllStringSubmatch(out, -1)
	if m == nil {
		t.Fatalf("no index in:\n%s", out)
	}
	return m[len(m)-1][1]
}

// mustFail runs the command line and fails the test unless it exits 1 with
// every one of want in its output.
func mustFail(t *testing.T, want []string, args ...string) {
	t.Helper()
	code, stdout, stderr := cli(t, nil, args...)
	if code != 1 {
		t.Fatalf("verbund %s: want exit 1, got %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout, stderr)
	}
	for _, w := range want {
		if !strings.Contains(stdout+stderr, w) {
			t.Errorf("verbund %s: output does not mention %q:\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), w, stdout, stderr)
		}
	}
}

// offeringFile writes a command document that puts one offering of org for
// area and returns its path.
func offeringFile(t *testing.T, dir, org, id, leika, area string) string {
	t.Helper()
	doc := fmt.Sprintf(`{"issuer": %q, "mutations": [{"putOffering": {"id": %q, "organisationId": %q, "leikaKey": %q,
  "areas": [%q], "name": "Gewerbe anmelden (%s)",
  "channels": [{"kind": "CHANNEL_KIND_ONLINE", "url": "https://%s.example/gewerbe", "available247": true}]}}]}`,
		org, id, org, leika, area, org, org)
	p := filepath.Join(dir, strings.NewReplacer(":", "_").Replace(id)+".json")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLifeOfAMunicipality walks the whole life of a municipality on an
// in-process cluster (three voters and a member reading the change feed),
// through the command line as its clerks and its approver type it, and
// checks every step on every node: init; a join request (sent through a
// follower); an approval by another state's agency refused, its own
// state's approval; publishing an offering; authorising a shared service
// centre, which then serves its citizens (FindProviders), and withdrawing
// that (the centre disappears from every node's answers); losing its key
// and the recovery by its approver (old signatures still verify in its
// history); suspension (its writes refused through every node, and
// handovers to and from a suspended organisation refused by every node);
// reinstatement.
func TestLifeOfAMunicipality(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	newTestEnv(t)
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Members: 1})
	apis := make([]string, len(c.Nodes))
	for i, m := range c.Nodes {
		apis[i] = m.API()
	}
	t.Setenv("VERBUND_ADDR", apis[0])
	dir := t.TempDir()
	d := func(name string) string { return filepath.Join(dir, name) }
	key := func(name string) string { return filepath.Join(d(name), "keys", "signing.jwk") }
	op := []string{"--key", filepath.Join(c.Nodes[0].Dir, "keys", "signing.jwk"), "--as", "test-operator"}
	by := []string{"--key", key("by"), "--as", "land-09"}
	bw := []string{"--key", key("bw"), "--as", "land-08"}
	const (
		muni  = "091840148148" // Unterhaching
		ssc   = "ssc-isar"
		leika = "99050012104000"
	)
	// onEvery checks a read on every node at (or after) Raft index idx.
	onEvery := func(idx string, want []string, args ...string) {
		t.Helper()
		for i, api := range apis {
			out := mustRun(t, append(args, "--addr", api, "--min-index", idx)...)
			for _, w := range want {
				if !strings.Contains(out, w) {
					t.Errorf("node %d: verbund %s: %q missing:\n%s", i, strings.Join(args, " "), w, out)
				}
			}
		}
	}
	// absentOnEvery checks that a read on every node does not show s.
	absentOnEvery := func(idx, s string, args ...string) {
		t.Helper()
		for i, api := range apis {
			if out := mustRun(t, append(args, "--addr", api, "--min-index", idx)...); strings.Contains(out, s) {
				t.Errorf("node %d: verbund %s shows %q:\n%s", i, strings.Join(args, " "), s, out)
			}
		}
	}

	// The federal level: two state agencies and a catalogue entry.
	for _, s := range []struct{ id, name, code, dir string }{{"land-09", "Bayern", "09", "by"}, {"land-08", "Baden-Württemberg", "08", "bw"}} {
		mustRun(t, "init", "--org", s.id, "--kind", "state-agency", "--name", s.name, "--state", s.code, "--data", d(s.dir))
		mustRun(t, append([]string{"org", "register", s.id, "--keys-from", d(s.dir), "--kind", "state-agency", "--name", s.name, "--state", s.code}, op...)...)
	}
	svc := filepath.Join(dir, "service.json")
	if err := os.WriteFile(svc, []byte(`{"issuer": "test-operator", "mutations": [{"putService": {"leikaKey": "`+leika+`", "name": "Gewerbe anmelden"}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "publish", "-f", svc, "--key", op[1])

	// Bayern lists Unterhaching (REGISTERED); it runs no node yet.
	out := mustRun(t, append([]string{"org", "list", muni, "--kind", "municipality", "--name", "Unterhaching"}, by...)...)
	onEvery(indexOf(t, out), []string{"registered", "Unterhaching"}, "orgs", "get", muni)

	// init and the join request, sent through a follower.
	mustRun(t, "init", "--org", muni, "--kind", "municipality", "--name", "Gemeinde Unterhaching", "--data", d("muni"))
	out = mustRun(t, "join", "--network", apis[2], "--data", d("muni"))
	fp := fingerprint(t, out)
	idx := indexOf(t, out)
	// Pending, with the identity Bayern listed.
	onEvery(idx, []string{"pending", "Unterhaching", fp}, "orgs", "get", muni)
	absentOnEvery(idx, "Gemeinde Unterhaching", "orgs", "get", muni)
	// Until approved it publishes nothing.
	mustFail(t, []string{"not-approved"}, "publish", "-f", offeringFile(t, dir, muni, muni+":"+leika, leika, muni), "--key", key("muni"))

	// Another state's agency may not approve it; its own does.
	mustRefuse(t, []string{"permission_denied", "land-08"}, append([]string{"org", "approve", muni, "--fingerprint", fp, "--reason", "not ours"}, bw...)...)
	onEvery(idx, []string{"pending"}, "orgs", "get", muni)
	out = mustRun(t, append([]string{"org", "approve", muni, "--fingerprint", fp, "--reason", "keys compared"}, by...)...)
	onEvery(indexOf(t, out), []string{"active", "keys compared"}, "orgs", "get", muni)

	// It publishes an offering for its own area; not for another's.
	out = mustRun(t, "publish", "-f", offeringFile(t, dir, muni, muni+":"+leika, leika, muni), "--key", key("muni"))
	onEvery(indexOf(t, out), []string{"own municipality", muni}, "providers", "--service", leika, "--area", muni)
	mustFail(t, []string{"area-responsibility"}, "publish", "-f", offeringFile(t, dir, muni, muni+":"+leika+":muc", leika, "091620000000"), "--key", key("muni"))

	// A shared service centre, registered by Bayern, may serve Unterhaching
	// only once Unterhaching authorises it.
	mustRun(t, "init", "--org", ssc, "--kind", "shared-service-centre", "--name", "Servicezentrum Isar", "--state", "09", "--data", d("ssc"))
	mustRun(t, append([]string{"org", "register", ssc, "--keys-from", d("ssc"), "--kind", "shared-service-centre", "--name", "Servicezentrum Isar", "--state", "09"}, by...)...)
	sscOffer := offeringFile(t, dir, ssc, ssc+":"+leika+":"+muni, leika, muni)
	mustFail(t, []string{"area-responsibility"}, "publish", "-f", sscOffer, "--key", key("ssc"))
	out = mustRun(t, "authorise", "grant", "--to", ssc, "--area", muni, "--service", leika, "--id", "unterhaching:ssc-isar:gewerbe",
		"--key", key("muni"), "--as", muni)
	onEvery(indexOf(t, out), []string{"unterhaching:ssc-isar:gewerbe", muni}, "authorise", "list", "--grantee", ssc)
	out = mustRun(t, "publish", "-f", sscOffer, "--key", key("ssc"))
	idx = indexOf(t, out)
	onEvery(idx, []string{"delegated", ssc}, "providers", "--service", leika, "--area", muni)
	// Its proof of responsibility checks out offline.
	onEvery(idx, []string{"verified (authorisation unterhaching:ssc-isar:gewerbe by " + muni + ")", "verified (own area)"},
		"providers", "--service", leika, "--area", muni, "--verify")
	// Withdrawn: the centre disappears from every node's answers.
	out = mustRun(t, "authorise", "withdraw", "unterhaching:ssc-isar:gewerbe", "--key", key("muni"), "--as", muni)
	idx = indexOf(t, out)
	absentOnEvery(idx, ssc, "providers", "--service", leika, "--area", muni)
	onEvery(idx, []string{muni}, "providers", "--service", leika, "--area", muni)

	// Key loss: Bayern re-binds Unterhaching to new keys. The old key
	// signs nothing any more; what it signed before still verifies.
	mustRun(t, "init", "--org", muni, "--kind", "municipality", "--name", "Gemeinde Unterhaching", "--data", d("muni-new"))
	mustRefuse(t, []string{"permission_denied"}, append([]string{"keys", "recover", muni, "--new-keys", d("muni-new"), "--reason", "lost"}, bw...)...)
	out = mustRun(t, append([]string{"keys", "recover", muni, "--new-keys", d("muni-new"), "--reason", "signing key lost"}, by...)...)
	idx = indexOf(t, out)
	offer2 := offeringFile(t, dir, muni, muni+":"+leika+":2", leika, muni)
	mustFail(t, []string{"revoked"}, "publish", "-f", offer2, "--key", key("muni"))
	mustRun(t, "publish", "-f", offer2, "--key", key("muni-new"))
	for _, api := range apis {
		out := mustRun(t, "history", muni, "--addr", api, "--min-index", idx, "--all")
		contains(t, "history on "+api, out, []string{"verified (proof of possession)", "key_recovery", "authorisation_withdrawn"})
		if strings.Contains(out, "NOT VERIFIED") {
			t.Errorf("history on %s:\n%s", api, out)
		}
	}

	// Suspension: its writes are refused through every node.
	out = mustRun(t, append([]string{"org", "suspend", muni, "--reason", "audit"}, by...)...)
	idx = indexOf(t, out)
	onEvery(idx, []string{"suspended"}, "orgs", "get", muni)
	for i, api := range apis {
		mustFail(t, []string{"suspended"}, "publish", "-f", offeringFile(t, dir, muni, muni+":"+leika+":s"+strconv.Itoa(i), leika, muni),
			"--key", key("muni-new"), "--addr", api)
	}
	// Handovers need a node of the organisation: the cluster's own
	// organisations, below.

	// Reinstated: it writes again.
	out = mustRun(t, append([]string{"org", "reinstate", muni, "--reason", "audit passed"}, by...)...)
	onEvery(indexOf(t, out), []string{"active", "audit passed"}, "orgs", "get", muni)
	out = mustRun(t, "publish", "-f", offeringFile(t, dir, muni, muni+":"+leika+":3", leika, muni), "--key", key("muni-new"))
	onEvery(indexOf(t, out), []string{muni + ":" + leika + ":3"}, "providers", "--service", leika, "--area", muni, "--limit", "100")

	// Handovers of a suspended organisation: the organisations the
	// cluster's nodes 1-3 run for (registered by the operator, which
	// approves organisations without a state). While org-n2 is suspended,
	// every node refuses handovers to it, and its own node refuses its
	// handovers, with an error naming the suspension.
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		if _, err := c.Onboard(ctx, i, "Gemeinde "+c.Nodes[i].ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitCaughtUp(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	send := func(from int, to string, n int) error {
		_, err := c.Handover(from).SendHandover(ctx, connect.NewRequest(&federationv1.SendHandoverRequest{
			RecipientOrganisationId: to, CaseJson: `{"applicant":"Erika Mustermann","subject":"Gewerbe"}`,
			Reason: "Zuständigkeit", LeikaKey: leika, IdempotencyKey: fmt.Sprintf("life-of-a-municipality-%04d", n),
		}))
		return err
	}
	if err := send(1, "org-n2", 1); err != nil {
		t.Fatalf("handover before the suspension: %v", err)
	}
	out = mustRun(t, append([]string{"org", "suspend", "org-n2", "--reason", "audit"}, op...)...)
	onEvery(indexOf(t, out), []string{"suspended"}, "orgs", "get", "org-n2")
	for _, from := range []int{0, 1, 3} {
		if err := send(from, "org-n2", 10+from); err == nil || !strings.Contains(err.Error(), "SUSPENDED") {
			t.Errorf("node %d: handover to the suspended org-n2: %v, want a refusal naming the suspension", from, err)
		}
	}
	if err := send(2, "org-n1", 20); err == nil || !strings.Contains(err.Error(), "SUSPENDED") {
		t.Errorf("handover of the suspended org-n2: %v, want a refusal naming the suspension", err)
	}
	out = mustRun(t, append([]string{"org", "reinstate", "org-n2", "--reason", "audit passed"}, op...)...)
	onEvery(indexOf(t, out), []string{"active"}, "orgs", "get", "org-n2")
	if err := send(1, "org-n2", 30); err != nil {
		t.Errorf("handover after the reinstatement: %v", err)
	}
	if err := send(2, "org-n1", 31); err != nil {
		t.Errorf("handover of org-n2 after the reinstatement: %v", err)
	}
}
