package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	"github.com/verbund/verbund/node"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// cli runs the command line with args and returns exit code, stdout, stderr.
func cli(t *testing.T, stdin io.Reader, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	var code int
	if stdin == nil {
		code = Main(context.Background(), args, &out, &errOut)
	} else {
		code = run(context.Background(), &Env{Stdout: &out, Stderr: &errOut, Stdin: stdin}, args)
	}
	return code, out.String(), errOut.String()
}

type testEnv struct {
	fake    *fake
	addr    string
	key     string // private key file of the issuer
	wrong   string // another key with the same kid
	dir     string
	signing jose.JSONWebKey
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	t.Setenv("VERBUND_ADDR", "")
	t.Setenv("VERBUND_KEY", "")
	dir := t.TempDir()
	k, err := keys.GenerateSigning("muc-sig-1")
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := keys.GenerateSigning("muc-sig-1")
	if err != nil {
		t.Fatal(err)
	}
	te := &testEnv{
		fake:    &fake{pub: k.Public()},
		key:     filepath.Join(dir, "muc.jwk"),
		wrong:   filepath.Join(dir, "wrong.jwk"),
		dir:     dir,
		signing: k,
	}
	if err := keys.Save(te.key, k); err != nil {
		t.Fatal(err)
	}
	if err := keys.Save(te.wrong, wrong); err != nil {
		t.Fatal(err)
	}
	te.addr = te.fake.serve(t).URL
	return te
}

func (te *testEnv) write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(te.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (te *testEnv) calls() (publish int, published []*registryv1.Command) {
	te.fake.mu.Lock()
	defer te.fake.mu.Unlock()
	return te.fake.publishCalls, append([]*registryv1.Command(nil), te.fake.published...)
}

func contains(t *testing.T, what, got string, want []string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, got)
		}
	}
}

const footer = "(index 12345, local read on node n1, staleness 0ms)"

