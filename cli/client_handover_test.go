package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
)

// handoverFake is a HandoverService with canned answers that records the
// requests it receives.
type handoverFake struct {
	federationv1connect.UnimplementedHandoverServiceHandler

	pageCap   int  // if > 0, at most this many items per page
	auditFail bool // VerifyAudit answers ok=false

	mu         sync.Mutex
	sends      []*federationv1.SendHandoverRequest
	inboxReqs  []*federationv1.ListInboxRequest
	outboxReqs []*federationv1.ListOutboxRequest
	gets       []string
	accepts    []string
	completes  []string
	rejects    []*federationv1.RejectCaseRequest
	forwards   []*federationv1.ForwardCaseRequest
	tracks     []string
	audits     int
}

func (f *handoverFake) serve(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(federationv1connect.NewHandoverServiceHandler(f))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func (f *handoverFake) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sends) + len(f.inboxReqs) + len(f.outboxReqs) + len(f.gets) + len(f.accepts) + len(f.completes) +
		len(f.rejects) + len(f.forwards) + len(f.tracks) + f.audits
}

const (
	testTrackingCode = "TRK-7Q2M-9XKD"
	testAt           = int64(1700000000000)
)

var testDigest = strings.Repeat("ab", 32)

func (f *handoverFake) SendHandover(_ context.Context, req *connect.Request[federationv1.SendHandoverRequest]) (*connect.Response[federationv1.SendHandoverResponse], error) {
	f.mu.Lock()
	f.sends = append(f.sends, req.Msg)
	f.mu.Unlock()
	m := req.Msg
	if m.GetRecipientOrganisationId() == "unknown-org" {
		return nil, connect.NewError(connect.CodeNotFound, errors.New(`recipient "unknown-org": no encryption key registered`))
	}
	code := m.GetTrackingCode()
	if code == "" {
		code = testTrackingCode
	}
	caseID := m.GetCaseId()
	if caseID == "" {
		caseID = "C-h-1"
	}
	return connect.NewResponse(&federationv1.SendHandoverResponse{
		HandoverId: "h-1", TrackingCode: code, CaseId: caseID,
		State: federationv1.OutboxState_OUTBOX_STATE_PENDING, EnvelopeSha256: testDigest,
	}), nil
}

// page cuts items into a page as the node does: the token is the offset.
func page[T any](items []T, size int32, token string, capSize int) ([]T, string, error) {
	start := 0
	if token != "" {
		n, err := strconv.Atoi(token)
		if err != nil || n > len(items) {
			return nil, "", connect.NewError(connect.CodeInvalidArgument, errors.New("bad page token"))
		}
		start = n
	}
	n := int(size)
	if n <= 0 {
		n = 100
	}
	if capSize > 0 {
		n = min(n, capSize)
	}
	end := min(start+n, len(items))
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
	}
	return items[start:end], next, nil
}

var testInbox = []*federationv1.CaseSummary{
	{HandoverId: "h-1", CaseId: "K-2025-0001", FromOrganisationId: "091620000000", TrackingCode: testTrackingCode,
		LeikaKey: "99115005000000", Reason: "Zuständigkeit\tWohnort", State: federationv1.CaseState_CASE_STATE_RECEIVED, ReceivedAtUnixMs: testAt},
	{HandoverId: "h-2", CaseId: "K-2025-0002", FromOrganisationId: "ssc-oberland", LeikaKey: "99102013104000",
		State: federationv1.CaseState_CASE_STATE_ACCEPTED, ReceivedAtUnixMs: testAt + 1000},
	{HandoverId: "h-3", CaseId: "K-2025-0003", FromOrganisationId: "091620000000", LeikaKey: "99115005000000",
		State: federationv1.CaseState_CASE_STATE_RECEIVED, ReceivedAtUnixMs: testAt + 2000},
	{HandoverId: "h-4", CaseId: "K-2025-0004", FromOrganisationId: "051110000000", LeikaKey: "99115005000000",
		State: federationv1.CaseState_CASE_STATE_COMPLETED, ReceivedAtUnixMs: testAt + 3000},
	{HandoverId: "h-5", CaseId: "K-2025-0005", FromOrganisationId: "091620000000", LeikaKey: "99115005000000",
		State: federationv1.CaseState_CASE_STATE_RECEIVED, ReceivedAtUnixMs: testAt + 4000},
}

func (f *handoverFake) ListInbox(_ context.Context, req *connect.Request[federationv1.ListInboxRequest]) (*connect.Response[federationv1.ListInboxResponse], error) {
	f.mu.Lock()
	f.inboxReqs = append(f.inboxReqs, req.Msg)
	f.mu.Unlock()
	var match []*federationv1.CaseSummary
	for _, c := range testInbox {
		if st := req.Msg.GetState(); st == 0 || c.GetState() == st {
			match = append(match, c)
		}
	}
	cases, next, err := page(match, req.Msg.GetPageSize(), req.Msg.GetPageToken(), f.pageCap)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&federationv1.ListInboxResponse{Cases: cases, NextPageToken: next}), nil
}

