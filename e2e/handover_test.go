package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/e2e/proc"
	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/federation/handover"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// TestHandoversSurviveSIGKILL runs a sender and a recipient node as real
// processes, sends handovers from several goroutines, and SIGKILLs and
// restarts both processes at random moments. At the end every handover the
// sender acknowledged is in the recipient's inbox exactly once, every
// outbox entry holds a receipt that verifies offline against the keys in
// the registry, and both audit logs verify against their published heads.
func TestHandoversSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level crash test")
	}
	const total = 300
	n := startTwoOrgs(t)
	a, b, argsA, argsB, client := n.a, n.b, n.argsA, n.argsB, n.client
	var mu sync.Mutex
	procs := map[string]*proc.Process{"A": a, "B": b}
	args := map[string][]string{"A": argsA, "B": argsB}
	current := func(name string) *proc.Process { mu.Lock(); defer mu.Unlock(); return procs[name] }

	// Senders: each handover has an idempotency key and is retried until
	// the sender acknowledges it (across sender crashes).
	acked := make([]string, total) // handover ids
	var sent atomic.Int64
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					res, err := client(current("A").API).SendHandover(ctx, connect.NewRequest(&federationv1.SendHandoverRequest{
						RecipientOrganisationId: "091620000000",
						CaseJson:                fmt.Sprintf(`{"applicant":"Erika Mustermann %d","subject":"Ummeldung"}`, i),
						Reason:                  "Umzug nach München",
						LeikaKey:                "99115005000000",
						IdempotencyKey:          fmt.Sprintf("e2e-handover-case-%04d", i),
					}))
					cancel()
					if err == nil {
						acked[i] = res.Msg.GetHandoverId()
						sent.Add(1)
						time.Sleep(40 * time.Millisecond) // spread sends over the nemesis' schedule
						break
					}
					if c := connect.CodeOf(err); c == connect.CodeInvalidArgument || c == connect.CodePermissionDenied {
						t.Errorf("handover %d refused: %v", i, err)
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	// The nemesis: SIGKILL and restart each side a few times.
	stopNemesis := make(chan struct{})
	kills := map[string]int{}
	var killsMu sync.Mutex
	enough := func() bool { killsMu.Lock(); defer killsMu.Unlock(); return kills["A"] >= 2 && kills["B"] >= 2 }
	nemesisDone := make(chan struct{})
	go func() {
		defer close(nemesisDone)
		rng := rand.New(rand.NewPCG(42, 7))
		for {
			select {
			case <-stopNemesis:
				return
			case <-time.After(time.Duration(150+rng.IntN(350)) * time.Millisecond):
			}
			name := []string{"A", "B"}[rng.IntN(2)]
			p := current(name)
			p.Kill()
			killsMu.Lock()
			kills[name]++
			killsMu.Unlock()
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			np := start(t, args[name]...)
			mu.Lock()
			procs[name] = np
			mu.Unlock()
		}
	}()
	go func() {
		for i := 0; i < total; i++ {
			work <- i
		}
		close(work)
	}()
	wg.Wait()
	// Keep crashing (now during delivery) until both sides died twice.
	for deadline := time.Now().Add(60 * time.Second); !enough() && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	close(stopNemesis)
	<-nemesisDone
	t.Logf("%d handovers acknowledged; SIGKILLs: sender %d, recipient %d", sent.Load(), kills["A"], kills["B"])
	if !enough() {
		t.Fatalf("the nemesis did not kill both sides: %v", kills)
	}

	// Wait until every outbox entry is delivered.
	var outbox []*federationv1.OutboxEntry
	if err := waitUntil(90*time.Second, func() error {
		outbox = nil
		tok := ""
		for {
			res, err := client(current("A").API).ListOutbox(context.Background(), connect.NewRequest(&federationv1.ListOutboxRequest{PageSize: 1000, PageToken: tok}))
			if err != nil {
				return err
			}
			outbox = append(outbox, res.Msg.GetEntries()...)
			if tok = res.Msg.GetNextPageToken(); tok == "" {
				break
			}
		}
		pending := 0
		for _, e := range outbox {
			if e.GetState() != federationv1.OutboxState_OUTBOX_STATE_DELIVERED {
				pending++
			}
		}
		if pending > 0 {
			return fmt.Errorf("%d of %d outbox entries not delivered", pending, len(outbox))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(outbox) != total {
		t.Fatalf("outbox has %d entries, want %d (one per idempotency key)", len(outbox), total)
	}
	// Exactly once in the recipient's inbox.
	inbox := map[string]int{}
	tok := ""
	for {
		res, err := client(current("B").API).ListInbox(context.Background(), connect.NewRequest(&federationv1.ListInboxRequest{PageSize: 1000, PageToken: tok}))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range res.Msg.GetCases() {
			inbox[c.GetHandoverId()]++
		}
		if tok = res.Msg.GetNextPageToken(); tok == "" {
			break
		}
	}
	for i, id := range acked {
		if inbox[id] != 1 {
			t.Errorf("handover %d (%s) is %d times in the inbox", i, id, inbox[id])
		}
	}
	if len(inbox) != total {
		t.Errorf("inbox holds %d handovers, want %d", len(inbox), total)
	}
	// Receipts verify offline against the registry's keys.
	q := registryv1connect.NewQueryServiceClient(http.DefaultClient, current("A").API)
	resolver := handover.RegistryKeys{Lookup: func(ctx context.Context, id string) (*registryv1.Organisation, uint64, error) {
		res, err := q.GetOrganisation(ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{Id: id}))
		if err != nil {
			return nil, 0, err
		}
		return res.Msg.GetOrganisation(), res.Msg.GetRead().GetIndex(), nil
	}}
	for _, e := range outbox {
		d, err := hex.DecodeString(e.GetEnvelopeSha256())
		if err != nil || len(d) != 32 {
			t.Fatalf("outbox %s: bad digest %q", e.GetId(), e.GetEnvelopeSha256())
		}
		var digest [32]byte
		copy(digest[:], d)
		at := handover.MomentFromProto(e.GetReceiptRecorded(), time.Now())
		if _, err := envelope.VerifyReceipt(context.Background(), e.GetReceipt(), resolver, "091620000000", digest, at); err != nil {
			t.Errorf("receipt for %s does not verify: %v", e.GetId(), err)
		}
	}
	// Both audit logs verify.
	for _, name := range []string{"A", "B"} {
		if err := waitUntil(30*time.Second, func() error {
			res, err := client(current(name).API).VerifyAudit(context.Background(), connect.NewRequest(&federationv1.VerifyAuditRequest{}))
			if err != nil {
				return err
			}
			if !res.Msg.GetOk() {
				return fmt.Errorf("audit of %s: %s", name, res.Msg.GetError())
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
}

// twoOrgs is the network of the handover process tests: A, the network
// operator's genesis node, and B, München's member node, which Bavaria's
// state agency (registered by the operator) registers with B's keys; on
// each a case worker with every role is signed in.
type twoOrgs struct {
	a, b         *proc.Process
	dirA, dirB   string
	argsA, argsB []string // command lines, to restart a node as it was started
	client       func(api string) federationv1connect.HandoverServiceClient
}

// startTwoOrgs starts the two nodes, with extra flags for both.
func startTwoOrgs(t *testing.T, extra ...string) *twoOrgs {
	t.Helper()
	n := &twoOrgs{dirA: t.TempDir(), dirB: t.TempDir()}
	gossipA := freeAddr(t)
	n.argsA = append([]string{"node", "--org", "verbund-operator", "--bootstrap", "--genesis", "--data-dir", n.dirA,
		"--http-addr", freeAddr(t), "--raft-addr", freeAddr(t), "--gossip-addr", gossipA, "--log-level", "warn", "--rate-limits", "off"}, extra...)
	n.argsB = append([]string{"node", "--org", "091620000000", "--role", "member", "--data-dir", n.dirB,
		"--http-addr", freeAddr(t), "--gossip-addr", freeAddr(t), "--join", gossipA, "--log-level", "warn", "--rate-limits", "off"}, extra...)
	n.a = start(t, n.argsA...)
	n.b = start(t, n.argsB...)
	waitHTTP(t, n.a.API)
	// München's approver, Bayern's state agency, is registered by the
	// operator; it registers München with the keys of B's node.
	dirBY := t.TempDir()
	for _, args := range [][]string{
		{"init", "--org", "land-09", "--kind", "state-agency", "--name", "Bayern", "--state", "09", "--data", dirBY},
		{"org", "register", "land-09", "--keys-from", dirBY, "--kind", "state-agency", "--name", "Bayern", "--state", "09",
			"--key", filepath.Join(n.dirA, "keys", "signing.jwk"), "--as", "verbund-operator", "--addr", n.a.API, "--timeout", "30s"},
		{"org", "register", "091620000000", "--node", n.b.API, "--name", "München", "--kind", "municipality",
			"--key", filepath.Join(dirBY, "keys", "signing.jwk"), "--as", "land-09", "--addr", n.a.API, "--timeout", "30s"},
	} {
		if out, err := run(t, args...); err != nil {
			t.Fatalf("verbund %v: %v\n%s", args, err, out)
		}
	}
	// The case workers: a user with every role on each node.
	t.Setenv("VERBUND_CONFIG_DIR", t.TempDir())
	waitHTTP(t, n.b.API)
	tokens := map[string]string{}
	for _, x := range []struct{ dir, api string }{{n.dirA, n.a.API}, {n.dirB, n.b.API}} {
		tok, err := proc.Authorize(binary, x.dir, x.api)
		if err != nil {
			t.Fatal(err)
		}
		tokens[x.api] = tok
	}
	n.client = func(api string) federationv1connect.HandoverServiceClient {
		return federationv1connect.NewHandoverServiceClient(proc.BearerClient(tokens[api]), api)
	}
	return n
}