func TestQueryCommands(t *testing.T) {
	te := newTestEnv(t)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		stdout   []string
		stderr   []string
		json     func() proto.Message // JSON mode: stdout must decode into this
	}{
		{
			name:   "orgs list table",
			args:   []string{"orgs", "list"},
			stdout: []string{"ID", "KIND", "Landeshauptstadt München", "shared-service-centre", "state-agency", "Düsseldorf", "5 organisations", footer},
		},
		{
			name:   "orgs list filtered",
			args:   []string{"orgs", "list", "--kind", "municipality", "--state", "09"},
			stdout: []string{"091620000000", "1 organisation\n", footer},
		},
		{
			name:   "orgs list limit",
			args:   []string{"orgs", "list", "--limit", "2"},
			stdout: []string{"2 organisations shown, more match (use --all or a higher --limit)"},
		},
		{
			name:   "orgs list empty",
			args:   []string{"orgs", "list", "--name", "Zzz"},
			stdout: []string{"no organisations found", footer},
		},
		{
			name:   "orgs list json",
			args:   []string{"orgs", "list", "-o", "json", "--ars", "0916"},
			stdout: []string{`"id": "091620000000"`, `"kind": "ORGANISATION_KIND_MUNICIPALITY"`, `"nodeId": "n1"`},
			json:   func() proto.Message { return &registryv1.ListOrganisationsResponse{} },
		},
		{
			name: "orgs get table",
			args: []string{"orgs", "get", "091620000000"},
			stdout: []string{"Name:", "Landeshauptstadt München", "Kind:", "municipality", "Status:", "active",
				"AGS:", "09162000", "Population:", "1510378", "48.13740, 11.57550", "muc-sig-1", "EdDSA", "17, updated", "by verbund-betrieb", footer},
		},
		{
			name:   "orgs get flags after argument",
			args:   []string{"orgs", "get", "ssc-oberland", "-o", "json"},
			stdout: []string{`"name": "Servicezentrum Oberland"`},
			json:   func() proto.Message { return &registryv1.GetOrganisationResponse{} },
		},
		{
			name:     "orgs get not found",
			args:     []string{"orgs", "get", "099999999999"},
			wantCode: 1,
			stderr:   []string{"verbund orgs get: not_found: organisation 099999999999 not found"},
		},
		{
			name:     "timeout",
			args:     []string{"orgs", "get", "slow-org", "--timeout", "50ms"},
			wantCode: 1,
			stderr:   []string{"verbund orgs get: deadline_exceeded:", "(--timeout 50ms)"},
		},
		{
			name:   "services search table",
			args:   []string{"services", "search", "umzug"},
			stdout: []string{"LEIKA", "99115005000000", "Wohnsitz anmelden", "Umzug", "1.50", footer},
		},
		{
			name:   "services search by life situation",
			args:   []string{"services", "search", "--life-situation", "Reisen"},
			stdout: []string{"99102013104000"},
		},
		{
			name:   "services search nothing",
			args:   []string{"services", "search", "Hundesteuer", "abmelden"},
			stdout: []string{"no services found"},
		},
		{
			name:   "services search json",
			args:   []string{"services", "search", "umzug", "-o", "json"},
			stdout: []string{`"leikaKey": "99115005000000"`, `"score": 1.5`},
			json:   func() proto.Message { return &registryv1.SearchServicesResponse{} },
		},
		{
			name:   "services get table",
			args:   []string{"services", "get", "99115005000000"},
			stdout: []string{"LeiKa:", "Wohnsitz anmelden", "Anmeldung, Meldebescheinigung", "  Wer in eine neue Wohnung zieht", footer},
		},
		{
			name:   "services get json",
			args:   []string{"services", "get", "99115005000000", "-o", "json"},
			stdout: []string{`"lifeSituations": [`},
			json:   func() proto.Message { return &registryv1.GetServiceResponse{} },
		},
		{
			name:     "services get invalid key",
			args:     []string{"services", "get", "12345"},
			wantCode: 2,
			stderr:   []string{`verbund services get: LeiKa key "12345": want 14 digits starting with 99`, "usage: verbund services get LEIKA"},
		},
		{
			name:     "services get not found",
			args:     []string{"services", "get", "99000000000000"},
			wantCode: 1,
			stderr:   []string{"verbund services get: not_found: service 99000000000000 not found"},
		},
		{
			name:   "life situations table",
			args:   []string{"services", "life-situations"},
			stdout: []string{"LIFE SITUATION", "SERVICES", "Umzug", footer},
		},
		{
			name:   "life situations json",
			args:   []string{"services", "life-situations", "-o", "json"},
			stdout: []string{`"serviceCount": 1`},
			json:   func() proto.Message { return &registryv1.ListLifeSituationsResponse{} },
		},
		{
			name: "providers table",
			args: []string{"providers", "--service", "99115005000000", "--area", "091620000000"},
			stdout: []string{
				"Service:", "Wohnsitz anmelden (99115005000000)", "Area:", "Landeshauptstadt München (091620000000)",
				"RANK", "MATCH", "own municipality", "delegated",
				"online 24/7, appointment, in person (3)", "online, phone",
				"free", "50,00–60,00 €", "15 min", "1–3 days",
				"1. Landeshauptstadt München (091620000000)",
				"2. Servicezentrum Oberland (ssc-oberland)",
				"delegated, area 09162, 48.2 km away",
				"https://stadt.example.de/anmelden",
				"Bürgerbüro Mitte, Marienplatz 8, 80331 München",
				"Mo–Fr 07:30–12:00",
				"phone            +49 8041 0000",
				"free  Anmeldung",
				"50,00–60,00 €  Bearbeitung",
				"Wohnungsgeberbestätigung (required)",
				"1–3 days (nach Eingang der Unterlagen)",
				footer,
			},
		},
		{
			name:   "providers with AGS json",
			args:   []string{"providers", "--service", "99115005000000", "--area", "09162000", "-o", "json"},
			stdout: []string{`"match": "MATCH_KIND_OWN_MUNICIPALITY"`, `"distanceKm": 48.25`},
			json:   func() proto.Message { return &registryv1.FindProvidersResponse{} },
		},
		{
			name:     "providers missing service",
			args:     []string{"providers", "--area", "091620000000"},
			wantCode: 2,
			stderr:   []string{"verbund providers: --service is required", "usage: verbund providers"},
		},
		{
			name:     "providers bad area",
			args:     []string{"providers", "--service", "99115005000000", "--area", "0916123"},
			wantCode: 2,
			stderr:   []string{`--area "0916123": want a 12-digit ARS, an 8-digit AGS, a postcode or a municipality's name`},
		},
		{
			name:     "providers unknown service",
			args:     []string{"providers", "--service", "99000000000000", "--area", "091620000000"},
			wantCode: 1,
			stderr:   []string{"verbund providers: not_found: service 99000000000000 not found"},
		},
		{
			name: "offerings get table",
			args: []string{"offerings", "get", "091620000000:99115005000000"},
			stdout: []string{"ID:", "091620000000:99115005000000", "Organisation:", "Areas:", "online 24/7",
				"https://stadt.example.de/anmelden", "in person", "Bürgerbüro Pasing, München", "processing", "15 min", "info", footer},
		},
		{
			name:   "offerings get json",
			args:   []string{"offerings", "get", "ssc-oberland:99115005000000", "-o", "json"},
			stdout: []string{`"amountCents": "5000"`, `"phone": "+49 8041 0000"`},
			json:   func() proto.Message { return &registryv1.GetOfferingResponse{} },
		},
		{
			name:     "offerings get not found",
			args:     []string{"offerings", "get", "nope:1"},
			wantCode: 1,
			stderr:   []string{"verbund offerings get: not_found: offering nope:1 not found"},
		},
		{
			name: "status table",
			args: []string{"status"},
			stdout: []string{"Node:", "n1", "Raft state:", "Leader", "n1 at 10.0.0.1:7000", "Applied index:", "12345", "v0.1.0-test", "Stats:", "last_snapshot_index", "num_peers",
				"Expiry warnings:", "node_certificate", "EXPIRED 3h0m0s ago", "signing_key", "muc-sig-1", "expires in 53h0m0s"},
		},
		{
			name:   "status json",
			args:   []string{"status", "-o", "json"},
			stdout: []string{`"raftState": "Leader"`, `"appliedIndex": "12345"`, `"what": "node_certificate"`, `"remainingSeconds": "-10800"`},
			json:   func() proto.Message { return &nodev1.GetStatusResponse{} },
		},
		{
			name: "members table",
			args: []string{"members"},
			stdout: []string{"NODE", "LEADER", "VERSION", "n1    verbund-operator  voter   alive  Voter  *       0.1.0-dev  http://127.0.0.1:18081",
				"n4    095640000000      member  alive  -      -       0.2.0      http://127.0.0.1:18084"},
		},
		{
			name:   "members json",
			args:   []string{"members", "-o", "json"},
			stdout: []string{`"version": "0.2.0"`},
			json:   func() proto.Message { return &nodev1.ListMembersResponse{} },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string(nil), tc.args...), "--addr", te.addr)
			code, stdout, stderr := cli(t, nil, args...)
			if code != tc.wantCode {
				t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, stdout, stderr)
			}
			contains(t, "stdout", stdout, tc.stdout)
			contains(t, "stderr", stderr, tc.stderr)
			if tc.wantCode == 0 && stderr != "" {
				t.Errorf("unexpected stderr: %s", stderr)
			}
			if tc.json != nil {
				if err := protojson.Unmarshal([]byte(stdout), tc.json()); err != nil {
					t.Errorf("stdout is not the response as JSON: %v\n%s", err, stdout)
				}
			}
		})
	}
}

