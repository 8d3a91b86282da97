package node

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// testSnapshotStore is a checked store on a temp dir keeping retain
// snapshots.
func testSnapshotStore(t *testing.T, retain int) (*checkedSnapshotStore, string) {
	t.Helper()
	base := t.TempDir()
	inner, err := raft.NewFileSnapshotStoreWithLogger(base, retain, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return newCheckedSnapshotStore(inner, base, slog.New(slog.DiscardHandler)), base
}

var testSnapConf = raft.Configuration{Servers: []raft.Server{{ID: "voter-1", Address: "127.0.0.1:7001", Suffrage: raft.Voter}}}

// writeTestSnapshot writes a snapshot at index with state data; it returns
// its ID.
func writeTestSnapshot(t *testing.T, s raft.SnapshotStore, index uint64, data string) string {
	t.Helper()
	_, trans := raft.NewInmemTransport("")
	sink, err := s.Create(raft.SnapshotVersionMax, index, 3, testSnapConf, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // IDs carry the time in ms
	return sink.ID()
}

// flipInFile replaces the first occurrence of old in path by repl (same
// length: the file stays valid JSON, only a value changes).
func flipInFile(t *testing.T, path, old, repl string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("%s does not contain %q: %s", path, old, b)
	}
	if err := os.WriteFile(path, bytes.Replace(b, []byte(old), []byte(repl), 1), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCheckedSnapshotStore(t *testing.T) {
	s, base := testSnapshotStore(t, 2)
	var ids []string
	for i := range 4 {
		ids = append(ids, writeTestSnapshot(t, s, uint64(10*(i+1)), strings.Repeat("x", i+1)))
	}

	// Reaping still works: two of four remain, each with its checksum.
	dirs, _ := filepath.Glob(filepath.Join(base, snapshotsDir, "*"))
	sort.Strings(dirs)
	if len(dirs) != 2 || filepath.Base(dirs[0]) != ids[2] || filepath.Base(dirs[1]) != ids[3] {
		t.Fatalf("after 4 snapshots with retain 2: dirs %v, want %v", dirs, ids[2:])
	}
	for _, d := range dirs {
		got, err := os.ReadFile(filepath.Join(d, snapshotSumFile))
		if err != nil {
			t.Fatalf("checksum file: %v", err)
		}
		meta, _ := os.ReadFile(filepath.Join(d, snapshotMetaFile))
		if !bytes.Equal(got, sumLine(meta)) {
			t.Fatalf("%s: checksum file %q does not match meta.json", d, got)
		}
	}

	// Intact: List and Open work.
	metas, err := s.List()
	if err != nil || len(metas) != 2 || metas[0].ID != ids[3] || metas[0].Configuration.Servers[0].ID != "voter-1" {
		t.Fatalf("List: %v, %+v", err, metas)
	}
	_, rc, err := s.Open(ids[3])
	if err != nil {
		t.Fatal(err)
	}
	if data, err := io.ReadAll(rc); err != nil || string(data) != "xxxx" {
		t.Fatalf("Open: %q, %v", data, err)
	}
	rc.Close()

	// A flipped byte in the configuration's server ID: still JSON, raft's
	// store would list it; the checked store refuses, naming meta.json.
	metaPath := filepath.Join(base, snapshotsDir, ids[3], snapshotMetaFile)
	flipInFile(t, metaPath, `"voter-1"`, `"voter-3"`)
	if _, err := s.inner.List(); err != nil {
		t.Fatalf("raft's own store: %v (the flip should still parse)", err)
	}
	wantCorrupt := func(what string, err error, file string) {
		t.Helper()
		if !errors.Is(err, ErrSnapshotCorrupt) || !strings.Contains(err.Error(), file) {
			t.Fatalf("%s: error %v, want ErrSnapshotCorrupt naming %s", what, err, file)
		}
	}
	_, err = s.List()
	wantCorrupt("List", err, metaPath)
	_, _, err = s.Open(ids[3])
	wantCorrupt("Open", err, metaPath)
	// The older snapshot is intact and still opens.
	if _, rc, err := s.Open(ids[2]); err != nil {
		t.Fatalf("Open of the intact older snapshot: %v", err)
	} else {
		rc.Close()
	}

	// A meta.json that no longer parses is skipped by raft's List; the
	// checked List refuses it.
	flipInFile(t, metaPath, `{`, `[`)
	if metas, err := s.inner.List(); err != nil || len(metas) != 1 {
		t.Fatalf("raft's own store should skip the unparsable snapshot: %v, %d", err, len(metas))
	}
	_, err = s.List()
	wantCorrupt("List (unparsable meta.json)", err, metaPath)

	// A damaged checksum file is corruption too, naming that file.
	sumPath := filepath.Join(base, snapshotsDir, ids[2], snapshotSumFile)
	flipInFile(t, sumPath, "  meta", "  mezz")
	_, _, err = s.Open(ids[2])
	wantCorrupt("Open (damaged checksum file)", err, sumPath)

	// Documented: a snapshot without meta.sha256 (written before checksums,
	// or cut off by a crash between raft's rename and the checksum) is
	// accepted unverified; deleting the checksum file disables the check.
	for _, id := range ids[2:] {
		if err := os.Remove(filepath.Join(base, snapshotsDir, id, snapshotSumFile)); err != nil {
			t.Fatal(err)
		}
	}
	flipInFile(t, metaPath, `[`, `{`)
	metas, err = s.List()
	if err != nil || len(metas) != 2 || metas[0].Configuration.Servers[0].ID != "voter-3" {
		t.Fatalf("List without checksum files: %v, %+v", err, metas)
	}
	// A new snapshot is checksummed again, and reaping removes old ones
	// without checksum files.
	writeTestSnapshot(t, s, 50, "y")
	if _, err := s.List(); err != nil {
		t.Fatal(err)
	}
	if dirs, _ := filepath.Glob(filepath.Join(base, snapshotsDir, "*", snapshotSumFile)); len(dirs) != 1 {
		t.Fatalf("checksum files after a new snapshot: %v", dirs)
	}
}

// TestStartRefusesCorruptSnapshotMeta: a flipped byte in the Raft
// configuration stored in the newest snapshot's meta.json (still valid
// JSON) made a one-voter node that trusts its state skip the snapshot
// restore, take that configuration, and never become leader ("no
// leadership"). The start must refuse with ErrSnapshotCorrupt naming the
// file.
func TestStartRefusesCorruptSnapshotMeta(t *testing.T) {
	cfg := quietConfig(t, t.TempDir())
	n := startNode(t, cfg)
	if err := n.Raft().Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	metas, _ := filepath.Glob(filepath.Join(cfg.DataDir, "raft", snapshotsDir, "*", snapshotMetaFile))
	if len(metas) == 0 {
		t.Fatal("no snapshot written")
	}
	sort.Strings(metas)
	metaPath := metas[len(metas)-1]
	id := n.cfg.NodeID
	flipInFile(t, metaPath, `"ID":"`+id+`"`, `"ID":"`+id[:len(id)-1]+string(id[len(id)-1]^1)+`"`)

	cfg.RaftAddr = freeAddr(t)
	n2, err := New(cfg)
	if err == nil {
		defer n2.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err = n2.Start(ctx)
	}
	if !errors.Is(err, ErrSnapshotCorrupt) || !strings.Contains(err.Error(), metaPath) || !strings.Contains(err.Error(), "refusing to start") {
		t.Fatalf("start on a snapshot with a damaged configuration: %v; want ErrSnapshotCorrupt naming %s", err, metaPath)
	}
	t.Logf("refused: %v", err)
}
