package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/sampledata"
	"github.com/verbund/verbund/sampledata/catalogue"
)

// startDev runs "verbund dev" (one node, the network operator, the sample
// data loaded) in this process until the test ends; it returns the API URL
// and the data dir.
func startDev(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, &Env{Stdout: out, Stderr: errOut}, commands,
			[]string{"dev", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("dev did not stop")
		}
	})
	deadline := time.After(3 * time.Minute)
	for !strings.Contains(out.String(), "Stop with Ctrl-C.") {
		select {
		case code := <-done:
			t.Fatalf("dev exited with %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		case <-deadline:
			t.Fatalf("dev did not start\nstdout:\n%s\nstderr:\n%s", out, errOut)
		case <-time.After(50 * time.Millisecond):
		}
	}
	api := regexp.MustCompile(`API \(Connect, gRPC, gRPC-Web\): (\S+)`).FindStringSubmatch(out.String())
	if api == nil {
		t.Fatalf("no API address in:\n%s", out)
	}
	return api[1], dir
}

// munichOfferings lists Munich's offerings, linearizable.
func munichOfferings(t *testing.T, q registryv1connect.QueryServiceClient) map[string]*registryv1.Offering {
	t.Helper()
	m := map[string]*registryv1.Offering{}
	token := ""
	for {
		res, err := q.ListOfferings(context.Background(), connect.NewRequest(&registryv1.ListOfferingsRequest{OrganisationId: sampledata.MunichARS,
			PageSize: 50, PageToken: token, Read: &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}}))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range res.Msg.GetOfferings() {
			if m[o.GetId()] != nil {
				t.Fatalf("offering %s listed twice", o.GetId())
			}
			m[o.GetId()] = o
		}
		if token = res.Msg.GetNextPageToken(); token == "" {
			return m
		}
	}
}

func withoutMeta(o *registryv1.Offering) *registryv1.Offering {
	c := proto.Clone(o).(*registryv1.Offering)
	c.Revision, c.UpdatedAtUnixMs, c.UpdatedBy, c.CommandId = 0, 0, "", ""
	return c
}

// failingPublisher passes the first ok calls to the node, then fails as a
// cut connection would.
type failingPublisher struct {
	next  catalogue.Publisher
	ok    int
	calls int
}

func (f *failingPublisher) Publish(ctx context.Context, signed []string) (*registryv1.PublishResponse, error) {
	f.calls++
	if f.calls > f.ok {
		return nil, errors.New("read tcp: connection reset by peer")
	}
	return f.next.Publish(ctx, signed)
}