var testOutbox = []*federationv1.OutboxEntry{
	{Id: "h-10", Kind: federationv1.OutboxKind_OUTBOX_KIND_HANDOVER, ToOrganisationId: "091840000000",
		State: federationv1.OutboxState_OUTBOX_STATE_DELIVERED, Attempts: 1, Receipt: "eyJhbGciOiJFZERTQSJ9.e30.sig",
		CreatedAtUnixMs: testAt, DeliveredAtUnixMs: testAt + 500, EnvelopeSha256: testDigest, TrackingCode: testTrackingCode},
	{Id: "h-11", Kind: federationv1.OutboxKind_OUTBOX_KIND_HANDOVER, ToOrganisationId: "ssc-oberland",
		State: federationv1.OutboxState_OUTBOX_STATE_PENDING, Attempts: 4, LastError: "unavailable: dial tcp 10.0.0.9:443:\nconnection refused"},
	{Id: "ev-12", Kind: federationv1.OutboxKind_OUTBOX_KIND_EVENT, ToOrganisationId: "091620000000", HandoverId: "h-1",
		EventType: federationv1.EventType_EVENT_TYPE_ACCEPTED, State: federationv1.OutboxState_OUTBOX_STATE_FAILED,
		Attempts: 2, LastError: "permission_denied: expired"},
}

func (f *handoverFake) ListOutbox(_ context.Context, req *connect.Request[federationv1.ListOutboxRequest]) (*connect.Response[federationv1.ListOutboxResponse], error) {
	f.mu.Lock()
	f.outboxReqs = append(f.outboxReqs, req.Msg)
	f.mu.Unlock()
	var match []*federationv1.OutboxEntry
	for _, e := range testOutbox {
		if st := req.Msg.GetState(); st == 0 || e.GetState() == st {
			match = append(match, e)
		}
	}
	entries, next, err := page(match, req.Msg.GetPageSize(), req.Msg.GetPageToken(), f.pageCap)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&federationv1.ListOutboxResponse{Entries: entries, NextPageToken: next}), nil
}

var testCase = &federationv1.Case{
	Summary:  testInbox[0],
	CaseJson: `{"antrag":"Ummeldung","person":{"familienname":"Mustermann","vornamen":["Erika"]}}`,
	Attachments: []*federationv1.Attachment{
		{Name: "wohnungsgeber.pdf", MediaType: "application/pdf", Data: []byte("%PDF-1.7 test"), Sha256: sha256Hex([]byte("%PDF-1.7 test"))},
	},
	Previous: []*federationv1.Hop{
		{HandoverId: "h-0", FromOrganisationId: "051110000000", ToOrganisationId: "091620000000", EnvelopeSha256: testDigest, AtUnixMs: testAt - 86400000},
	},
	SignedHandover: "eyJ0eXAiOiJ2ZXJidW5kLWhhbmRvdmVyK2p3cyJ9.e30.sig",
	Receipt:        "eyJ0eXAiOiJ2ZXJidW5kLXJlY2VpcHQrandzIn0.e30.sig",
	Events: []*federationv1.CaseEvent{
		{EventId: "ev-1", Type: federationv1.EventType_EVENT_TYPE_REJECTED, AtUnixMs: testAt + 60000,
			DeliveryState: federationv1.OutboxState_OUTBOX_STATE_DELIVERED,
			Problem:       &federationv1.Problem{Type: "https://verbund.example/problems/not-responsible", Title: "Nicht zuständig", Detail: "Wohnort liegt außerhalb"}},
	},
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (f *handoverFake) GetCase(_ context.Context, req *connect.Request[federationv1.GetCaseRequest]) (*connect.Response[federationv1.GetCaseResponse], error) {
	f.mu.Lock()
	f.gets = append(f.gets, req.Msg.GetHandoverId())
	f.mu.Unlock()
	if req.Msg.GetHandoverId() != "h-1" {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("case %s not found", req.Msg.GetHandoverId()))
	}
	return connect.NewResponse(&federationv1.GetCaseResponse{Case: testCase}), nil
}

func (f *handoverFake) AcceptCase(_ context.Context, req *connect.Request[federationv1.AcceptCaseRequest]) (*connect.Response[federationv1.AcceptCaseResponse], error) {
	f.mu.Lock()
	f.accepts = append(f.accepts, req.Msg.GetHandoverId())
	f.mu.Unlock()
	if req.Msg.GetHandoverId() == "h-4" {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("case h-4 is completed"))
	}
	return connect.NewResponse(&federationv1.AcceptCaseResponse{EventId: "ev-accept", State: federationv1.CaseState_CASE_STATE_ACCEPTED}), nil
}

func (f *handoverFake) RejectCase(_ context.Context, req *connect.Request[federationv1.RejectCaseRequest]) (*connect.Response[federationv1.RejectCaseResponse], error) {
	f.mu.Lock()
	f.rejects = append(f.rejects, req.Msg)
	f.mu.Unlock()
	return connect.NewResponse(&federationv1.RejectCaseResponse{EventId: "ev-reject", State: federationv1.CaseState_CASE_STATE_REJECTED}), nil
}

func (f *handoverFake) CompleteCase(_ context.Context, req *connect.Request[federationv1.CompleteCaseRequest]) (*connect.Response[federationv1.CompleteCaseResponse], error) {
	f.mu.Lock()
	f.completes = append(f.completes, req.Msg.GetHandoverId())
	f.mu.Unlock()
	return connect.NewResponse(&federationv1.CompleteCaseResponse{EventId: "ev-complete", State: federationv1.CaseState_CASE_STATE_COMPLETED}), nil
}

func (f *handoverFake) ForwardCase(_ context.Context, req *connect.Request[federationv1.ForwardCaseRequest]) (*connect.Response[federationv1.ForwardCaseResponse], error) {
	f.mu.Lock()
	f.forwards = append(f.forwards, req.Msg)
	f.mu.Unlock()
	return connect.NewResponse(&federationv1.ForwardCaseResponse{HandoverId: "h-20", EventId: "ev-forward", State: federationv1.CaseState_CASE_STATE_FORWARDED}), nil
}