func TestReadOptions(t *testing.T) {
	te := newTestEnv(t)
	tests := []struct {
		name     string
		args     []string
		wantRead *registryv1.ReadOptions
		stdout   string
	}{
		{name: "default local", args: []string{"orgs", "get", "091620000000"}, stdout: "local read"},
		{
			name:     "linearizable",
			args:     []string{"services", "get", "99115005000000", "--linearizable"},
			wantRead: &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE},
			stdout:   "(index 12345, linearizable read on node n1, staleness 0ms)",
		},
		{
			name:     "min index",
			args:     []string{"services", "life-situations", "--min-index", "99"},
			wantRead: &registryv1.ReadOptions{MinIndex: 99},
			stdout:   "local read",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, nil, append(tc.args, "--addr", te.addr)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if got := te.fake.lastRead(); !proto.Equal(got, tc.wantRead) {
				t.Errorf("read options %v, want %v", got, tc.wantRead)
			}
			contains(t, "stdout", stdout, []string{tc.stdout})
		})
	}
}

func TestOrgsListPaging(t *testing.T) {
	te := newTestEnv(t)
	te.fake.pageCap = 2 // the server returns at most 2 per page
	listReqs := func() []*registryv1.ListOrganisationsRequest {
		te.fake.mu.Lock()
		defer te.fake.mu.Unlock()
		r := te.fake.listReqs
		te.fake.listReqs = nil
		return r
	}
	tests := []struct {
		name       string
		args       []string
		wantOrgs   int
		wantToken  string
		wantTokens []string // page tokens of the requests, in order
		wantSizes  []uint32
	}{
		{name: "all pages", args: []string{"--all"}, wantOrgs: 5, wantTokens: []string{"", "2", "4"}, wantSizes: []uint32{1000, 1000, 1000}},
		{name: "limit across pages", args: []string{"--limit", "3"}, wantOrgs: 3, wantToken: "3", wantTokens: []string{"", "2"}, wantSizes: []uint32{3, 1}},
		{name: "limit within a page", args: []string{"--limit", "1"}, wantOrgs: 1, wantToken: "1", wantTokens: []string{""}, wantSizes: []uint32{1}},
		{name: "default limit", args: nil, wantOrgs: 5, wantTokens: []string{"", "2", "4"}, wantSizes: []uint32{100, 98, 96}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			listReqs()
			args := append([]string{"orgs", "list", "-o", "json", "--addr", te.addr}, tc.args...)
			code, stdout, stderr := cli(t, nil, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var resp registryv1.ListOrganisationsResponse
			if err := protojson.Unmarshal([]byte(stdout), &resp); err != nil {
				t.Fatal(err)
			}
			if len(resp.GetOrganisations()) != tc.wantOrgs || resp.GetNextPageToken() != tc.wantToken {
				t.Errorf("got %d organisations, token %q; want %d, %q", len(resp.GetOrganisations()), resp.GetNextPageToken(), tc.wantOrgs, tc.wantToken)
			}
			seen := map[string]bool{}
			for _, o := range resp.GetOrganisations() {
				if seen[o.GetId()] {
					t.Errorf("organisation %s twice", o.GetId())
				}
				seen[o.GetId()] = true
			}
			reqs := listReqs()
			var tokens []string
			var sizes []uint32
			for _, r := range reqs {
				tokens = append(tokens, r.GetPageToken())
				sizes = append(sizes, r.GetPageSize())
			}
			if !slices.Equal(tokens, tc.wantTokens) || !slices.Equal(sizes, tc.wantSizes) {
				t.Errorf("requests: tokens %q sizes %v, want %q %v", tokens, sizes, tc.wantTokens, tc.wantSizes)
			}
		})
	}
}