// TestImportOwnCatalogue imports Munich's own catalogue into a node with
// the sample data: another city's DLDB export with the type variants,
// XZuFi JSON and CSV, each record reported; a dry run changes nothing; a
// re-run changes nothing; only explicit deletions delete; an interrupted
// import resumes without duplicates; an export reads back unchanged.
func TestImportOwnCatalogue(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node with the sample data")
	}
	newTestEnv(t)
	api, dataDir := startDev(t)
	t.Setenv("VERBUND_ADDR", api)
	muc := sampledata.MunichARS
	key := filepath.Join(dataDir, "keys", "sample", muc+".jwk")
	as := []string{"--as", muc, "--key", key}
	q := (&clientOpts{addr: api, timeout: 30 * time.Second}).query() // waits out the rate limit
	tmp := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sample := munichOfferings(t, q)
	t.Logf("Munich has %d offerings from the sample data", len(sample))

	// 1. Another city's DLDB export: dry run, then for real, then again.
	dldb := []string{"import", "../sampledata/catalogue/testdata/musterstadt_services_de.json", "../sampledata/catalogue/testdata/musterstadt_locations_de.json"}
	start := time.Now()
	out := mustRun(t, append(append(dldb, as...), "--dry-run")...)
	contains(t, "DLDB dry run", out, []string{
		"missing LeiKa key: DLDB service 9000003", "missing LeiKa key: DLDB service 9000004", "malformed field",
		"7 entries for " + muc + ": 2 new, 2 changed, 0 unchanged, 3 refused, 0 to delete",
		"catalogue entries in the files are not applied", "dry run: nothing was sent"})
	hasRow(t, out, "new", muc+":99050012104000:9000002", "javascript")
	hasRow(t, out, "changed", muc+":99050012104000", "fields: channels, fees, processing_time, info_url")
	if got := munichOfferings(t, q); len(got) != len(sample) || !proto.Equal(got[muc+":99050012104000"], sample[muc+":99050012104000"]) {
		t.Fatalf("the dry run changed the registry")
	}
	out = mustRun(t, append(dldb, as...)...)
	t.Logf("DLDB import took %v:\n%s", time.Since(start), out)
	contains(t, "DLDB import", out, []string{"applied 4, already applied 0 (an earlier run), failed 0, not sent 0"})
	res, err := q.GetOffering(context.Background(), connect.NewRequest(&registryv1.GetOfferingRequest{Id: muc + ":99050012104000:9000002",
		Read: &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}}))
	if err != nil {
		t.Fatal(err)
	}
	o := res.Msg.GetOffering()
	if len(o.GetPrerequisites()) != 1 || len(o.GetLegalBasis()) != 1 || len(o.GetDeadlines()) != 1 || len(o.GetForms()) != 1 {
		t.Errorf("XZuFi fields not stored: %v", o)
	}
	var hn string
	for _, c := range o.GetChannels() {
		if c.GetAddress() != nil {
			hn = c.GetAddress().GetHouseNumber()
		}
	}
	if hn != "1" {
		t.Errorf("house number %q, want 1", hn)
	}
	out = mustRun(t, append(dldb, as...)...)
	contains(t, "DLDB re-run", out, []string{"0 new, 0 changed, 4 unchanged, 3 refused", "applied 0, already applied 0"})

	// 2. XZuFi JSON: a changed name, an unknown area, another
	// organisation's offering, an area not Munich's, no LeiKa key.
	leistung := func(id, org, leika, name string, areas ...string) string {
		b, _ := json.Marshal(catalogue.XZuFiLeistung{ID: id, Leistungsschluessel: leika, Leistungsbezeichnung: name,
			Zustaendigkeit: catalogue.XZuFiZustaendig{Organisationseinheit: org, GebietIDs: areas}, Sprachen: []string{"de"}})
		return string(b)
	}
	xz := write("xzufi.json", `{"schema": "`+catalogue.XZuFiSubset+`", "leistungen": [`+strings.Join([]string{
		leistung(muc+":99050012104000:9000002", muc, "99050012104000", "Gewerbe anmelden (Zweigstelle Nord)", muc),
		leistung(muc+":x1", muc, "99050012104000", "Nirgendwo", "091629999999"),
		leistung("091840148148:x2", "091840148148", "99050012104000", "Unterhaching", "091840148148"),
		leistung(muc+":x3", muc, "99050012104000", "Nachbargemeinde", "091840148148"),
		leistung(muc+":x4", muc, "", "Ohne Schlüssel", muc),
	}, ",")+`]}`)
	out = mustRun(t, append([]string{"import", xz, "--dry-run"}, as...)...)
	hasRow(t, out, "changed", muc+":99050012104000:9000002", "fields: name, channels")
	hasRow(t, out, "refused", muc+":x1", "unknown area: no municipality 091629999999 is registered")
	hasRow(t, out, "refused", "091840148148:x2", "not entitled: an offering of 091840148148")
	hasRow(t, out, "refused", muc+":x3", "rule area-responsibility")
	hasRow(t, out, "refused", muc+":x4", "missing LeiKa key: leistungsschluessel is empty")

	// 3. CSV; then an explicit deletion: the offerings the file omits stay.
	csv := write("offers.csv", "id,leika_key,name,street,house_number,postal_code,city,prerequisites\n"+
		muc+":csv:1,99050012104000,Gewerbe anmelden (CSV),Marienplatz,8,80331,München,Volljährig\n"+
		",,Ohne LeiKa,,,,,\n")
	before := munichOfferings(t, q)
	out = mustRun(t, append([]string{"import", csv, "--delete", muc + ":99050012104000:9000006"}, as...)...)
	hasRow(t, out, "new", muc+":csv:1", "applied at index")
	hasRow(t, out, "refused", "Ohne LeiKa", "missing LeiKa key: column leika_key is empty")
	hasRow(t, out, "deleted", muc+":99050012104000:9000006", "applied at index")
	contains(t, "CSV import", out, []string{"applied 2"})
	after := munichOfferings(t, q)
	if len(after) != len(before) || after[muc+":99050012104000:9000006"] != nil || after[muc+":csv:1"] == nil {
		t.Errorf("after the CSV import: %d offerings (before %d), deleted one present: %v", len(after), len(before), after[muc+":99050012104000:9000006"] != nil)
	}
	out = mustRun(t, append([]string{"import", csv, "--delete-missing", "--dry-run"}, as...)...)
	if n := strings.Count(out, "\ndelete "); n != len(after)-1 {
		t.Errorf("--delete-missing --dry-run shows %d deletions, want %d", n, len(after)-1)
	}
	if len(munichOfferings(t, q)) != len(after) {
		t.Errorf("the dry run deleted something")
	}

	// 4. Interrupted: the connection is cut after 2 of 6 commands; the
	// same import again sends the other 4. Nothing twice, nothing half.
	var rows []string
	for i := 1; i <= 6; i++ {
		rows = append(rows, fmt.Sprintf("%s:int:%d,99050012104000,Unterbrochen %d", muc, i, i))
	}
	big := write("big.csv", "id,leika_key,name\n"+strings.Join(rows, "\n")+"\n")
	data, _ := os.ReadFile(big)
	recs, err := catalogue.Parse([]catalogue.File{{Name: "big.csv", Data: data}}, catalogue.ParseOptions{Org: muc})
	if err != nil {
		t.Fatal(err)
	}
	o2 := &clientOpts{addr: api, timeout: 10 * time.Second}
	plan, err := catalogue.MakePlan(context.Background(), connectCatalogue{o2}, muc, recs, catalogue.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := keys.Load(key)
	if err != nil {
		t.Fatal(err)
	}
	cut := &failingPublisher{next: ConnectPublisher{Client: o2.publisher(), Timeout: o2.timeout}, ok: 2}
	rep, err := plan.Apply(context.Background(), cut, catalogue.ApplyOptions{Issuer: muc, Key: k, PerRequest: 1})
	if err == nil || rep.Applied != 2 || rep.NotSent != 4 {
		t.Fatalf("interrupted import: %+v, %v", rep, err)
	}
	mid := munichOfferings(t, q)
	if len(mid) != len(after)+2 {
		t.Fatalf("after the interruption %d offerings, want %d", len(mid), len(after)+2)
	}
	out = mustRun(t, append([]string{"import", big}, as...)...)
	contains(t, "resumed import", out, []string{"4 new, 0 changed, 2 unchanged", "applied 4, already applied 0 (an earlier run), failed 0, not sent 0"})
	final := munichOfferings(t, q)
	if len(final) != len(after)+6 {
		t.Errorf("after the resumed import %d offerings, want %d", len(final), len(after)+6)
	}
	for i := 1; i <= 6; i++ {
		if o := final[fmt.Sprintf("%s:int:%d", muc, i)]; o == nil || o.GetName() != fmt.Sprintf("Unterbrochen %d", i) {
			t.Errorf("record %d: %v", i, o)
		}
	}

	// 5. Export and import back: two deleted offerings come back as they
	// were; everything else is unchanged.
	exp := filepath.Join(tmp, "export.json")
	mustRun(t, "export", "--org", muc, "-f", exp)
	var doc catalogue.XZuFiFile
	b, _ := os.ReadFile(exp)
	if err := json.Unmarshal(b, &doc); err != nil || len(doc.Leistungen) != len(final) {
		t.Fatalf("export: %d offerings (want %d), %v", len(doc.Leistungen), len(final), err)
	}
	gone := []string{muc + ":99050012104000", muc + ":int:3"}
	mustRun(t, append([]string{"import", csv, "--delete", strings.Join(gone, ",")}, as...)...)
	if n := len(munichOfferings(t, q)); n != len(final)-2 {
		t.Fatalf("%d offerings after deleting 2 of %d", n, len(final))
	}
	out = mustRun(t, append([]string{"import", exp}, as...)...)
	contains(t, "round trip", out, []string{fmt.Sprintf("2 new, 0 changed, %d unchanged, 0 refused", len(final)-2), "applied 2"})
	back := munichOfferings(t, q)
	for id, o := range final {
		if back[id] == nil || !proto.Equal(withoutMeta(back[id]), withoutMeta(o)) {
			t.Errorf("%s after the round trip:\n got %v\nwant %v", id, back[id], o)
		}
	}

	// 6. A state's export: Munich imports back only its own.
	stateExp := filepath.Join(tmp, "state.json")
	mustRun(t, "export", "--state", "09", "-f", stateExp)
	out = mustRun(t, append([]string{"import", stateExp, "--dry-run"}, as...)...)
	contains(t, "state export", out, []string{fmt.Sprintf("%d unchanged", len(back)), "an offering of " + sampledata.SSCID})
	t.Logf("state export read back by Munich:\n%s", lastLines(out, 2))

}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// hasRow checks that the import report has a row with the action and id
// whose detail contains detail.
func hasRow(t *testing.T, out, action, id, detail string) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == action && strings.Contains(l, "  "+id+" ") && strings.Contains(l, detail) {
			return
		}
	}
	t.Errorf("no row %q %q with %q in:\n%s", action, id, detail, out)
}
