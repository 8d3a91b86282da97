package handover

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/keys"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

func claimsAB(id string) envelope.Claims {
	now := time.Now()
	return envelope.Claims{
		ID: id, Issuer: orgA, Audience: orgB, IssuedAt: now, Expiry: now.Add(time.Hour),
		CaseID: "A-1", TrackingCode: "VB-TEST-TEST-TEST", ServiceKey: leika,
		Data: json.RawMessage(`{"n":1}`),
	}
}

func seal(t testing.TB, c envelope.Claims, signer jose.JSONWebKey, to jose.JSONWebKey) string {
	t.Helper()
	tok, err := envelope.Seal(context.Background(), c, signer, to.Public())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// state is what a rejected delivery must not change.
type state struct {
	inbox []*federationv1.CaseSummary
	head  AuditHead
	seen  int
}

func snapshot(t testing.TB, s *Service) state {
	t.Helper()
	return state{inbox: inbox(t, s), head: storedHead(t, s), seen: countKeys(t, s, pSeen)}
}

func (a state) equal(b state) bool {
	if len(a.inbox) != len(b.inbox) || a.head != b.head || a.seen != b.seen {
		return false
	}
	for i := range a.inbox {
		if !proto.Equal(a.inbox[i], b.inbox[i]) {
			return false
		}
	}
	return true
}

// TestDeliveryAttacks: every malicious delivery is refused with the right
// code, counted by reason, and leaves inbox, dedupe records and audit log
// unchanged.
func TestDeliveryAttacks(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry()
	a := newNode(t, reg, orgA, nil)
	b := newNode(t, reg, orgB, nil)
	cn := newNode(t, reg, orgC, nil)
	res, err := a.s().SendHandover(ctx, caseRequest(orgB, 1))
	if err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, a, res.HandoverId)
	acc, err := b.s().AcceptCase(ctx, &federationv1.AcceptCaseRequest{HandoverId: res.HandoverId})
	if err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, b, acc.EventId)

	forged := keys.SigningFromSeed(a.sig.KeyID, seed("forger")) // A's kid, another key
	unpublished := sigKey("org-a-sig-9")
	big := strings.Repeat("A", envelope.MaxEnvelopeSize+1)
	huge := strings.Repeat("A", MaxRequestBytes+1)
	now := time.Now()
	for _, tc := range []struct {
		name   string
		target *node
		event  bool
		token  func() string
		code   connect.Code
		reason string
	}{
		{"replay of a delivered jti with other content", b, false, func() string {
			c := claimsAB(res.HandoverId)
			c.Data = json.RawMessage(`{"n":"other"}`)
			return seal(t, c, a.sig, b.enc)
		}, connect.CodeAlreadyExists, "replay"},
		{"addressed to another organisation (aud)", b, false, func() string {
			c := claimsAB(envelope.NewID())
			c.Audience = orgC
			return seal(t, c, a.sig, b.enc)
		}, connect.CodePermissionDenied, "audience"},
		{"encrypted to another organisation", b, false, func() string {
			cl := claimsAB(envelope.NewID())
			cl.Audience = orgC
			return seal(t, cl, a.sig, cn.enc)
		}, connect.CodeUnauthenticated, "unknown_key"},
		{"oversized envelope", b, false, func() string { return big }, connect.CodeResourceExhausted, "too_large"},
		// The server answers before reading the body; the client may see
		// that answer or a reset connection (code not checked).
		{"oversized request", b, false, func() string { return huge }, connect.CodeUnknown, "too_large"},
		{"forged signature (sender's kid, other key)", b, false, func() string {
			return seal(t, claimsAB(envelope.NewID()), forged, b.enc)
		}, connect.CodeUnauthenticated, "signature"},
		{"unpublished signing key", b, false, func() string {
			return seal(t, claimsAB(envelope.NewID()), unpublished, b.enc)
		}, connect.CodeUnauthenticated, "unknown_key"},
		{"key of another organisation", b, false, func() string {
			return seal(t, claimsAB(envelope.NewID()), cn.sig, b.enc)
		}, connect.CodeUnauthenticated, "key_not_owned"},
		{"tampered ciphertext", b, false, func() string {
			tok := seal(t, claimsAB(envelope.NewID()), a.sig, b.enc)
			p := strings.Split(tok, ".")
			ct := []byte(p[3])
			if ct[5] == 'A' {
				ct[5] = 'B'
			} else {
				ct[5] = 'A'
			}
			p[3] = string(ct)
			return strings.Join(p, ".")
		}, connect.CodeUnauthenticated, "decrypt"},
		{"expired", b, false, func() string {
			c := claimsAB(envelope.NewID())
			c.IssuedAt, c.Expiry = now.Add(-3*time.Hour), now.Add(-2*time.Hour)
			return seal(t, c, a.sig, b.enc)
		}, connect.CodeFailedPrecondition, "expired"},
		{"malformed", b, false, func() string { return "a.b.c.d.e" }, connect.CodeInvalidArgument, "malformed"},
		{"event as handover", b, false, func() string {
			return sealEvent(t, envelope.Event{ID: envelope.NewID(), Issuer: orgA, Audience: orgB, IssuedAt: now,
				Expiry: now.Add(time.Hour), Type: envelope.EventAccept, HandoverID: res.HandoverId, CaseID: "x"}, a.sig, b.enc)
		}, connect.CodeInvalidArgument, "header"},
		{"event about a handover not sent to the issuer", a, true, func() string {
			return sealEvent(t, envelope.Event{ID: envelope.NewID(), Issuer: orgC, Audience: orgA, IssuedAt: now,
				Expiry: now.Add(time.Hour), Type: envelope.EventComplete, HandoverID: res.HandoverId, CaseID: "x"}, cn.sig, a.enc)
		}, connect.CodePermissionDenied, "unknown_handover"},
		{"replay of a delivered event jti with other content", a, true, func() string {
			return sealEvent(t, envelope.Event{ID: acc.EventId, Issuer: orgB, Audience: orgA, IssuedAt: now,
				Expiry: now.Add(time.Hour), Type: envelope.EventReject, HandoverID: res.HandoverId, CaseID: "x",
				Problem: &envelope.Problem{Type: "about:blank", Title: "x"}}, b.sig, a.enc)
		}, connect.CodeAlreadyExists, "replay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.target.s()
			before := snapshot(t, s)
			rej := s.Stats().Rejected[tc.reason]
			var err error
			if tc.event {
				_, err = tc.target.client().DeliverEvent(ctx, connect.NewRequest(&federationv1.DeliverEventRequest{Token: tc.token()}))
			} else {
				_, err = tc.target.client().DeliverHandover(ctx, connect.NewRequest(&federationv1.DeliverHandoverRequest{Token: tc.token()}))
			}
			if err == nil || (connect.CodeOf(err) != tc.code && tc.name != "oversized request") {
				t.Fatalf("got %v (%v), want code %v", connect.CodeOf(err), err, tc.code)
			}
			if got := s.Stats().Rejected[tc.reason]; got != rej+1 {
				t.Fatalf("rejections for %q: %d -> %d (all: %v)", tc.reason, rej, got, s.Stats().Rejected)
			}
			if after := snapshot(t, s); !before.equal(after) {
				t.Fatalf("state changed by a rejected delivery")
			}
		})
	}
	// The genuine case is still there, once.
	if cs := inbox(t, b.s()); len(cs) != 1 || cs[0].HandoverId != res.HandoverId {
		t.Fatalf("inbox: %v", cs)
	}
}