var testTimeline = &federationv1.TrackCaseResponse{
	TrackingCode: testTrackingCode,
	Entries: []*federationv1.TimelineEntry{
		{OrganisationId: "091840000000", Type: federationv1.EventType_EVENT_TYPE_HANDED_OVER, AtUnixMs: testAt, Verified: true,
			SignedToken: "receipt.jws.token", HandoverId: "h-10", FromOrganisationId: "091620000000", ToOrganisationId: "091840000000"},
		{OrganisationId: "091840000000", Type: federationv1.EventType_EVENT_TYPE_FORWARDED, AtUnixMs: testAt + 1000, Verified: true,
			SignedToken: "forward.jws.token", HandoverId: "h-10", EventId: "ev-f", FromOrganisationId: "091620000000",
			ToOrganisationId: "091840000000", ForwardedTo: "ssc-oberland"},
		{OrganisationId: "ssc-oberland", Type: federationv1.EventType_EVENT_TYPE_HANDED_OVER, AtUnixMs: testAt + 2000,
			HandoverId: "h-11", FromOrganisationId: "091840000000", ToOrganisationId: "ssc-oberland", VerificationError: "not delivered yet"},
		{OrganisationId: "ssc-oberland", Type: federationv1.EventType_EVENT_TYPE_REJECTED, AtUnixMs: testAt + 3000,
			SignedToken: "forged.jws.token", VerificationError: "signature does not verify with key ssc-sig-1",
			Problem: &federationv1.Problem{Type: "https://verbund.example/problems/x", Title: "Unvollständig"}},
	},
	OrganisationIds:            []string{"091620000000", "091840000000", "ssc-oberland"},
	UnreachableOrganisationIds: []string{"by-lfst"},
}

func (f *handoverFake) TrackCase(_ context.Context, req *connect.Request[federationv1.TrackCaseRequest]) (*connect.Response[federationv1.TrackCaseResponse], error) {
	f.mu.Lock()
	f.tracks = append(f.tracks, req.Msg.GetTrackingCode())
	f.mu.Unlock()
	if req.Msg.GetTrackingCode() != testTrackingCode {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no case with tracking code %q", req.Msg.GetTrackingCode()))
	}
	return connect.NewResponse(testTimeline), nil
}

func (f *handoverFake) VerifyAudit(context.Context, *connect.Request[federationv1.VerifyAuditRequest]) (*connect.Response[federationv1.VerifyAuditResponse], error) {
	f.mu.Lock()
	f.audits++
	fail := f.auditFail
	f.mu.Unlock()
	resp := &federationv1.VerifyAuditResponse{
		Ok: !fail, Entries: 42,
		Head: &federationv1.AuditHead{Sequence: 42, Hash: strings.Repeat("c", 64), AtUnixMs: testAt},
		Published: []*federationv1.AuditHead{
			{Sequence: 20, Hash: strings.Repeat("d", 64), AtUnixMs: testAt - 1000},
			{Sequence: 40, Hash: strings.Repeat("e", 64), AtUnixMs: testAt - 500},
		},
	}
	if fail {
		resp.Error = "audit: entry 17: hash does not chain"
	}
	return connect.NewResponse(resp), nil
}

// handoverCase is one command line run against a fresh handoverFake.
type handoverCase struct {
	name     string
	args     []string
	stdin    string
	setup    func(f *handoverFake)
	wantCode int
	stdout   []string
	stderr   []string
	json     func() proto.Message // JSON mode: stdout must decode into this
	check    func(t *testing.T, f *handoverFake, stdout string)
}

func runHandoverCases(t *testing.T, tests []handoverCase) {
	t.Helper()
	t.Setenv("VERBUND_ADDR", "")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &handoverFake{}
			if tc.setup != nil {
				tc.setup(f)
			}
			args := append(append([]string(nil), tc.args...), "--addr", f.serve(t))
			var stdin *strings.Reader
			if tc.stdin != "" {
				stdin = strings.NewReader(tc.stdin)
			}
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
			if code == 0 && stderr != "" && !strings.HasPrefix(stderr, "saved ") {
				t.Errorf("unexpected stderr: %s", stderr)
			}
			if code == 2 && stdout != "" {
				t.Errorf("unexpected stdout on usage error: %s", stdout)
			}
			if tc.json != nil {
				if err := protojson.Unmarshal([]byte(stdout), tc.json()); err != nil {
					t.Errorf("stdout is not the JSON response: %v\n%s", err, stdout)
				}
			}
			if tc.check != nil {
				tc.check(t, f, stdout)
			}
		})
	}
}

