package handover

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/keys"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
)

// fuzzNow is the recipient's clock in the fuzz test, so that committed
// seeds (sealed for this time with deterministic keys) stay valid.
var fuzzNow = time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)

func fuzzRegistry() *registry {
	reg := newRegistry()
	year := 365 * 24 * time.Hour
	for _, org := range []string{orgA, orgB, orgC} {
		reg.publishSig(org, sigKey(org+"-sig-1"), fuzzNow.Add(-year))
	}
	return reg
}

// fuzzSeeds returns real envelopes for org-b: valid ones and near misses.
func fuzzSeeds(t testing.TB) []string {
	bEnc, cEnc := encKey(t, orgB+"-enc-1"), encKey(t, orgC+"-enc-1")
	aSig := sigKey(orgA + "-sig-1")
	claims := func(id string) envelope.Claims {
		return envelope.Claims{
			ID: id, Issuer: orgA, Audience: orgB, IssuedAt: fuzzNow.Add(-time.Minute), Expiry: fuzzNow.Add(30 * 24 * time.Hour),
			CaseID: "A-2026-1", TrackingCode: "VB-FUZZ-0000-0001", ServiceKey: leika, Reason: "change of residence",
			Data:        json.RawMessage(`{"applicant":{"name":"Erika Mustermann"}}`),
			Attachments: []envelope.Attachment{envelope.NewAttachment("a.pdf", "application/pdf", []byte("%PDF"))},
			Previous:    []envelope.Hop{{HandoverID: "h0", From: orgC, To: orgA, At: fuzzNow.Add(-time.Hour)}},
		}
	}
	var out []string
	valid := seal(t, claims("fuzz-seed-0001"), aSig, bEnc)
	out = append(out, valid)
	other := claims("fuzz-seed-0001") // same jti, other content: a replay
	other.Reason = "other"
	out = append(out, seal(t, other, aSig, bEnc))
	wrongAud := claims("fuzz-seed-0002")
	wrongAud.Audience = orgC
	out = append(out, seal(t, wrongAud, aSig, bEnc), seal(t, wrongAud, aSig, cEnc))
	expired := claims("fuzz-seed-0003")
	expired.IssuedAt, expired.Expiry = fuzzNow.Add(-48*time.Hour), fuzzNow.Add(-24*time.Hour)
	out = append(out, seal(t, expired, aSig, bEnc))
	out = append(out, seal(t, claims("fuzz-seed-0004"), sigKey(orgC+"-sig-1"), bEnc))
	ev := envelope.Event{ID: "fuzz-ev-1", Issuer: orgA, Audience: orgB, IssuedAt: fuzzNow, Expiry: fuzzNow.Add(time.Hour),
		Type: envelope.EventAccept, HandoverID: "h", CaseID: "c"}
	out = append(out, sealEvent(t, ev, aSig, bEnc))
	p := strings.Split(valid, ".")
	out = append(out, strings.Join(p[:4], "."), p[0]+"."+p[1]+"."+p[2]+"."+p[3]+"x."+p[4], "", "....", p[0])
	return out
}

// deliverBody is the protobuf body of a DeliverHandoverRequest carrying
// token as raw bytes (also when they are not valid UTF-8).
func deliverBody(token string) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendString(b, token)
}

type fuzzState struct {
	inbox, seen, digests, bodies int
	head                         AuditHead
}

func fuzzSnapshot(t *testing.T, s *Service) fuzzState {
	return fuzzState{countKeys(t, s, pInbox), countKeys(t, s, pSeen), countKeys(t, s, pDigest), countKeys(t, s, pInboxBody), storedHead(t, s)}
}

