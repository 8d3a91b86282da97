package handover

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"

	"github.com/verbund/verbund/federation/envelope"
)

// forgingPeer carries deliveries to the real recipient (which takes the
// handover in and signs a genuine receipt) and, while forge is set,
// answers the sender with forge(genuine receipt) instead: a man in the
// middle, or a recipient that answers with something other than proof.
type forgingPeer struct {
	Peer
	forge atomic.Pointer[func(genuine string) string]
}

func (p *forgingPeer) DeliverHandover(ctx context.Context, token string) (string, error) {
	r, err := p.Peer.DeliverHandover(ctx, token)
	if f := p.forge.Load(); err == nil && f != nil {
		return (*f)(r), nil
	}
	return r, err
}

type forgingDialer struct {
	inner Dialer
	peer  *forgingPeer
}

func (d forgingDialer) Peer(endpoint string) Peer {
	if d.peer.Peer == nil {
		d.peer.Peer = d.inner.Peer(endpoint)
	}
	return d.peer
}

// receiptClaims decodes a compact receipt JWS's payload (no verification).
func receiptClaims(t testing.TB, jws string) envelope.Receipt {
	t.Helper()
	parts := strings.Split(jws, ".")
	if len(parts) != 3 {
		t.Fatalf("receipt is not a compact JWS: %q", jws)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var w struct {
		Issuer     string `json:"iss"`
		Audience   string `json:"aud"`
		HandoverID string `json:"handover_jti"`
		Digest     string `json:"envelope_sha256"`
		ReceivedAt int64  `json:"received_at"`
		Status     string `json:"status"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	return envelope.Receipt{Issuer: w.Issuer, Audience: w.Audience, HandoverID: w.HandoverID, Digest: w.Digest,
		ReceivedAt: time.Unix(w.ReceivedAt, 0).UTC(), Status: w.Status}
}

// TestUnverifiedReceiptIsNoProof: a receipt is proof of delivery only once
// the sender has verified it. A delivery answered with a receipt signed by
// the wrong key, for another envelope, by another organisation, or with
// garbage is counted in Stats().BadReceipts, not marked delivered, and
// retried; once the recipient's genuine receipt comes back the handover is
// delivered, exactly once, with a receipt that verifies offline.
func TestUnverifiedReceiptIsNoProof(t *testing.T) {
	mallory := sigKey("mallory-sig-1")
	cases := []struct {
		name  string
		forge func(t testing.TB, genuine string) string
	}{
		{"signed by an unknown key under the recipient's kid", func(t testing.TB, genuine string) string {
			k := mallory
			k.KeyID = sigKey(orgB + "-sig-1").KeyID
			s, err := envelope.SignReceipt(receiptClaims(t, genuine), k)
			if err != nil {
				t.Error(err)
			}
			return s
		}},
		{"for another envelope", func(t testing.TB, genuine string) string {
			r := receiptClaims(t, genuine)
			d := sha256.Sum256([]byte("another envelope"))
			r.Digest = hex.EncodeToString(d[:])
			s, err := envelope.SignReceipt(r, sigKey(orgB+"-sig-1"))
			if err != nil {
				t.Error(err)
			}
			return s
		}},
		{"signed by another organisation", func(t testing.TB, genuine string) string {
			r := receiptClaims(t, genuine)
			r.Issuer = orgC
			s, err := envelope.SignReceipt(r, sigKey(orgC+"-sig-1"))
			if err != nil {
				t.Error(err)
			}
			return s
		}},
		{"garbage", func(testing.TB, string) string { return "garbage.garbage.garbage" }},
		{"empty", func(testing.TB, string) string { return "" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			reg := newRegistry()
			reg.publishSig(orgC, sigKey(orgC+"-sig-1"), time.Now().Add(-24*time.Hour))
			peer := &forgingPeer{}
			forge := func(genuine string) string { return tc.forge(t, genuine) }
			peer.forge.Store(&forge)
			a := newNode(t, reg, orgA, func(c *Config) {
				c.Dialer = forgingDialer{inner: &dialer{hc: http.DefaultClient}, peer: peer}
			})
			b := newNode(t, reg, orgB, nil)

			res, err := a.s().SendHandover(ctx, caseRequest(orgB, 1))
			if err != nil {
				t.Fatal(err)
			}
			// Several refused receipts: the delivery is retried, never stored.
			// (The wait ends early if the entry leaves PENDING.)
			stored := func() *federationv1.OutboxEntry {
				for _, o := range outbox(t, a.s()) {
					if o.Id == res.HandoverId && (o.State != federationv1.OutboxState_OUTBOX_STATE_PENDING || o.Receipt != "") {
						return o
					}
				}
				return nil
			}
			waitFor(t, 10*time.Second, "three refused receipts", func() bool { return a.totalStats().BadReceipts >= 3 || stored() != nil })
			if o := stored(); o != nil {
				t.Fatalf("after %d bad receipts the outbox entry is %v with receipt %q: an unverified receipt was stored as proof",
					a.totalStats().BadReceipts, o.State, o.Receipt)
			}
			if n := len(inbox(t, b.s())); n != 1 {
				t.Fatalf("recipient holds %d cases, want 1 (redeliveries are deduplicated)", n)
			}

			// The genuine receipt gets through: delivered, once.
			peer.forge.Store(nil)
			e := waitDelivered(t, a, res.HandoverId)
			if _, err := envelope.VerifyReceipt(ctx, e.Receipt, reg, orgB, digestOf(t, e.EnvelopeSha256), MomentFromProto(e.ReceiptRecorded, time.Now())); err != nil {
				t.Fatalf("stored receipt does not verify: %v", err)
			}
			if n := len(inbox(t, b.s())); n != 1 {
				t.Fatalf("recipient holds %d cases, want 1", n)
			}
			t.Logf("%d bad receipts refused before the genuine one", a.totalStats().BadReceipts)
		})
	}
}