func writeTemp(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func jsonEqual(t *testing.T, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("case_json %q: %v", got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("case_json = %s, want %s", got, want)
	}
}

func noCalls(t *testing.T, f *handoverFake, _ string) {
	t.Helper()
	if n := f.calls(); n != 0 {
		t.Errorf("%d requests sent, want none", n)
	}
}

func TestHandoverSend(t *testing.T) {
	dir := t.TempDir()
	pdf := []byte("%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n")
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
	text := []byte("Notiz der Sachbearbeitung: Bitte Rückruf.\n")
	pdfPath := writeTemp(t, dir, "Wohnungsgeberbestätigung.pdf", pdf)
	pngPath := writeTemp(t, dir, "foto.PNG", png)
	sniffPath := writeTemp(t, dir, "notiz.vbnd-unknown", text)
	htmlNoExt := writeTemp(t, dir, "scan", []byte("<!DOCTYPE html><html></html>"))
	badJSON := writeTemp(t, dir, "bad.json", []byte(`{"antrag": "Ummeldung",}`))
	array := writeTemp(t, dir, "array.json", []byte(`[{"antrag": "Ummeldung"}]`))
	empty := writeTemp(t, dir, "empty.json", []byte(" \n"))
	trailing := writeTemp(t, dir, "trailing.json", []byte(`{"a": 1} {"b": 2}`))
	caseFile, err := os.ReadFile("testdata/case.json")
	if err != nil {
		t.Fatal(err)
	}
	sent := func(t *testing.T, f *handoverFake) *federationv1.SendHandoverRequest {
		t.Helper()
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.sends) != 1 {
			t.Fatalf("%d SendHandover requests, want 1", len(f.sends))
		}
		return f.sends[0]
	}

	runHandoverCases(t, []handoverCase{
		{
			name: "case file with attachments",
			args: []string{"handover", "send", "-f", "testdata/case.json", "--to", "091840000000", "--service", "99115005000000",
				"--reason", "Zuzug in den Landkreis", "--attach", pdfPath, "--attach", pngPath, "--attach", sniffPath, "--attach", htmlNoExt},
			stdout: []string{"Case handed over to 091840000000.", "Tracking code:  " + testTrackingCode,
				"verbund track " + testTrackingCode, "Handover:", "h-1", "Case:", "C-h-1", "State:", "pending",
				"Envelope SHA-256:", testDigest, "Attachments:", "4", "verbund handover outbox"},
			check: func(t *testing.T, f *handoverFake, _ string) {
				req := sent(t, f)
				if req.GetRecipientOrganisationId() != "091840000000" || req.GetLeikaKey() != "99115005000000" ||
					req.GetReason() != "Zuzug in den Landkreis" || req.GetTrackingCode() != "" || req.GetCaseId() != "" || req.GetIdempotencyKey() != "" {
					t.Errorf("request fields: %v", req)
				}
				jsonEqual(t, []byte(req.GetCaseJson()), caseFile)
				want := []struct {
					name, media string
					data        []byte
				}{
					{"Wohnungsgeberbestätigung.pdf", "application/pdf", pdf},
					{"foto.PNG", "image/png", png},
					{"notiz.vbnd-unknown", "text/plain; charset=utf-8", text},
					{"scan", "text/html; charset=utf-8", []byte("<!DOCTYPE html><html></html>")},
				}
				atts := req.GetAttachments()
				if len(atts) != len(want) {
					t.Fatalf("%d attachments, want %d", len(atts), len(want))
				}
				for i, w := range want {
					a := atts[i]
					if a.GetName() != w.name || a.GetMediaType() != w.media || !bytes.Equal(a.GetData(), w.data) || a.GetSha256() != sha256Hex(w.data) {
						t.Errorf("attachment %d = %q %q sha256 %s (%d bytes), want %q %q sha256 %s",
							i, a.GetName(), a.GetMediaType(), a.GetSha256(), len(a.GetData()), w.name, w.media, sha256Hex(w.data))
					}
				}
			},
		},
		{
			name:   "stdin with tracking code, case id and idempotency key",
			args:   []string{"handover", "send", "--service", "99115005000000", "-f", "-", "--to", "ssc-oberland", "--tracking-code", "ABCD-2025", "--case-id", "K-77", "--idempotency-key", "retry-key-0123456789"},
			stdin:  "\ufeff  {\"antrag\": \"Reisepass\", \"n\": 12345678901234567890}\n",
			stdout: []string{"Tracking code:  ABCD-2025", "K-77"},
			check: func(t *testing.T, f *handoverFake, _ string) {
				req := sent(t, f)
				if req.GetTrackingCode() != "ABCD-2025" || req.GetCaseId() != "K-77" || req.GetIdempotencyKey() != "retry-key-0123456789" ||
					req.GetRecipientOrganisationId() != "ssc-oberland" || len(req.GetAttachments()) != 0 {
					t.Errorf("request fields: %v", req)
				}
				// Sent as written: large numbers are not rounded through float64.
				if req.GetCaseJson() != `{"antrag": "Reisepass", "n": 12345678901234567890}` {
					t.Errorf("case_json = %q", req.GetCaseJson())
				}
			},
		},
		{
			name:   "json output",
			args:   []string{"handover", "send", "--service", "99115005000000", "-f", "testdata/case.json", "--to", "091840000000", "-o", "json"},
			stdout: []string{`"trackingCode": "` + testTrackingCode + `"`, `"state": "OUTBOX_STATE_PENDING"`, `"envelopeSha256"`},
			json:   func() proto.Message { return &federationv1.SendHandoverResponse{} },
		},
		{
			name: "missing --to", args: []string{"handover", "send", "--service", "99115005000000", "-f", "testdata/case.json"},
			wantCode: 2, stderr: []string{"verbund handover send: --to ORG is required", "usage: verbund handover send"},
			check: noCalls,
		},
		{
			name: "missing --service", args: []string{"handover", "send", "-f", "testdata/case.json", "--to", "091840000000"},
			wantCode: 2, stderr: []string{"--service LEIKA is required"}, check: noCalls,
		},
		{
			name: "missing -f", args: []string{"handover", "send", "--service", "99115005000000", "--to", "091840000000"},
			wantCode: 2, stderr: []string{"verbund handover send: -f CASE.json is required"}, check: noCalls,
		},
		{
			name: "bad recipient", args: []string{"handover", "send", "--service", "99115005000000", "-f", "testdata/case.json", "--to", "Köln Stadt"},
			wantCode: 2, stderr: []string{`--to "Köln Stadt": want a 12-digit ARS or a slug`}, check: noCalls,
		},
		{
			name: "bad service", args: []string{"handover", "send", "-f", "testdata/case.json", "--to", "091840000000", "--service", "12345"},
			wantCode: 2, stderr: []string{`--service "12345": want a LeiKa key`}, check: noCalls,
		},
		{
			name: "invalid JSON file", args: []string{"handover", "send", "--service", "99115005000000", "-f", badJSON, "--to", "091840000000"},
			wantCode: 1, stderr: []string{"verbund handover send: " + badJSON + ": invalid JSON"}, check: noCalls,
		},
		{
			name: "JSON array", args: []string{"handover", "send", "--service", "99115005000000", "-f", array, "--to", "091840000000"},
			wantCode: 1, stderr: []string{"case data must be a JSON object"}, check: noCalls,
		},
		{
			name: "two JSON values", args: []string{"handover", "send", "--service", "99115005000000", "-f", trailing, "--to", "091840000000"},
			wantCode: 1, stderr: []string{"data after the top-level value"}, check: noCalls,
		},
		{
			name: "empty file", args: []string{"handover", "send", "--service", "99115005000000", "-f", empty, "--to", "091840000000"},
			wantCode: 1, stderr: []string{"no case data"}, check: noCalls,
		},
		{
			name: "invalid JSON on stdin", args: []string{"handover", "send", "--service", "99115005000000", "-f", "-", "--to", "091840000000"}, stdin: "antrag: Ummeldung",
			wantCode: 1, stderr: []string{"verbund handover send: stdin: invalid JSON"}, check: noCalls,
		},
		{
			name: "missing case file", args: []string{"handover", "send", "--service", "99115005000000", "-f", filepath.Join(dir, "nope.json"), "--to", "091840000000"},
			wantCode: 1, stderr: []string{"read " + filepath.Join(dir, "nope.json")}, check: noCalls,
		},
		{
			name: "missing attachment", args: []string{"handover", "send", "--service", "99115005000000", "-f", "testdata/case.json", "--to", "091840000000", "--attach", filepath.Join(dir, "nope.pdf")},
			wantCode: 1, stderr: []string{"--attach " + filepath.Join(dir, "nope.pdf")}, check: noCalls,
		},
		{
			name: "attachment is a directory", args: []string{"handover", "send", "--service", "99115005000000", "-f", "testdata/case.json", "--to", "091840000000", "--attach", dir},
			wantCode: 1, stderr: []string{"is a directory"}, check: noCalls,
		},
		{
			name: "two attachments with one name", args: []string{"handover", "send", "--service", "99115005000000", "-f", "testdata/case.json", "--to", "091840000000", "--attach", pdfPath, "--attach", pdfPath},
			wantCode: 1, stderr: []string{"two attachments named"}, check: noCalls,
		},
		{
			name: "server error", args: []string{"handover", "send", "--service", "99115005000000", "-f", "testdata/case.json", "--to", "unknown-org"},
			wantCode: 1, stderr: []string{`verbund handover send: not_found: recipient "unknown-org": no encryption key registered`},
		},
	})
}

