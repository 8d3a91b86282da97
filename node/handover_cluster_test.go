package node_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/node/nodetest"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// TestHandoverThroughCluster runs handovers between two organisations on
// real in-process nodes (3 voters and a member): the sender's organisation
// runs on a voter, the recipient's on the member, both onboarded with their
// nodes' real keys as `verbund onboard` does. Case workers send through the
// sender node's handover API; the recipient accepts every third case
// (signed events go back); a quarter of the delivery replies are lost on the
// way, so senders deliver again what the recipient already holds; and the
// recipient's organisation rotates its keys mid-run while handovers keep
// flowing. At the end:
//
//   - every handover is in the recipient's inbox exactly once, and every
//     accept event reached the sender;
//   - every receipt verifies against the registry, and receipts were signed
//     with both the recipient's old and new key;
//   - TrackCase shows every step of every case, each verified;
//   - both audit logs hold exactly the entries of what happened once, their
//     heads are published in the registry, and VerifyAudit passes;
//   - every node holds the same registry state (EnsureSame).
func TestHandoverThroughCluster(t *testing.T) {
	total := 48
	if testing.Short() {
		total = 12
	}
	const acceptEvery = 3
	accepts := (total + acceptEvery - 1) / acceptEvery
	began := time.Now()
	phase := func(what string) { t.Logf("%6.2fs %s", time.Since(began).Seconds(), what) }
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Members: 1, AuditInterval: 100 * time.Millisecond, Seed: 7})
	phase("cluster up")
	const a, b = 1, 3 // sender on a voter, recipient on the member
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	orgA, orgB := c.Nodes[a].Node().Config().OrgID, c.Nodes[b].Node().Config().OrgID
	for _, i := range []int{a, b} {
		if _, err := c.Onboard(ctx, i, "Gemeinde "+c.Nodes[i].ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitCaughtUp(15 * time.Second); err != nil { // both ends know both organisations
		t.Fatal(err)
	}
	phase("organisations onboarded")
	oldKID := c.Nodes[b].Node().SigningKey().KeyID
	c.Net.SetReplyLoss(0.25, federationv1connect.HandoverServiceDeliverHandoverProcedure, federationv1connect.HandoverServiceDeliverEventProcedure)

	// The recipient rotates its keys once a first handover is delivered
	// (so its old key signed a receipt); the last third of the handovers
	// is sent only after the rotation (so its new key signs receipts).
	rotated := make(chan struct{})
	var newKID string
	var rotateErr error
	go func() {
		defer close(rotated)
		if rotateErr = c.WaitFor(30*time.Second, func() error {
			if n := len(outbox(ctx, c.Handover(a), federationv1.OutboxState_OUTBOX_STATE_DELIVERED)); n == 0 {
				return errors.New("no handover delivered yet")
			}
			return nil
		}); rotateErr != nil {
			return
		}
		res, err := c.Nodes[b].Node().RotateKeys(ctx, time.Hour, false)
		if err != nil {
			rotateErr = err
			return
		}
		newKID = res.GetSigningKid()
		phase("recipient's keys rotated")
	}()

	// Senders: each handover has an idempotency key, so a retry after an
	// unanswered call cannot send it twice.
	type sent struct{ id, tracking string }
	acked := make([]sent, total)
	byID := sync.Map{} // handover id -> send number
	var sendErr atomic.Pointer[error]
	work := make(chan int)
	var senders sync.WaitGroup
	for range 4 {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for i := range work {
				if i >= total-total/3 {
					<-rotated
				}
				res, err := sendHandover(ctx, c.Handover(a), orgB, i)
				if err != nil {
					sendErr.CompareAndSwap(nil, &err)
					continue
				}
				acked[i] = sent{res.GetHandoverId(), res.GetTrackingCode()}
				byID.Store(res.GetHandoverId(), i)
			}
		}()
	}
	// The recipient's case worker accepts every third case as it arrives.
	var accepted atomic.Int64
	stopAccepting, acceptorDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(acceptorDone)
		done := map[string]bool{}
		for len(done) < accepts {
			for _, cs := range inbox(ctx, c.Handover(b)) {
				v, ok := byID.Load(cs.GetHandoverId())
				if !ok || v.(int)%acceptEvery != 0 || done[cs.GetHandoverId()] {
					continue
				}
				if _, err := c.Handover(b).AcceptCase(ctx, connect.NewRequest(&federationv1.AcceptCaseRequest{HandoverId: cs.GetHandoverId()})); err == nil {
					done[cs.GetHandoverId()] = true
				}
			}
			accepted.Store(int64(len(done)))
			select {
			case <-stopAccepting:
				return
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	for i := range total {
		work <- i
	}
	close(work)
	senders.Wait()
	<-rotated
	if p := sendErr.Load(); p != nil {
		t.Fatalf("send: %v", *p)
	}
	if rotateErr != nil {
		t.Fatalf("rotate the recipient's keys: %v", rotateErr)
	}
	phase("all sent")

	// Everything in both outboxes is delivered, and the case worker has
	// accepted what it was to accept (checked once every handover is
	// delivered, so a lost case shows below as missing from the inbox).
	delivered := func(outs ...[]*federationv1.OutboxEntry) error {
		for _, o := range outs {
			for _, e := range o {
				if e.GetState() != federationv1.OutboxState_OUTBOX_STATE_DELIVERED {
					return fmt.Errorf("%v %s to %s: %v (%d attempts, %s)", e.GetKind(), e.GetId(), e.GetToOrganisationId(), e.GetState(), e.GetAttempts(), e.GetLastError())
				}
			}
		}
		return nil
	}
	var outA, outB []*federationv1.OutboxEntry
	if err := c.WaitFor(60*time.Second, func() error {
		outA = outbox(ctx, c.Handover(a), 0)
		return delivered(outA)
	}); err != nil {
		t.Fatalf("handovers not delivered: %v", err)
	}
	if err := c.WaitFor(15*time.Second, func() error {
		if n := accepted.Load(); n < int64(accepts) {
			return fmt.Errorf("%d of %d cases accepted", n, accepts)
		}
		return nil
	}); err != nil {
		t.Errorf("accept: %v", err)
	}
	close(stopAccepting)
	<-acceptorDone
	phase("all handovers delivered and accepted")
	if err := c.WaitFor(60*time.Second, func() error {
		outA, outB = outbox(ctx, c.Handover(a), 0), outbox(ctx, c.Handover(b), 0)
		return delivered(outA, outB)
	}); err != nil {
		t.Fatalf("outboxes not delivered: %v", err)
	}
	if len(outA) != total || int64(len(outB)) != accepted.Load() {
		t.Errorf("outboxes hold %d handovers and %d events, want %d and %d", len(outA), len(outB), total, accepted.Load())
	}
	phase("outboxes delivered")

	// Exactly once in the recipient's inbox.
	arrivals := map[string]int{}
	for _, cs := range inbox(ctx, c.Handover(b)) {
		arrivals[cs.GetHandoverId()]++
	}
	for i, s := range acked {
		if arrivals[s.id] != 1 {
			t.Errorf("handover %d (%s) is %d times in the inbox", i, s.id, arrivals[s.id])
		}
	}
	if len(arrivals) != total {
		t.Errorf("inbox holds %d handovers, want %d", len(arrivals), total)
	}

	// Receipts verify against the registry; the recipient signed with its
	// old and its new key.
	reader := c.Nodes[0].Node().Reader()
	resolver := handover.RegistryKeys{Lookup: func(_ context.Context, id string) (*registryv1.Organisation, uint64, error) {
		return reader.Organisation(id)
	}}
	kids := map[string]int{}
	for _, e := range append(outA, outB...) {
		issuer := orgB
		if e.GetKind() == federationv1.OutboxKind_OUTBOX_KIND_EVENT {
			issuer = orgA
		} else {
			kids[jwsKID(t, e.GetReceipt())]++
		}
		if _, err := envelope.VerifyReceipt(ctx, e.GetReceipt(), resolver, issuer, digestOf(t, e.GetEnvelopeSha256()),
			handover.MomentFromProto(e.GetReceiptRecorded(), time.Now())); err != nil {
			t.Errorf("receipt for %v %s does not verify: %v", e.GetKind(), e.GetId(), err)
		}
	}
	if kids[oldKID] == 0 || kids[newKID] == 0 || len(kids) != 2 {
		t.Errorf("receipts by key %v; want some by the old key %s and some by the new key %s", kids, oldKID, newKID)
	}

	// The citizen's view: every step of every case, verified.
	for i, s := range acked {
		res, err := c.Handover(a).TrackCase(ctx, connect.NewRequest(&federationv1.TrackCaseRequest{TrackingCode: s.tracking}))
		if err != nil {
			t.Fatalf("track case %d: %v", i, err)
		}
		want := []federationv1.EventType{federationv1.EventType_EVENT_TYPE_HANDED_OVER}
		if i%acceptEvery == 0 {
			want = append(want, federationv1.EventType_EVENT_TYPE_ACCEPTED)
		}
		var got []federationv1.EventType
		for _, e := range res.Msg.GetEntries() {
			got = append(got, e.GetType())
			if !e.GetVerified() {
				t.Errorf("case %d: step %v by %s not verified: %s", i, e.GetType(), e.GetOrganisationId(), e.GetVerificationError())
			}
		}
		slices.Sort(got) // steps in one millisecond may come in either order
		if !slices.Equal(got, want) || len(res.Msg.GetUnreachableOrganisationIds()) > 0 {
			t.Errorf("case %d: timeline %v (unreachable %v), want %v", i, got, res.Msg.GetUnreachableOrganisationIds(), want)
		}
	}
	phase("cases tracked")

	// Audit logs: exactly one entry per step, heads published to the
	// registry, chains verify against them.
	for _, x := range []struct {
		i       int
		org     string
		entries uint64
	}{
		{a, orgA, uint64(2*total) + uint64(accepted.Load())}, // handover sent + delivered, event received
		{b, orgB, uint64(total) + 2*uint64(accepted.Load())}, // handover received, event sent + delivered
	} {
		if err := c.WaitFor(15*time.Second, func() error {
			res, err := c.Handover(x.i).VerifyAudit(ctx, connect.NewRequest(&federationv1.VerifyAuditRequest{}))
			if err != nil {
				return err
			}
			v := res.Msg
			if !v.GetOk() {
				return fmt.Errorf("audit of %s: %s", x.org, v.GetError())
			}
			if v.GetEntries() != x.entries {
				return fmt.Errorf("audit of %s has %d entries, want %d", x.org, v.GetEntries(), x.entries)
			}
			head, _, err := reader.AuditHead(x.org)
			if err != nil {
				return fmt.Errorf("audit head of %s in the registry: %w", x.org, err)
			}
			if head.GetSequence() != v.GetHead().GetSequence() || head.GetHash() != v.GetHead().GetHash() {
				return fmt.Errorf("registry holds audit head %d of %s, its chain is at %d", head.GetSequence(), x.org, v.GetHead().GetSequence())
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
	if c.Net.RepliesLost() == 0 {
		t.Error("no delivery reply was lost: the recipient's dedupe was not exercised")
	}
	phase("audit verified")
	st := c.EnsureSame(t)
	t.Logf("%d handovers, %d accepted; %d delivery replies lost; receipts by key %v; registry agrees at index %d on %d nodes",
		total, accepted.Load(), c.Net.RepliesLost(), kids, st.Index, st.Servers+st.Members)
}

// sendHandover sends handover i, retrying while the node is unavailable
// (the idempotency key makes a retry after an unanswered call safe).
func sendHandover(ctx context.Context, h federationv1connect.HandoverServiceClient, to string, i int) (*federationv1.SendHandoverResponse, error) {
	for {
		res, err := h.SendHandover(ctx, connect.NewRequest(&federationv1.SendHandoverRequest{
			RecipientOrganisationId: to,
			CaseJson:                fmt.Sprintf(`{"applicant":"Erika Mustermann %d","subject":"Ummeldung"}`, i),
			Reason:                  "Umzug",
			LeikaKey:                "99115005000000",
			IdempotencyKey:          fmt.Sprintf("cluster-handover-%04d", i),
		}))
		if err == nil {
			return res.Msg, nil
		}
		if connect.CodeOf(err) != connect.CodeUnavailable {
			return nil, fmt.Errorf("handover %d: %w", i, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("handover %d: %w (last: %v)", i, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// outbox lists a node's outbox entries in state (0: all); nil if the
// node does not answer.
func outbox(ctx context.Context, h federationv1connect.HandoverServiceClient, state federationv1.OutboxState) []*federationv1.OutboxEntry {
	var out []*federationv1.OutboxEntry
	for tok := ""; ; {
		res, err := h.ListOutbox(ctx, connect.NewRequest(&federationv1.ListOutboxRequest{State: state, PageSize: 1000, PageToken: tok}))
		if err != nil {
			return nil
		}
		out = append(out, res.Msg.GetEntries()...)
		if tok = res.Msg.GetNextPageToken(); tok == "" {
			return out
		}
	}
}

// inbox lists a node's inbox; nil if the node does not answer.
func inbox(ctx context.Context, h federationv1connect.HandoverServiceClient) []*federationv1.CaseSummary {
	var out []*federationv1.CaseSummary
	for tok := ""; ; {
		res, err := h.ListInbox(ctx, connect.NewRequest(&federationv1.ListInboxRequest{PageSize: 1000, PageToken: tok}))
		if err != nil {
			return nil
		}
		out = append(out, res.Msg.GetCases()...)
		if tok = res.Msg.GetNextPageToken(); tok == "" {
			return out
		}
	}
}

func digestOf(t *testing.T, hexDigest string) [32]byte {
	t.Helper()
	var d [32]byte
	b, err := hex.DecodeString(hexDigest)
	if err != nil || len(b) != len(d) {
		t.Fatalf("bad envelope digest %q", hexDigest)
	}
	copy(d[:], b)
	return d
}

// jwsKID returns the kid in a compact JWS's protected header.
func jwsKID(t *testing.T, jws string) string {
	t.Helper()
	head, _, _ := strings.Cut(jws, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	var h struct {
		KID string `json:"kid"`
	}
	if err == nil {
		err = json.Unmarshal(raw, &h)
	}
	if err != nil {
		t.Fatalf("receipt header: %v", err)
	}
	return h.KID
}
