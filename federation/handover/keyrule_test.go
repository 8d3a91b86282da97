package handover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/keys"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// orgRegistry is an ordered registry of organisation records, as the
// registry FSM keeps them: every change gets the next index, and the key
// rule's stamps are set by keys.Stamp like the FSM does.
type orgRegistry struct {
	mu    sync.Mutex
	index uint64
	orgs  map[string]*registryv1.Organisation
}

func (r *orgRegistry) lookup(_ context.Context, id string) (*registryv1.Organisation, uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.orgs[id]
	if !ok {
		return nil, r.index, fmt.Errorf("organisation %q not found", id)
	}
	return proto.Clone(o).(*registryv1.Organisation), r.index, nil
}

// change applies f to the record of id as the next registry entry and
// returns its index.
func (r *orgRegistry) change(id string, f func(o *registryv1.Organisation)) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.index++
	old := r.orgs[id]
	n := &registryv1.Organisation{Id: id, Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE}
	if old != nil {
		n = proto.Clone(old).(*registryv1.Organisation)
	}
	f(n)
	keys.Stamp(old, n, r.index)
	r.orgs[id] = n
	return r.index
}

// register publishes n's organisation with its current keys and endpoint.
func (r *orgRegistry) register(t *testing.T, n *node) {
	t.Helper()
	sig, err := keys.Published(n.sig)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := keys.Published(n.enc)
	if err != nil {
		t.Fatal(err)
	}
	r.change(n.org, func(o *registryv1.Organisation) {
		o.ApiEndpoint, o.Keys = n.srv.URL, []*registryv1.PublicKey{sig, enc}
	})
}