func TestHandoverSendTooLarge(t *testing.T) {
	dir := t.TempDir()
	// 4 MiB of attachment seals to more than 8 MiB (three base64 layers).
	big := writeTemp(t, dir, "big.bin", bytes.Repeat([]byte{0}, 4<<20))
	runHandoverCases(t, []handoverCase{{
		name: "attachments too large", args: []string{"handover", "send", "--service", "99115005000000", "-f", "testdata/case.json", "--to", "091840000000", "--attach", big},
		wantCode: 1, stderr: []string{"would seal to more than 8.0 MiB"}, check: noCalls,
	}})
}

func TestHandoverOutbox(t *testing.T) {
	runHandoverCases(t, []handoverCase{
		{
			name: "table",
			args: []string{"handover", "outbox"},
			stdout: []string{"ID", "KIND", "TO", "STATE", "ATTEMPTS", "LAST ERROR", "RECEIPT",
				"h-10", "091840000000", "delivered", "yes",
				"h-11", "pending", "unavailable: dial tcp 10.0.0.9:443: connection refused", "no",
				"ev-12", "event: accepted", "failed", "permission_denied: expired", "3 entries"},
			check: func(t *testing.T, f *handoverFake, stdout string) {
				if f.outboxReqs[0].GetState() != federationv1.OutboxState_OUTBOX_STATE_UNSPECIFIED {
					t.Errorf("state filter %v, want none", f.outboxReqs[0].GetState())
				}
				for _, line := range strings.Split(stdout, "\n") {
					if strings.HasPrefix(line, "h-10 ") && !strings.HasSuffix(strings.TrimSpace(line), "yes") {
						t.Errorf("delivered entry without receipt: %q", line)
					}
				}
			},
		},
		{
			name:   "state filter",
			args:   []string{"handover", "outbox", "--state", "failed"},
			stdout: []string{"ev-12", "1 entry\n"},
			check: func(t *testing.T, f *handoverFake, stdout string) {
				if got := f.outboxReqs[0].GetState(); got != federationv1.OutboxState_OUTBOX_STATE_FAILED {
					t.Errorf("state %v, want FAILED", got)
				}
				if strings.Contains(stdout, "h-10") {
					t.Errorf("unfiltered output:\n%s", stdout)
				}
			},
		},
		{
			name:   "paging",
			setup:  func(f *handoverFake) { f.pageCap = 1 },
			args:   []string{"handover", "outbox", "--all"},
			stdout: []string{"h-10", "h-11", "ev-12", "3 entries"},
			check: func(t *testing.T, f *handoverFake, _ string) {
				var tokens []string
				for _, r := range f.outboxReqs {
					tokens = append(tokens, r.GetPageToken())
				}
				if strings.Join(tokens, ",") != ",1,2" {
					t.Errorf("page tokens %q", tokens)
				}
			},
		},
		{
			name:   "limit",
			args:   []string{"handover", "outbox", "--state", "pending", "--limit", "1"},
			stdout: []string{"h-11", "1 entry"},
		},
		{
			name:   "json",
			args:   []string{"handover", "outbox", "-o", "json"},
			stdout: []string{`"id": "h-10"`, `"kind": "OUTBOX_KIND_EVENT"`, `"receipt": "eyJhbGciOiJFZERTQSJ9.e30.sig"`},
			json:   func() proto.Message { return &federationv1.ListOutboxResponse{} },
		},
		{
			name: "bad state", args: []string{"handover", "outbox", "--state", "lost"},
			wantCode: 2, stderr: []string{`--state "lost": want pending, delivered or failed`}, check: noCalls,
		},
	})
}