// FuzzDeliverHandover feeds arbitrary tokens to the recipient's Connect
// handler. It must never panic; a refused delivery must leave inbox,
// dedupe records and audit log unchanged; an accepted one must return a
// receipt that verifies for exactly the bytes sent, and at most one new
// inbox entry.
func FuzzDeliverHandover(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	reg := fuzzRegistry()
	db, err := badger.Open(badger.DefaultOptions(f.TempDir()).WithLogger(nil).WithMemTableSize(8 << 20))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	svc, err := New(Config{
		OrgID: orgB, Keys: staticKeys{sigKey(orgB + "-sig-1"), encKey(f, orgB+"-enc-1")},
		DB: db, Resolver: reg, Directory: reg, Dialer: &dialer{hc: http.DefaultClient},
		Now: func() time.Time { return fuzzNow }, Logger: quietLogger(),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { svc.Close() })
	_, h := WireHandler(svc)
	f.Fuzz(func(t *testing.T, token string) {
		before := fuzzSnapshot(t, svc)
		rejBefore := svc.Stats().RejectedTotal()
		req := httptest.NewRequest(http.MethodPost, federationv1connect.HandoverServiceDeliverHandoverProcedure, bytes.NewReader(deliverBody(token)))
		req.Header.Set("Content-Type", "application/proto")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		after := fuzzSnapshot(t, svc)
		if rec.Code != http.StatusOK {
			if after != before {
				t.Fatalf("refused delivery (%d %s) changed the state: %+v -> %+v", rec.Code, rec.Body.String(), before, after)
			}
			if rec.Code < 500 && svc.Stats().RejectedTotal() == rejBefore && rec.Code != http.StatusBadRequest {
				// Refusals by the envelope checks are counted (400 can
				// also be a body Connect could not decode).
				t.Fatalf("refusal %d not counted: %s", rec.Code, rec.Body.String())
			}
			return
		}
		var res federationv1.DeliverHandoverResponse
		if err := proto.Unmarshal(rec.Body.Bytes(), &res); err != nil {
			t.Fatal(err)
		}
		r, err := envelope.VerifyReceipt(context.Background(), res.Receipt, reg, orgB, envelope.Digest(token), keys.Now(fuzzNow))
		if err != nil {
			t.Fatalf("accepted, but the receipt does not verify: %v", err)
		}
		if d := after.inbox - before.inbox; d > 1 || (d == 1) != (after.head.Seq == before.head.Seq+1) {
			t.Fatalf("accepted delivery of %s: %+v -> %+v", r.HandoverID, before, after)
		}
	})
}

// TestWriteFuzzCorpus writes the seeds to testdata/fuzz (run with
// HANDOVER_WRITE_CORPUS=1 to regenerate).
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("HANDOVER_WRITE_CORPUS") == "" {
		t.Skip("set HANDOVER_WRITE_CORPUS=1 to regenerate testdata/fuzz")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDeliverHandover")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds(t) {
		sum := sha256.Sum256([]byte(s))
		name := filepath.Join(dir, fmt.Sprintf("seed-%02d-%x", i, sum[:6]))
		body := fmt.Sprintf("go test fuzz v1\nstring(%q)\n", s)
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFuzzSeeds: the committed seeds still mean what they should: the
// first is a valid envelope (accepted), the second a replay of its jti.
func TestFuzzSeeds(t *testing.T) {
	reg := fuzzRegistry()
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	svc, err := New(Config{
		OrgID: orgB, Keys: staticKeys{sigKey(orgB + "-sig-1"), encKey(t, orgB+"-enc-1")},
		DB: db, Resolver: reg, Directory: reg, Dialer: &dialer{hc: http.DefaultClient},
		Now: func() time.Time { return fuzzNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	seeds := fuzzSeeds(t)
	if _, err := svc.DeliverHandover(context.Background(), seeds[0]); err != nil {
		t.Fatalf("valid seed refused: %v", err)
	}
	if _, err := svc.DeliverHandover(context.Background(), seeds[1]); connect.CodeOf(WireError(err)) != connect.CodeOf(WireError(ErrReplay)) {
		t.Fatalf("replay seed: %v", err)
	}
	for _, s := range seeds[2:] {
		if _, err := svc.DeliverHandover(context.Background(), s); err == nil {
			t.Fatalf("bad seed accepted")
		}
	}
}
