package cli

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

const validDoc = `{"issuer": "091620000000", "mutations": [{"putOffering": {
  "id": "091620000000:99115005000000", "organisationId": "091620000000",
  "leikaKey": "99115005000000", "areas": ["091620000000"]}}]}`

func TestPublish(t *testing.T) {
	te := newTestEnv(t)
	yamlUnquoted := te.write(t, "unquoted.yml", `
issuer: 091620000000          # digits without quotes stay strings
mutations:
  - put_offering:             # snake_case names work too
      id: "091620000000:99115005000000"
      organisation_id: 091620000000
      leika_key: 99115005000000
      areas: [09162, 091620000000]
      channels:
        - {kind: CHANNEL_KIND_ONLINE, url: "https://example.de/", available_24_7: true}
        - kind: CHANNEL_KIND_IN_PERSON
          address: {postalCode: 01067, city: Dresden, location: {lat: 51.05, lon: 13.74}}
      fees: [{amountCents: 1250, free: false}]
      processingTime: {appointmentMinutes: 15, minDays: 1, maxDays: 3}
`)
	list := te.write(t, "list.json", "["+validDoc+","+strings.Replace(validDoc, `"091620000000:99115005000000"`, `"091620000000:99115005000000:b"`, 1)+"]")
	multiYAML := te.write(t, "multi", "issuer: ssc-oberland\nmutations:\n  - deleteOffering: ssc-oberland:99115005000000\n---\n- issuer: ssc-oberland\n  mutations: [{deleteOffering: ssc-oberland:1}]\n- issuer: ssc-oberland\n  mutations: [{deleteOffering: ssc-oberland:2}]\n")
	fixedID := te.write(t, "fixed.json", `{"issuer": "091620000000", "id": "fixed-command-id-0001", "issuedAtUnixMs": "1700000000000",
	  "mutations": [{"deleteOffering": "091620000000:99115005000000"}]}`)

	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantCode int
		stdout   []string
		stderr   []string
		check    func(t *testing.T, cmds []*registryv1.Command)
	}{
		{
			name:   "json file",
			args:   []string{"-f", "testdata/offering.json"},
			stdout: []string{"COMMAND", "091620000000", "applied at index", "read your writes on any node with --min-index"},
			check: func(t *testing.T, cmds []*registryv1.Command) {
				off := cmds[0].GetMutations()[0].GetPutOffering()
				if off.GetLeikaKey() != "99115005000000" || len(off.GetChannels()) != 3 || !off.GetChannels()[0].GetAvailable_24_7() ||
					off.GetChannels()[2].GetAddress().GetPostalCode() != "80331" || off.GetProcessingTime().GetAppointmentMinutes() != 15 {
					t.Errorf("offering arrived as %v", off)
				}
				if len(cmds[0].GetId()) < 16 || cmds[0].GetIssuedAtUnixMs() == 0 {
					t.Errorf("id/issued_at not filled: %v", cmds[0])
				}
			},
		},
		{
			name:   "yaml file",
			args:   []string{"-f", "testdata/offering.yaml"},
			stdout: []string{"applied at index"},
			check: func(t *testing.T, cmds []*registryv1.Command) {
				off := cmds[0].GetMutations()[0].GetPutOffering()
				if off.GetLeikaKey() != "99085001000000" || len(off.GetChannels()) != 4 || off.GetFees()[0].GetAmountCents() != 7000 ||
					off.GetProcessingTime().GetMaxDays() != 42 || off.GetChannels()[3].GetPhone() != "+49 89 233-96000" {
					t.Errorf("offering arrived as %v", off)
				}
			},
		},
		{
			name: "yaml with unquoted numbers and snake_case",
			args: []string{"-f", yamlUnquoted},
			check: func(t *testing.T, cmds []*registryv1.Command) {
				c := cmds[0]
				off := c.GetMutations()[0].GetPutOffering()
				ch := off.GetChannels()
				if c.GetIssuer() != "091620000000" || off.GetOrganisationId() != "091620000000" || off.GetLeikaKey() != "99115005000000" ||
					strings.Join(off.GetAreas(), ",") != "09162,091620000000" || !ch[0].GetAvailable_24_7() ||
					ch[1].GetAddress().GetPostalCode() != "01067" || ch[1].GetAddress().GetLocation().GetLat() != 51.05 ||
					off.GetFees()[0].GetAmountCents() != 1250 || off.GetProcessingTime().GetMaxDays() != 3 {
					t.Errorf("command arrived as %v", c)
				}
			},
		},
		{
			name:   "json list",
			args:   []string{"-f", list, "-o", "json"},
			stdout: []string{`"results": [`, `"index":`},
			check: func(t *testing.T, cmds []*registryv1.Command) {
				if len(cmds) != 2 {
					t.Errorf("%d commands, want 2", len(cmds))
				}
			},
		},
		{
			name: "yaml stream without extension, --org",
			args: []string{"-f", multiYAML, "--org", "091620000000"},
			check: func(t *testing.T, cmds []*registryv1.Command) {
				if len(cmds) != 3 {
					t.Fatalf("%d commands, want 3", len(cmds))
				}
				for _, c := range cmds {
					if c.GetIssuer() != "091620000000" {
						t.Errorf("issuer %q, want the --org override", c.GetIssuer())
					}
				}
			},
		},
		{
			name:   "stdin",
			args:   []string{"-f", "-"},
			stdin:  validDoc,
			stdout: []string{"applied at index"},
		},
		{
			name:   "given id is kept",
			args:   []string{"-f", fixedID},
			stdout: []string{"fixed-command-id-0001", "applied at index"},
			check: func(t *testing.T, cmds []*registryv1.Command) {
				if cmds[0].GetId() != "fixed-command-id-0001" || cmds[0].GetIssuedAtUnixMs() != 1700000000000 {
					t.Errorf("command arrived as %v", cmds[0])
				}
			},
		},
		{
			name:   "resubmission is a duplicate",
			args:   []string{"-f", fixedID},
			stdout: []string{"duplicate, already applied at index"},
			check: func(t *testing.T, cmds []*registryv1.Command) {
				if len(cmds) != 0 {
					t.Errorf("duplicate was applied again")
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls0, pub0 := te.calls()
			var stdin *strings.Reader
			if tc.stdin != "" {
				stdin = strings.NewReader(tc.stdin)
			}
			args := append([]string{"publish", "--addr", te.addr, "--key", te.key}, tc.args...)
			var code int
			var stdout, stderr string
			if stdin != nil {
				code, stdout, stderr = cli(t, stdin, args...)
			} else {
				code, stdout, stderr = cli(t, nil, args...)
			}
			if code != tc.wantCode {
				t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, stdout, stderr)
			}
			contains(t, "stdout", stdout, tc.stdout)
			contains(t, "stderr", stderr, tc.stderr)
			calls, pub := te.calls()
			if calls != calls0+1 {
				t.Errorf("%d publish calls, want 1", calls-calls0)
			}
			if tc.check != nil {
				tc.check(t, pub[len(pub0):])
			}
		})
	}
}