func TestInbox(t *testing.T) {
	runHandoverCases(t, []handoverCase{
		{
			name: "table",
			args: []string{"inbox"},
			stdout: []string{"ID", "CASE", "FROM", "SERVICE", "STATE", "RECEIVED", "TRACKING", "REASON",
				"h-1", "K-2025-0001", "091620000000", "99115005000000", "received", formatTime(testAt), testTrackingCode,
				"Zuständigkeit Wohnort", "h-5", "completed", "5 cases\n"},
		},
		{
			name:   "state filter",
			args:   []string{"inbox", "--state", "received"},
			stdout: []string{"h-1", "h-3", "h-5", "3 cases"},
			check: func(t *testing.T, f *handoverFake, stdout string) {
				if got := f.inboxReqs[0].GetState(); got != federationv1.CaseState_CASE_STATE_RECEIVED {
					t.Errorf("state %v, want RECEIVED", got)
				}
				if strings.Contains(stdout, "h-2") {
					t.Errorf("unfiltered output:\n%s", stdout)
				}
			},
		},
		{
			name:   "all pages",
			setup:  func(f *handoverFake) { f.pageCap = 2 },
			args:   []string{"inbox", "--all"},
			stdout: []string{"h-1", "h-2", "h-3", "h-4", "h-5", "5 cases\n"},
			check: func(t *testing.T, f *handoverFake, _ string) {
				var tokens []string
				for _, r := range f.inboxReqs {
					tokens = append(tokens, r.GetPageToken())
					if r.GetPageSize() != maxPageSize {
						t.Errorf("page size %d, want %d", r.GetPageSize(), maxPageSize)
					}
				}
				if strings.Join(tokens, ",") != ",2,4" {
					t.Errorf("page tokens %q, want \"\", 2, 4", tokens)
				}
			},
		},
		{
			name:   "limit",
			args:   []string{"inbox", "--limit", "2"},
			stdout: []string{"h-1", "h-2", "2 cases shown, more match (use --all or a higher --limit)"},
			check: func(t *testing.T, f *handoverFake, stdout string) {
				if len(f.inboxReqs) != 1 || f.inboxReqs[0].GetPageSize() != 2 {
					t.Errorf("requests %v", f.inboxReqs)
				}
				if strings.Contains(stdout, "h-3") {
					t.Errorf("more than --limit shown:\n%s", stdout)
				}
			},
		},
		{
			name:   "empty",
			args:   []string{"inbox", "--state", "forwarded"},
			stdout: []string{"no cases"},
		},
		{
			name:   "json",
			args:   []string{"inbox", "-o", "json", "--state", "accepted"},
			stdout: []string{`"handoverId": "h-2"`, `"state": "CASE_STATE_ACCEPTED"`},
			json:   func() proto.Message { return &federationv1.ListInboxResponse{} },
		},
		{
			name: "bad state", args: []string{"inbox", "--state", "open"},
			wantCode: 2, stderr: []string{`--state "open": want received, accepted`}, check: noCalls,
		},
		{
			name: "unexpected argument", args: []string{"inbox", "h-1"},
			wantCode: 2, stderr: []string{`verbund inbox: unexpected argument "h-1"`}, check: noCalls,
		},
	})
}