func TestEnvAddr(t *testing.T) {
	te := newTestEnv(t)
	t.Setenv("VERBUND_ADDR", strings.TrimPrefix(te.addr, "http://"))
	code, stdout, stderr := cli(t, nil, "status")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	contains(t, "stdout", stdout, []string{"Leader"})
}

func TestUnavailable(t *testing.T) {
	te := newTestEnv(t)
	srv := te.fake.serve(t)
	addr := srv.URL
	srv.Close()
	code, _, stderr := cli(t, nil, "status", "--addr", addr)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	contains(t, "stderr", stderr, []string{"verbund status: unavailable:", "set --addr or VERBUND_ADDR"})
}

func TestUsage(t *testing.T) {
	newTestEnv(t) // clears VERBUND_ADDR
	tests := []struct {
		name     string
		args     []string
		wantCode int
		stdout   []string
		stderr   []string
	}{
		{name: "no arguments", args: nil, wantCode: 2, stderr: []string{"usage: verbund <command>", "orgs", "publish"}},
		{name: "help", args: []string{"help"}, stdout: []string{"usage: verbund <command>", "providers", "who delivers", "services", "status"}},
		{name: "-h", args: []string{"-h"}, stdout: []string{"usage: verbund <command>"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, stderr: []string{`verbund: unknown command "frobnicate"`, "usage: verbund <command>"}},
		{name: "help group", args: []string{"help", "orgs"}, stdout: []string{"usage: verbund orgs <command>", "list", "get"}},
		{name: "help subcommand", args: []string{"help", "orgs", "list"}, stdout: []string{"usage: verbund orgs list", "-kind", "municipality|shared-service-centre|association", "-linearizable", "-addr", "http://127.0.0.1:8080"}},
		{name: "subcommand -h", args: []string{"providers", "-h"}, stdout: []string{"usage: verbund providers --service LEIKA", "-service", "-area", "-timeout"}},
		{name: "publish -h", args: []string{"publish", "--help"}, stdout: []string{"usage: verbund publish -f FILE", "-key", "VERBUND_KEY", "cli/testdata/offering.yaml"}},
		{name: "missing subcommand", args: []string{"orgs"}, wantCode: 2, stderr: []string{"verbund orgs: missing command", "usage: verbund orgs <command>"}},
		{name: "unknown subcommand", args: []string{"services", "find"}, wantCode: 2, stderr: []string{`verbund services: unknown command "find"`, "life-situations"}},
		{name: "unknown flag", args: []string{"orgs", "list", "--colour"}, wantCode: 2, stderr: []string{"verbund orgs list: flag provided but not defined: -colour", "usage: verbund orgs list"}},
		{name: "bad kind", args: []string{"orgs", "list", "--kind", "village"}, wantCode: 2, stderr: []string{`--kind "village": want one of municipality|`}},
		{name: "bad state", args: []string{"orgs", "list", "--state", "9"}, wantCode: 2, stderr: []string{`--state "9": want two digits`}},
		{name: "bad output", args: []string{"status", "-o", "yaml"}, wantCode: 2, stderr: []string{`-o "yaml": want table or json`}},
		{name: "bad addr", args: []string{"status", "--addr", "ftp://x"}, wantCode: 2, stderr: []string{`--addr "ftp://x" is not an http(s) URL`}},
		{name: "missing argument", args: []string{"orgs", "get"}, wantCode: 2, stderr: []string{"verbund orgs get: missing organisation ID"}},
		{name: "extra argument", args: []string{"orgs", "get", "a", "b"}, wantCode: 2, stderr: []string{`verbund orgs get: unexpected argument "b"`}},
		{name: "publish without file", args: []string{"publish"}, wantCode: 2, stderr: []string{"verbund publish: -f FILE is required"}},
		// Governance commands.
		{name: "init without flags", args: []string{"init"}, wantCode: 2, stderr: []string{"verbund init: --org, --kind, --name and --data are required"}},
		{name: "init bad org", args: []string{"init", "--org", "Not An Id", "--kind", "municipality", "--name", "x", "--data", "d"}, wantCode: 2, stderr: []string{`--org "Not An Id"`}},
		{name: "join without data", args: []string{"join", "--network", "http://127.0.0.1:1"}, wantCode: 2, stderr: []string{"verbund join: --data is required"}},
		{name: "approve without fingerprint", args: []string{"org", "approve", "091620000000", "--reason", "ok", "--key", "k", "--as", "land-09"}, wantCode: 2,
			stderr: []string{"verbund org approve: --fingerprint is required"}},
		{name: "approve bad fingerprint", args: []string{"org", "approve", "091620000000", "--reason", "ok", "--key", "k", "--as", "land-09", "--fingerprint", "abc"}, wantCode: 2,
			stderr: []string{`--fingerprint "abc": want 64 hex digits`}},
		{name: "suspend without reason", args: []string{"org", "suspend", "091620000000", "--key", "k", "--as", "land-09"}, wantCode: 2, stderr: []string{"verbund org suspend: --reason is required"}},
		{name: "suspend without key", args: []string{"org", "suspend", "091620000000", "--reason", "x", "--as", "land-09"}, wantCode: 2, stderr: []string{"--key is required"}},
		{name: "org missing ORG", args: []string{"org", "revoke", "--reason", "x", "--key", "k", "--as", "land-09"}, wantCode: 2, stderr: []string{"verbund org revoke: missing organisation ID"}},
		{name: "register needs keys", args: []string{"org", "register", "land-09", "--key", "k", "--as", "x-op"}, wantCode: 2, stderr: []string{"give one of --node and --keys-from"}},
		{name: "grant bad area", args: []string{"authorise", "grant", "--to", "ssc-isar", "--area", "0918", "--key", "k", "--as", "091840148148"}, wantCode: 2,
			stderr: []string{`--area "0918": want an ARS prefix of 2, 3, 5, 9 or 12 digits`}},
		{name: "grant bad service", args: []string{"authorise", "grant", "--to", "ssc-isar", "--area", "091840148148", "--service", "123", "--key", "k", "--as", "091840148148"}, wantCode: 2,
			stderr: []string{`--service "123"`}},
		{name: "authorise list without filter", args: []string{"authorise", "list"}, wantCode: 2, stderr: []string{"give --grantor, --grantee or --area"}},
		{name: "recover without new keys", args: []string{"keys", "recover", "091620000000", "--reason", "x", "--key", "k", "--as", "land-09"}, wantCode: 2, stderr: []string{"--new-keys is required"}},
		{name: "history without ORG", args: []string{"history"}, wantCode: 2, stderr: []string{"verbund history: missing organisation ID"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, nil, tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, stdout, stderr)
			}
			contains(t, "stdout", stdout, tc.stdout)
			contains(t, "stderr", stderr, tc.stderr)
			if code == 0 && stderr != "" {
				t.Errorf("unexpected stderr: %s", stderr)
			}
			if code == 2 && stdout != "" {
				t.Errorf("unexpected stdout on usage error: %s", stdout)
			}
		})
	}
}