func TestPublishJSONOutput(t *testing.T) {
	te := newTestEnv(t)
	t.Setenv("VERBUND_KEY", te.key)
	code, stdout, stderr := cli(t, nil, "publish", "-f", "testdata/offering.json", "--addr", te.addr, "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var resp registryv1.PublishResponse
	if err := protojson.Unmarshal([]byte(stdout), &resp); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if len(resp.GetResults()) != 1 || resp.GetResults()[0].GetErrorCode() != "" || resp.GetIndex() != 1 {
		t.Errorf("response %v", &resp)
	}
}

func TestPublishWrongKey(t *testing.T) {
	te := newTestEnv(t)
	tests := []struct {
		name   string
		output string
		stdout []string
	}{
		{name: "table", output: "table", stdout: []string{"failed: invalid_signature:"}},
		{name: "json", output: "json", stdout: []string{`"errorCode": "invalid_signature"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, nil, "publish", "-f", "testdata/offering.json", "--key", te.wrong, "--addr", te.addr, "-o", tc.output)
			if code != 1 {
				t.Fatalf("exit code %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			contains(t, "stdout", stdout, tc.stdout)
			contains(t, "stderr", stderr, []string{"verbund publish: 1 of 1 commands failed"})
		})
	}
	if _, pub := te.calls(); len(pub) != 0 {
		t.Errorf("%d commands applied with the wrong key", len(pub))
	}
}

func TestPublishInvalid(t *testing.T) {
	te := newTestEnv(t)
	badLeiKa := strings.Replace(validDoc, `"leikaKey": "99115005000000"`, `"leikaKey": "12345"`, 1)
	tests := []struct {
		name     string
		file     string // content; written to a file named name+ext
		ext      string
		args     []string
		env      map[string]string
		wantCode int
		stderr   []string
	}{
		{name: "bad json", file: "{\n  \"issuer\": \"091620000000\",\n  \"mutations\": [}\n", ext: ".json",
			stderr: []string{".json: invalid JSON at line 3, column 17"}},
		{name: "invalid leika", file: badLeiKa, ext: ".json",
			stderr: []string{`command 1: mutation 0: invalid argument: offering 091620000000:99115005000000: LeiKa key "12345" must match`}},
		{name: "invalid leika in list", file: "[" + validDoc + "," + badLeiKa + "]", ext: ".json",
			stderr: []string{"command 2: mutation 0: invalid argument:", `"12345"`}},
		{name: "unknown field", file: `{"issuer": "091620000000", "mutations": [{"putOffer": {}}]}`, ext: ".json",
			stderr: []string{`command 1: line 1, column 43: unknown field "putOffer"`}},
		{name: "unknown field in list", file: "[\n" + validDoc + ",\n {\"issuer\": \"x\", \"bogus\": 1}\n]", ext: ".json",
			stderr: []string{`command 2: line 5, column 18: unknown field "bogus"`}},
		{name: "unknown field yaml", file: "issuer: ssc-oberland\nmutations:\n  - putOffering: {id: x:1, colour: blue}\n", ext: ".yaml",
			stderr: []string{`command 1: unknown field "colour"`}},
		{name: "bad yaml", file: "issuer: [\n", ext: ".yaml", stderr: []string{"invalid YAML: yaml: line"}},
		{name: "yaml scalar", file: "just text\n", ext: ".yaml", stderr: []string{"want a mapping"}},
		{name: "no issuer", file: `{"mutations": [{"deleteOffering": "ssc-oberland:1"}]}`, ext: ".json",
			stderr: []string{`command 1: no issuer (set "issuer" in the file or use --org)`}},
		{name: "no mutations", file: `{"issuer": "ssc-oberland"}`, ext: ".json", stderr: []string{"command has no mutations"}},
		{name: "empty list", file: `[]`, ext: ".json", stderr: []string{": no commands"}},
		{name: "bad issuer", file: `{"issuer": "Stadt X", "mutations": [{"deleteOffering": "ssc-oberland:1"}]}`, ext: ".json",
			stderr: []string{`issuer "Stadt X" is not an organisation id`}},
		{name: "missing file", file: "", ext: "", args: []string{"-f", "/nonexistent/cmd.json"}, stderr: []string{"read /nonexistent/cmd.json:"}},
		{name: "no key", file: validDoc, ext: ".json", args: []string{"--key", ""},
			stderr: []string{"no signing key: use --key KEYFILE or set VERBUND_KEY"}},
		{name: "key file too open", file: validDoc, ext: ".json", args: []string{"--key", te.write(t, "open.jwk", "{}")},
			stderr: []string{"permissions", "too open"}},
		{name: "bad --org", file: validDoc, ext: ".json", args: []string{"--org", "X"}, wantCode: 2,
			stderr: []string{`--org "X": want a 12-digit ARS or a slug`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"publish", "--addr", te.addr, "--key", te.key}
			if tc.ext != "" {
				args = append(args, "-f", te.write(t, strings.ReplaceAll(tc.name, " ", "-")+tc.ext, tc.file))
			}
			args = append(args, tc.args...)
			calls0, _ := te.calls()
			code, stdout, stderr := cli(t, nil, args...)
			want := tc.wantCode
			if want == 0 {
				want = 1
			}
			if code != want {
				t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, want, stdout, stderr)
			}
			if !strings.HasPrefix(stderr, "verbund publish: ") {
				t.Errorf("stderr %q does not start with the command", stderr)
			}
			contains(t, "stderr", stderr, tc.stderr)
			if stdout != "" {
				t.Errorf("unexpected stdout: %s", stdout)
			}
			if calls, _ := te.calls(); calls != calls0 {
				t.Errorf("%d publish calls for an invalid file, want none", calls-calls0)
			}
		})
	}
}