func TestCaseCommands(t *testing.T) {
	saveDir := filepath.Join(t.TempDir(), "anlagen")
	existing := t.TempDir()
	writeTemp(t, existing, "wohnungsgeber.pdf", []byte("kept"))
	runHandoverCases(t, []handoverCase{
		{
			name: "show table",
			args: []string{"case", "show", "h-1"},
			stdout: []string{
				"Handover:", "h-1", "Case:", "K-2025-0001", "From:", "091620000000", "State:", "received",
				"Tracking code:", testTrackingCode, "Received:", formatTime(testAt),
				"Case data:\n  {\n    \"antrag\": \"Ummeldung\",\n    \"person\": {\n      \"familienname\": \"Mustermann\",",
				"Attachments:", "wohnungsgeber.pdf", "application/pdf", "13 B", sha256Hex([]byte("%PDF-1.7 test")),
				"History (earlier handovers):", "051110000000 → 091620000000", "h-0",
				"Events:", "rejected", "delivered", "ev-1", "Nicht zuständig: Wohnort liegt außerhalb (https://verbund.example/problems/not-responsible)",
			},
			check: func(t *testing.T, f *handoverFake, stdout string) {
				if strings.Contains(stdout, testCase.GetSignedHandover()) {
					t.Errorf("table shows the signed handover:\n%s", stdout)
				}
			},
		},
		{
			name:   "show json",
			args:   []string{"case", "show", "h-1", "-o", "json"},
			stdout: []string{`"caseJson":`, `"signedHandover": "` + testCase.GetSignedHandover() + `"`, `"mediaType": "application/pdf"`},
			json:   func() proto.Message { return &federationv1.GetCaseResponse{} },
		},
		{
			name:   "show and save attachments",
			args:   []string{"case", "show", "h-1", "--save", saveDir},
			stdout: []string{"wohnungsgeber.pdf"},
			stderr: []string{"saved " + filepath.Join(saveDir, "wohnungsgeber.pdf")},
			check: func(t *testing.T, _ *handoverFake, _ string) {
				b, err := os.ReadFile(filepath.Join(saveDir, "wohnungsgeber.pdf"))
				if err != nil || string(b) != "%PDF-1.7 test" {
					t.Errorf("saved attachment: %q, %v", b, err)
				}
			},
		},
		{
			name: "save does not overwrite", args: []string{"case", "show", "h-1", "--save", existing},
			wantCode: 1, stderr: []string{"file exists"},
			check: func(t *testing.T, _ *handoverFake, _ string) {
				if b, _ := os.ReadFile(filepath.Join(existing, "wohnungsgeber.pdf")); string(b) != "kept" {
					t.Errorf("existing file overwritten: %q", b)
				}
			},
		},
		{
			name: "show unknown", args: []string{"case", "show", "h-9"},
			wantCode: 1, stderr: []string{"verbund case show: not_found: case h-9 not found"},
		},
		{
			name: "show without id", args: []string{"case", "show"},
			wantCode: 2, stderr: []string{"verbund case show: missing case ID"}, check: noCalls,
		},
		{
			name:   "accept",
			args:   []string{"case", "accept", "h-1"},
			stdout: []string{"Case h-1 accepted.", "State:", "accepted", "Event:", "ev-accept"},
			check: func(t *testing.T, f *handoverFake, _ string) {
				if len(f.accepts) != 1 || f.accepts[0] != "h-1" {
					t.Errorf("accepts %q", f.accepts)
				}
			},
		},
		{
			name: "accept refused", args: []string{"case", "accept", "h-4"},
			wantCode: 1, stderr: []string{"verbund case accept: failed_precondition: case h-4 is completed"},
		},
		{
			name: "reject",
			args: []string{"case", "reject", "h-1", "--type", "https://verbund.example/problems/not-responsible",
				"--title", "Nicht zuständig", "--detail", "Der Wohnort liegt außerhalb des Kreises."},
			stdout: []string{"Case h-1 rejected.", "rejected", "ev-reject"},
			check: func(t *testing.T, f *handoverFake, _ string) {
				want := &federationv1.RejectCaseRequest{HandoverId: "h-1", Problem: &federationv1.Problem{
					Type: "https://verbund.example/problems/not-responsible", Title: "Nicht zuständig", Detail: "Der Wohnort liegt außerhalb des Kreises.",
				}}
				if len(f.rejects) != 1 || !proto.Equal(f.rejects[0], want) {
					t.Errorf("rejects %v, want %v", f.rejects, want)
				}
			},
		},
		{
			name:   "reject json",
			args:   []string{"case", "reject", "h-1", "--type", "about:blank", "--title", "Unvollständig", "-o", "json"},
			stdout: []string{`"eventId": "ev-reject"`, `"state": "CASE_STATE_REJECTED"`},
			json:   func() proto.Message { return &federationv1.RejectCaseResponse{} },
			check: func(t *testing.T, f *handoverFake, _ string) {
				if p := f.rejects[0].GetProblem(); p.GetDetail() != "" || p.GetType() != "about:blank" {
					t.Errorf("problem %v", p)
				}
			},
		},
		{
			name: "reject without title", args: []string{"case", "reject", "h-1", "--type", "https://verbund.example/p"},
			wantCode: 2, stderr: []string{"verbund case reject: --type URI and --title TEXT are required"}, check: noCalls,
		},
		{
			name: "reject with relative type", args: []string{"case", "reject", "h-1", "--type", "not-responsible", "--title", "x"},
			wantCode: 2, stderr: []string{`--type "not-responsible": want an absolute URI`}, check: noCalls,
		},
		{
			name:   "complete",
			args:   []string{"case", "complete", "h-2"},
			stdout: []string{"Case h-2 completed.", "completed", "ev-complete"},
			check: func(t *testing.T, f *handoverFake, _ string) {
				if len(f.completes) != 1 || f.completes[0] != "h-2" {
					t.Errorf("completes %q", f.completes)
				}
			},
		},
		{
			name:   "forward",
			args:   []string{"case", "forward", "h-1", "--to", "ssc-oberland", "--reason", "Zuständig ist das Servicezentrum"},
			stdout: []string{"Case h-1 forwarded to ssc-oberland.", "New handover:", "h-20", "ev-forward", "forwarded"},
			check: func(t *testing.T, f *handoverFake, _ string) {
				want := &federationv1.ForwardCaseRequest{HandoverId: "h-1", RecipientOrganisationId: "ssc-oberland", Reason: "Zuständig ist das Servicezentrum"}
				if len(f.forwards) != 1 || !proto.Equal(f.forwards[0], want) {
					t.Errorf("forwards %v, want %v", f.forwards, want)
				}
			},
		},
		{
			name: "forward without --to", args: []string{"case", "forward", "h-1"},
			wantCode: 2, stderr: []string{"verbund case forward: --to ORG is required"}, check: noCalls,
		},
		{
			name: "unknown subcommand", args: []string{"case", "close", "h-1"},
			wantCode: 2, stderr: []string{`verbund case: unknown command "close"`, "forward"}, check: noCalls,
		},
	})
}

