package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"

	"github.com/verbund/verbund/node/nodetest"
)

// TestHandoverUnderClockJump: handovers between a voter and a member while
// one side's clock (node.Config.Clock) runs an hour off. An envelope
// stamped by a sender an hour ahead, or opened by a recipient an hour
// behind, is "not yet valid" (beyond the one-minute skew the envelope
// allows): the recipient refuses it cleanly, nothing lands in its inbox,
// the sender keeps it pending and retries. With the clocks back, the one
// the recipient refused for its own clock is delivered exactly once, the
// one stamped an hour ahead stays pending (valid only in an hour), a new
// handover is delivered exactly once, and the servers hold the same state.
func TestHandoverUnderClockJump(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node")
	}
	clocks, configure := nodetest.Clocks(4)
	c := nodetest.Start(t, nodetest.Options{Voters: 3, Members: 1, AuditInterval: 200 * time.Millisecond, Configure: configure})
	const a, b = 1, 3 // sender on a voter, recipient on the member
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	orgB := c.Nodes[b].Node().Config().OrgID
	for _, i := range []int{a, b} {
		if _, err := c.Onboard(ctx, i, "Gemeinde "+c.Nodes[i].ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitCaughtUp(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	ha, hb := c.Nodes[a].Handover(), c.Nodes[b].Handover()

	refused := map[string]string{}
	var ids []string // [sender ahead, recipient behind]
	for k, ph := range []struct {
		name  string
		clock *nodetest.Clock
	}{
		{"sender an hour ahead", clocks[a]},
		{"recipient an hour behind", clocks[b]},
	} {
		off := time.Hour
		if ph.clock == clocks[b] {
			off = -time.Hour
		}
		ph.clock.Set(off)
		res, err := sendHandover(ctx, ha, orgB, 100+k)
		if err != nil {
			t.Fatalf("%s: send: %v", ph.name, err)
		}
		// The delivery is attempted and refused as not yet valid.
		var last *federationv1.OutboxEntry
		if err := c.WaitFor(20*time.Second, func() error {
			for _, e := range outbox(ctx, ha, 0) {
				if e.GetId() == res.GetHandoverId() {
					last = e
				}
			}
			if last == nil || !strings.Contains(last.GetLastError(), "not yet valid") && !strings.Contains(last.GetLastError(), "not_yet_valid") {
				return errString("no refusal as not yet valid yet: " + last.GetLastError())
			}
			return nil
		}); err != nil {
			t.Fatalf("%s: %v (entry %v)", ph.name, err, last)
		}
		if last.GetState() != federationv1.OutboxState_OUTBOX_STATE_PENDING {
			t.Fatalf("%s: %v, want pending (retried)", ph.name, last)
		}
		for _, cs := range inbox(ctx, hb) {
			if cs.GetHandoverId() == res.GetHandoverId() {
				t.Fatalf("%s: the refused handover is in the recipient's inbox", ph.name)
			}
		}
		refused[res.GetHandoverId()] = last.GetState().String() + ": " + last.GetLastError()
		ids = append(ids, res.GetHandoverId())
		ph.clock.Set(0)
	}
	t.Logf("refused while a clock was off: %v", refused)

	res, err := sendHandover(ctx, ha, orgB, 200)
	if err != nil {
		t.Fatal(err)
	}
	ahead, behind, fresh := ids[0], ids[1], res.GetHandoverId()
	state := func() map[string]federationv1.OutboxState {
		m := map[string]federationv1.OutboxState{}
		for _, e := range outbox(ctx, ha, 0) {
			m[e.GetId()] = e.GetState()
		}
		return m
	}
	if err := c.WaitFor(20*time.Second, func() error {
		st := state()
		if st[behind] != federationv1.OutboxState_OUTBOX_STATE_DELIVERED || st[fresh] != federationv1.OutboxState_OUTBOX_STATE_DELIVERED {
			return errString("not delivered yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("with the clocks back: %v (%v)", err, state())
	}
	if st := state()[ahead]; st != federationv1.OutboxState_OUTBOX_STATE_PENDING {
		t.Fatalf("the handover stamped an hour ahead is %v, want pending until it is valid", st)
	}
	got := map[string]int{}
	for _, cs := range inbox(ctx, hb) {
		got[cs.GetHandoverId()]++
	}
	if got[ahead] != 0 || got[behind] != 1 || got[fresh] != 1 {
		t.Fatalf("recipient's inbox: %d x stamped ahead (want 0), %d x refused for the recipient's clock (want 1), %d x sent after (want 1)",
			got[ahead], got[behind], got[fresh])
	}
	c.EnsureSame(t)
}

type errString string

func (e errString) Error() string { return string(e) }