// TestCommandTable checks the static command table: the commands that exist
// (none lost, none doubled), valid names, a summary and a Run each, and that
// every command answers -h with its usage.
func TestCommandTable(t *testing.T) {
	want := []string{"audit", "authorise", "case", "certs", "cluster", "dev", "export", "handover", "history", "import", "inbox", "init", "join", "keys", "login", "members",
		"node", "offerings", "org", "orgs", "providers", "publish", "recover", "services", "snapshot", "status", "synth", "track", "users", "version", "watch"}
	var got []string
	for _, c := range commands {
		got = append(got, c.Name)
		if c.Name == "" || c.Name == "help" || strings.ContainsAny(c.Name, " \t\n") || strings.HasPrefix(c.Name, "-") {
			t.Errorf("invalid command name %q", c.Name)
		}
		if c.Run == nil {
			t.Errorf("command %q has no Run", c.Name)
		}
		if c.Summary == "" {
			t.Errorf("command %q has no summary", c.Name)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("commands %q, want %q", got, want)
	}
	newTestEnv(t)
	for _, name := range want {
		code, stdout, stderr := cli(t, nil, name, "-h")
		usage := strings.HasPrefix(stdout, "usage: verbund "+name+" ") || strings.HasPrefix(stdout, "usage: verbund "+name+"\n")
		if code != 0 || !usage || stderr != "" {
			t.Errorf("%s -h: exit %d\nstdout:\n%s\nstderr:\n%s", name, code, stdout, stderr)
		}
	}
}

// TestDispatch runs a command added to the table: arguments, exit codes,
// error output and the help listing.
func TestDispatch(t *testing.T) {
	var got []string
	cmds := append(slices.Clone(commands), Command{
		Name: "test-echo", Summary: "echoes its arguments (test only)",
		Run: func(_ context.Context, env *Env, args []string) error {
			got = args
			if len(args) > 0 && args[0] == "fail" {
				return errors.New("it failed")
			}
			if len(args) > 0 && args[0] == "misuse" {
				return usageErrorf("bad usage")
			}
			return nil
		},
	})
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := dispatch(context.Background(), &Env{Stdout: &out, Stderr: &errOut}, cmds, args)
		return code, out.String(), errOut.String()
	}
	if code, _, _ := run("test-echo", "a", "b"); code != 0 || strings.Join(got, ",") != "a,b" {
		t.Errorf("exit %d, args %q", code, got)
	}
	if code, _, stderr := run("test-echo", "fail"); code != 1 || stderr != "verbund test-echo: it failed\n" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := run("test-echo", "misuse"); code != 2 || stderr != "verbund test-echo: bad usage\n" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	if _, stdout, _ := run("help"); !strings.Contains(stdout, "echoes its arguments") {
		t.Errorf("help does not list the command:\n%s", stdout)
	}
	if _, stdout, _ := cli(t, nil, "help"); strings.Contains(stdout, "echoes its arguments") {
		t.Errorf("the test command leaked into the package's table:\n%s", stdout)
	}
}