func sealEvent(t testing.TB, e envelope.Event, signer, to jose.JSONWebKey) string {
	t.Helper()
	tok, err := envelope.SealEvent(context.Background(), e, signer, to.Public())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestVerifyEvent: the client-side verification TrackCase uses refuses
// forged, re-typed and tampered tokens and accepts events signed with a
// key that has been rotated out since (valid at the moment the event was
// recorded).
func TestVerifyEvent(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry()
	k := sigKey("org-b-sig-1")
	reg.publishSig(orgB, k, time.Now().Add(-time.Hour))
	now := time.Now()
	ev := envelope.Event{ID: envelope.NewID(), Issuer: orgB, Audience: orgA, IssuedAt: now, Expiry: now.Add(time.Hour),
		Type: envelope.EventAccept, HandoverID: envelope.NewID(), CaseID: "c"}
	aEnc := encKey(t, "org-a-enc-1")
	tok := sealEvent(t, ev, k, aEnc)
	o, err := envelope.OpenEvent(ctx, tok, []jose.JSONWebKey{aEnc}, reg, orgA, now)
	if err != nil {
		t.Fatal(err)
	}
	recorded := keys.At(1, now)
	got, err := envelope.VerifyEvent(ctx, o.SignedJWS, reg, recorded)
	if err != nil || got.ID != ev.ID || got.Type != envelope.EventAccept {
		t.Fatalf("genuine: %v %v", got, err)
	}
	reg.retire(k.KeyID, now.Add(time.Minute)) // rotated since: still valid when recorded
	if _, err := envelope.VerifyEvent(ctx, o.SignedJWS, reg, recorded); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	p := strings.Split(o.SignedJWS, ".")
	for name, bad := range map[string]string{
		"tampered payload": p[0] + "." + p[1][:len(p[1])-2] + "AA." + p[2],
		"no signature":     p[0] + "." + p[1] + ".",
		"alg none":         "eyJhbGciOiJub25lIiwia2lkIjoib3JnLWItc2lnLTEiLCJ0eXAiOiJ2ZXJidW5kLWV2ZW50K2p3cyJ9." + p[1] + ".",
		"receipt typ":      "eyJhbGciOiJFZERTQSIsImtpZCI6Im9yZy1iLXNpZy0xIiwidHlwIjoidmVyYnVuZC1yZWNlaXB0K2p3cyJ9." + p[1] + "." + p[2],
		"embedded jwk":     "eyJhbGciOiJFZERTQSIsImp3ayI6e30sImtpZCI6Im9yZy1iLXNpZy0xIiwidHlwIjoidmVyYnVuZC1ldmVudCtqd3MifQ." + p[1] + "." + p[2],
	} {
		if _, err := envelope.VerifyEvent(ctx, bad, reg, recorded); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The genuine payload signed with another key under the issuer's kid.
	forged := keys.SigningFromSeed(k.KeyID, seed("forger"))
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: forged},
		(&jose.SignerOptions{}).WithType(envelope.TypeEventJWS))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(p[1])
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	fj, _ := obj.CompactSerialize()
	if _, err := envelope.VerifyEvent(ctx, fj, reg, recorded); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("forged event JWS: %v", err)
	}
}