func TestTrack(t *testing.T) {
	runHandoverCases(t, []handoverCase{
		{
			name: "table",
			args: []string{"track", testTrackingCode},
			stdout: []string{"Case " + testTrackingCode, "TIME", "ORGANISATION", "STEP", "FROM → TO", "VERIFIED",
				formatTime(testAt), "handed over", "091620000000 → 091840000000", "✓",
				"forwarded to ssc-oberland",
				"091840000000 → ssc-oberland", "✗ not delivered yet",
				"rejected: Unvollständig", "✗ signature does not verify with key ssc-sig-1",
				"2 of 4 steps verified", "Unreachable (their steps may be missing): by-lfst"},
			check: func(t *testing.T, f *handoverFake, stdout string) {
				if len(f.tracks) != 1 || f.tracks[0] != testTrackingCode {
					t.Errorf("tracks %q", f.tracks)
				}
				if strings.Contains(stdout, "receipt.jws.token") {
					t.Errorf("table shows signed tokens:\n%s", stdout)
				}
				lines := strings.Split(stdout, "\n")
				var rows []string
				for _, l := range lines {
					if strings.HasPrefix(l, formatTime(testAt)[:10]) {
						rows = append(rows, l)
					}
				}
				if len(rows) != 4 || !strings.HasSuffix(rows[0], "✓") || !strings.Contains(rows[2], "✗") {
					t.Errorf("timeline rows:\n%s", strings.Join(rows, "\n"))
				}
			},
		},
		{
			name: "json has the signed tokens",
			args: []string{"track", testTrackingCode, "-o", "json"},
			stdout: []string{`"signedToken": "receipt.jws.token"`, `"signedToken": "forged.jws.token"`, `"verified": true`,
				`"verificationError": "not delivered yet"`, `"unreachableOrganisationIds": [`},
			json: func() proto.Message { return &federationv1.TrackCaseResponse{} },
		},
		{
			name: "unknown code", args: []string{"track", "NOPE-0000"},
			wantCode: 1, stderr: []string{`verbund track: not_found: no case with tracking code "NOPE-0000"`},
		},
		{
			name: "missing code", args: []string{"track"},
			wantCode: 2, stderr: []string{"verbund track: missing tracking CODE"}, check: noCalls,
		},
	})
}

func TestAuditVerify(t *testing.T) {
	runHandoverCases(t, []handoverCase{
		{
			name: "ok",
			args: []string{"audit", "verify"},
			stdout: []string{"Audit log:", "ok", "Entries:", "42", "Head:", "#42 " + strings.Repeat("c", 64),
				"Published heads checked:", "2", strings.Repeat("d", 64), strings.Repeat("e", 64)},
		},
		{
			name:   "ok json",
			args:   []string{"audit", "verify", "-o", "json"},
			stdout: []string{`"ok": true`, `"entries": "42"`},
			json:   func() proto.Message { return &federationv1.VerifyAuditResponse{} },
		},
		{
			name:     "not ok",
			setup:    func(f *handoverFake) { f.auditFail = true },
			args:     []string{"audit", "verify"},
			wantCode: 1,
			stdout:   []string{"Audit log:", "FAILED", "Error:", "entry 17: hash does not chain", "Entries:", "42"},
			stderr:   []string{"verbund audit verify: the audit log does not verify: audit: entry 17: hash does not chain"},
		},
		{
			name:     "not ok json",
			setup:    func(f *handoverFake) { f.auditFail = true },
			args:     []string{"audit", "verify", "-o", "json"},
			wantCode: 1,
			stdout:   []string{`"error": "audit: entry 17: hash does not chain"`},
			json:     func() proto.Message { return &federationv1.VerifyAuditResponse{} },
		},
		{
			name: "unexpected argument", args: []string{"audit", "verify", "now"},
			wantCode: 2, stderr: []string{`verbund audit verify: unexpected argument "now"`}, check: noCalls,
		},
	})
}

func TestHandoverHelp(t *testing.T) {
	t.Setenv("VERBUND_ADDR", "")
	tests := []struct {
		name   string
		args   []string
		stdout []string
	}{
		{"top-level help lists the commands", []string{"help"}, []string{"handover", "inbox", "case", "track", "audit"}},
		{"handover group", []string{"handover", "-h"}, []string{"usage: verbund handover <command>", "send", "outbox"}},
		{"send flags", []string{"handover", "send", "-h"}, []string{"usage: verbund handover send -f CASE.json --to ORG", "-attach", "-idempotency-key", "-tracking-code", "cli/testdata/case.json", "http://127.0.0.1:8080"}},
		{"case group", []string{"help", "case"}, []string{"show", "accept", "reject", "complete", "forward"}},
		{"reject flags", []string{"case", "reject", "-h"}, []string{"RFC 7807", "-type", "-title", "-detail"}},
		{"track", []string{"track", "-h"}, []string{"usage: verbund track CODE", "-o"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, nil, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			contains(t, "stdout", stdout, tc.stdout)
		})
	}
}

func TestMediaType(t *testing.T) {
	tests := []struct {
		name, file string
		data       []byte
		want       string
	}{
		{"pdf by extension", "a.pdf", []byte("anything"), "application/pdf"},
		{"upper-case extension", "B.JPG", nil, "image/jpeg"},
		{"sniffed pdf", "scan", []byte("%PDF-1.4\n"), "application/pdf"},
		{"sniffed binary", "blob.vbnd-unknown", []byte{0, 1, 2, 3}, "application/octet-stream"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := mediaType(tc.file, tc.data); got != tc.want {
				t.Errorf("mediaType(%q) = %q, want %q", tc.file, got, tc.want)
			}
		})
	}
}