// TestMembersLeaderLine: the VERSION column comes after LEADER, so the
// pattern the e2e cluster test finds the leader with still matches.
func TestMembersLeaderLine(t *testing.T) {
	te := newTestEnv(t)
	code, stdout, stderr := cli(t, nil, "members", "--addr", te.addr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	m := regexp.MustCompile(`(?m)^(n\d)\s+\S+\s+voter\s+alive\s+Voter\s+\*\s+(\S+)`).FindStringSubmatch(stdout)
	if m == nil || m[1] != "n1" || m[2] != "0.1.0-dev" {
		t.Errorf("leader line not found (match %q):\n%s", m, stdout)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, stderr := cli(t, nil, "version")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	contains(t, "stdout", stdout, []string{"verbund " + node.Version + "\n", "Go:", runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH})
	if code, _, stderr := cli(t, nil, "version", "extra"); code != 2 || !strings.Contains(stderr, `verbund version: unexpected argument "extra"`) {
		t.Errorf("version extra: exit %d, stderr %q", code, stderr)
	}

	tests := []struct {
		name string
		bi   *debug.BuildInfo
		want []string
		not  []string
	}{
		{name: "no build info", bi: nil, want: []string{"verbund 1.2.3 Go: " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH, "Feature level: 2"}, not: []string{"Revision", "Module"}},
		{
			name: "git checkout",
			bi: &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "github.com/verbund/verbund", Version: "(devel)"}, Settings: []debug.BuildSetting{
				{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.time", Value: "2026-11-02T10:00:00Z"}, {Key: "vcs.modified", Value: "true"},
			}},
			want: []string{"Go: go1.99.1 ", "Revision: 0123456789abcdef (modified) Committed: 2026-11-02T10:00:00Z"},
			not:  []string{"Module"},
		},
		{
			name: "module install",
			bi:   &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "github.com/verbund/verbund", Version: "v1.2.3"}},
			want: []string{"Go: go1.99.1 " + runtime.GOOS + "/" + runtime.GOARCH + " Module: v1.2.3"},
			not:  []string{"Revision", "modified"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			writeVersion(&b, "1.2.3", tc.bi)
			contains(t, "output (spaces collapsed)", strings.Join(strings.Fields(b.String()), " "), tc.want)
			for _, n := range tc.not {
				if strings.Contains(b.String(), n) {
					t.Errorf("output contains %q:\n%s", n, b.String())
				}
			}
		})
	}
}
