package node

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
)

// TestBackupEndpoints: the backup routes of a real node serve an ADMIN of
// the node only (no credential: 401, a clerk: 403); the registry backup
// verifies and counts the operator genesis registered; the handover
// backup verifies; a restore refuses a data dir that is not empty and a
// file of the other kind, and writes a one-voter snapshot otherwise; and a
// corrupted backup is refused by InspectBackup.
func TestBackupEndpoints(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	clerk := addUser(t, n, "clerk", nodev1.Role_ROLE_CLERK)
	boss := addUser(t, n, "boss", nodev1.Role_ROLE_ADMIN)
	get := func(path, tok string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, n.APIURL()+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	if err := waitLeader(n, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{SnapshotPath, HandoverBackupPath} {
		if c, _ := get(p, ""); c != http.StatusUnauthorized {
			t.Fatalf("%s without a credential: HTTP %d, want 401", p, c)
		}
		if c, _ := get(p, clerk); c != http.StatusForbidden {
			t.Fatalf("%s as a clerk: HTTP %d, want 403", p, c)
		}
	}
	c, reg := get(SnapshotPath, boss)
	if c != http.StatusOK {
		t.Fatalf("registry backup as an admin: HTTP %d: %s", c, reg)
	}
	info, err := InspectBackup(bytes.NewReader(reg))
	if err != nil {
		t.Fatal(err)
	}
	if info.Header.Kind != KindRegistry || info.Header.Operator != "test-operator" || info.Counts["organisations"] < 1 || info.Header.Index == 0 {
		t.Fatalf("registry backup: %+v", info)
	}
	c, ho := get(HandoverBackupPath, boss)
	if c != http.StatusOK {
		t.Fatalf("handover backup as an admin: HTTP %d: %s", c, ho)
	}
	if hi, err := InspectBackup(bytes.NewReader(ho)); err != nil || hi.Header.Kind != KindHandovers || hi.Header.Org != "test-operator" {
		t.Fatalf("handover backup: %+v, %v", hi, err)
	}
	bad := append([]byte(nil), reg...)
	bad[len(bad)-40] ^= 0x80 // in the snapshot's last bytes, before the SHA-256
	if _, err := InspectBackup(bytes.NewReader(bad)); !errors.Is(err, ErrBackupCorrupt) {
		t.Fatalf("corrupted backup: %v", err)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "reg.snap")
	os.WriteFile(file, reg, 0o600)
	hoFile := filepath.Join(dir, "ho.bak")
	os.WriteFile(hoFile, ho, 0o600)
	if _, err := RestoreBackup(hoFile, filepath.Join(dir, "x"), "r0", "127.0.0.1:1"); err == nil {
		t.Fatal("a handover backup was restored as a registry")
	}
	if _, err := RestoreBackup(file, dir, "r0", "127.0.0.1:1"); err == nil {
		t.Fatal("restore into a data dir that is not empty")
	}
	h, err := RestoreBackup(file, filepath.Join(dir, "r0"), "r0", "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if h.Index != info.Header.Index {
		t.Fatalf("restored index %d, backup %d", h.Index, info.Header.Index)
	}
	if _, err := os.Stat(filepath.Join(dir, "r0", "raft", "snapshots")); err != nil {
		t.Fatal(err)
	}
}

func waitLeader(n *Node, bound time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	for n.Raft().State().String() != "Leader" {
		select {
		case <-ctx.Done():
			return errors.New("no leader")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