// TestKeyRuleSuspensionAndRevocation runs two nodes over RegistryKeys (the
// key rule of package keys): what B signed before it was suspended, or
// before its key was revoked, still verifies (timeline, offline receipt);
// what it signs afterwards is refused by A, with an error naming why.
func TestKeyRuleSuspensionAndRevocation(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry() // endpoints and audit heads only
	orgs := &orgRegistry{orgs: map[string]*registryv1.Organisation{}}
	useOrgs := func(org string) func(*Config) {
		return func(c *Config) {
			rk := RegistryKeys{Self: org, Lookup: orgs.lookup}
			c.Resolver, c.Directory = rk, rk
		}
	}
	a := newNode(t, reg, orgA, useOrgs(orgA))
	b := newNode(t, reg, orgB, useOrgs(orgB))
	orgs.register(t, a)
	orgs.register(t, b)

	// Before: a handover A -> B, its receipt (signed by B), and B's
	// accept event (signed by B) to A.
	res, err := a.s().SendHandover(ctx, caseRequest(orgB, 1))
	if err != nil {
		t.Fatal(err)
	}
	e := waitDelivered(t, a, res.HandoverId)
	if e.ReceiptRecorded.GetIndex() == 0 {
		t.Fatalf("receipt stored without a registry moment: %v", e)
	}
	acc, err := b.s().AcceptCase(ctx, &federationv1.AcceptCaseRequest{HandoverId: res.HandoverId})
	if err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, b, acc.EventId)

	// trackVerified checks that every signed step of the case verifies at
	// its recorded moment, and that there are the two B signed.
	trackVerified := func(when string) {
		t.Helper()
		tr, err := a.s().TrackCase(ctx, &federationv1.TrackCaseRequest{TrackingCode: res.TrackingCode})
		if err != nil {
			t.Fatal(err)
		}
		verified := 0
		for _, en := range tr.Entries {
			if en.SignedToken == "" {
				continue
			}
			if !en.Verified {
				t.Errorf("%s: %v %s does not verify: %s", when, en.Type, en.HandoverId+en.EventId, en.VerificationError)
				continue
			}
			if en.Recorded.GetIndex() == 0 {
				t.Errorf("%s: %v verified without a recorded moment", when, en.Type)
			}
			verified++
		}
		if verified < 2 {
			t.Errorf("%s: %d verified steps, want the receipt and the event: %v", when, verified, tr.Entries)
		}
	}
	trackVerified("before the suspension")

	// B is suspended.
	orgs.change(orgB, func(o *registryv1.Organisation) {
		o.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED
	})
	trackVerified("after the suspension")
	at := MomentFromProto(e.ReceiptRecorded, time.Now())
	if _, err := envelope.VerifyReceipt(ctx, e.Receipt, a.s().cfg.Resolver, orgB, digestOf(t, e.EnvelopeSha256), at); err != nil {
		t.Fatalf("receipt recorded before the suspension, offline: %v", err)
	}
	_, err = envelope.VerifyReceipt(ctx, e.Receipt, a.s().cfg.Resolver, orgB, digestOf(t, e.EnvelopeSha256), keys.Now(time.Now()))
	if !errors.Is(err, envelope.ErrKeyInactive) || !strings.Contains(err.Error(), "SUSPENDED") {
		t.Fatalf("the same receipt as new: %v, want ErrKeyInactive naming the suspension", err)
	}

	// B's new handover to A is refused by A.
	now := time.Now()
	claims := envelope.Claims{ID: envelope.NewID(), Issuer: orgB, Audience: orgA, IssuedAt: now, Expiry: now.Add(time.Hour),
		CaseID: "c-2", ServiceKey: leika}
	tok, err := envelope.Seal(ctx, claims, b.sig, a.enc.Public())
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.s().DeliverHandover(ctx, tok)
	if !errors.Is(err, envelope.ErrKeyInactive) || !strings.Contains(err.Error(), "SUSPENDED") {
		t.Fatalf("handover of a suspended organisation: %v, want ErrKeyInactive naming the suspension", err)
	}

	// A new handover A -> B: B takes it in and signs a receipt, which A
	// refuses; the entry stays undelivered.
	badBefore := a.totalStats().BadReceipts
	res2, err := a.s().SendHandover(ctx, caseRequest(orgB, 2))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a refused receipt", func() bool { return a.totalStats().BadReceipts > badBefore })
	for _, o := range outbox(t, a.s()) {
		if o.Id == res2.HandoverId && o.State == federationv1.OutboxState_OUTBOX_STATE_DELIVERED {
			t.Fatal("a receipt of the suspended organisation was accepted")
		}
	}

	// B is reinstated with a new key; its old key is revoked. What the old
	// key signed before still verifies; its new receipts do not.
	newSig := sigKey(orgB + "-sig-2")
	newPub, err := keys.Published(newSig)
	if err != nil {
		t.Fatal(err)
	}
	orgs.change(orgB, func(o *registryv1.Organisation) {
		o.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE
		o.Keys[0].Status = registryv1.KeyStatus_KEY_STATUS_REVOKED
		o.Keys = append(o.Keys, newPub)
	})
	trackVerified("after the revocation")
	_, err = envelope.VerifyReceipt(ctx, e.Receipt, a.s().cfg.Resolver, orgB, digestOf(t, e.EnvelopeSha256), keys.Now(time.Now()))
	if !errors.Is(err, envelope.ErrRevokedKey) {
		t.Fatalf("receipt with the revoked key as new: %v, want ErrRevokedKey", err)
	}
	badBefore = a.totalStats().BadReceipts
	waitFor(t, 10*time.Second, "a receipt with the revoked key refused", func() bool { return a.totalStats().BadReceipts > badBefore })

	// B's node switches to the new key: new handovers are delivered again.
	// (The pending one is not: B answers its redeliveries with the receipt
	// it stored, signed while it was suspended.)
	b.restart(func() { b.sig = newSig })
	res3, err := a.s().SendHandover(ctx, caseRequest(orgB, 3))
	if err != nil {
		t.Fatal(err)
	}
	if e3 := waitDelivered(t, a, res3.HandoverId); receiptKID(e3.Receipt) != newSig.KeyID {
		t.Fatalf("receipt signed with %s, want %s", receiptKID(e3.Receipt), newSig.KeyID)
	}
	trackVerified("with the new key")
}
