package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

// TestHandoverBackupRestoreProcesses: a recipient node (München, B) backs
// up its handover store with `verbund snapshot save --handovers` while it
// works, receives another case and publishes its audit head, is stopped,
// restored with `verbund snapshot restore --handovers`, and started again
// with its command line: it starts (the registry's later head does not
// make it refuse), records the restore marker in its audit chain, holds
// the case from before the backup and not the one after (lost, reported
// in its log), its audit log verifies, and new cases arrive and its head
// is published again past the lost one.
func TestHandoverBackupRestoreProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	n := startTwoOrgs(t, "--audit-interval", "200ms")
	a, b, dirB, argsB, client := n.a, n.b, n.dirB, n.argsB, n.client
	ctx := context.Background()
	send := func(i int) string {
		t.Helper()
		var id string
		if err := waitUntil(30*time.Second, func() error {
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			res, err := client(a.API).SendHandover(c, connect.NewRequest(&federationv1.SendHandoverRequest{
				RecipientOrganisationId: "091620000000", CaseJson: fmt.Sprintf(`{"applicant":"Erika Mustermann %d"}`, i),
				Reason: "Umzug nach München", LeikaKey: "99115005000000", IdempotencyKey: fmt.Sprintf("backup-test-case-%04d", i),
			}))
			if err != nil {
				return err
			}
			id = res.Msg.GetHandoverId()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	inboxIDs := func(api string) map[string]bool {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		res, err := client(api).ListInbox(c, connect.NewRequest(&federationv1.ListInboxRequest{PageSize: 1000}))
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, cs := range res.Msg.GetCases() {
			ids[cs.GetHandoverId()] = true
		}
		return ids
	}
	verify := func(api string) (*federationv1.VerifyAuditResponse, error) {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		res, err := client(api).VerifyAudit(c, connect.NewRequest(&federationv1.VerifyAuditRequest{}))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}
	// published waits until the registry's head (the last one checked) is
	// B's chain head.
	published := func() uint64 {
		t.Helper()
		var seq uint64
		if err := waitUntil(30*time.Second, func() error {
			m, err := verify(b.API)
			if err != nil {
				return err
			}
			ps := m.GetPublished()
			if !m.GetOk() || len(ps) == 0 || ps[len(ps)-1].GetSequence() != m.GetHead().GetSequence() {
				return fmt.Errorf("B's head %d not published yet (ok %v: %s)", m.GetHead().GetSequence(), m.GetOk(), m.GetError())
			}
			seq = m.GetHead().GetSequence()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return seq
	}
	arrived := func(id string) {
		t.Helper()
		if err := waitUntil(30*time.Second, func() error {
			if !inboxIDs(b.API)[id] {
				return fmt.Errorf("%s not in B's inbox", id)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	h1 := send(1)
	arrived(h1)
	published()
	file := filepath.Join(t.TempDir(), "handovers.bak")
	out, err := run(t, "snapshot", "save", file, "--handovers", "--addr", b.API)
	if err != nil {
		t.Fatalf("snapshot save --handovers: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(out))
	if out, err := run(t, "snapshot", "inspect", file); err != nil || !strings.Contains(out, "handovers") {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	h2 := send(2)
	arrived(h2)
	lost := published()

	stop(t, b)
	out, err = run(t, "snapshot", "restore", file, "--handovers", "--data", dirB)
	if err != nil {
		t.Fatalf("snapshot restore --handovers: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(out))
	b = start(t, argsB...)
	waitHTTP(t, b.API)
	if ids := inboxIDs(b.API); !ids[h1] || ids[h2] {
		t.Fatalf("B's inbox after the restore: %v (want h1, not h2)", ids)
	}
	if !strings.Contains(b.Logs(), "restored from a backup") {
		t.Errorf("B's log does not report the restore:\n%s", b.Logs())
	}
	m, err := verify(b.API)
	if err != nil || !m.GetOk() {
		t.Fatalf("B's audit log after the restore: %v %s", err, m.GetError())
	}
	if m.GetHead().GetSequence() > lost {
		t.Fatalf("B's chain %d already past the lost head %d", m.GetHead().GetSequence(), lost)
	}
	// New cases: publishing resumes past the lost head.
	for i := 3; ; i++ {
		h := send(i)
		arrived(h)
		if m, err := verify(b.API); err == nil && m.GetHead().GetSequence() > lost {
			break
		}
	}
	if seq := published(); seq <= lost {
		t.Fatalf("B published %d, not past the lost head %d", seq, lost)
	}
	t.Logf("B restored: h1 (before the backup) kept, h2 (after) lost and reported; the lost published head %d was never undercut; publishing resumed past it", lost)
}
