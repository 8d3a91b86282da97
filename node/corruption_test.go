package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// TestStateAndSnapshotCorruption damages the registry state (badger,
// DATA/state) or a Raft snapshot (DATA/raft/snapshots/*/state.bin,
// meta.json) of a stopped one-voter node: bytes flipped at random offsets
// (seeded; VERBUND_CORRUPT_SEED replays a run) or a file truncated. The
// node, started on the damaged directory, must either refuse to start with
// an error naming the store, or serve exactly the registry state it served
// before (compared through the Reader), never different data. Every
// refusal of the state DB is then followed by the documented recovery
// (move DATA/state aside and restart): the state rebuilt from the snapshot
// and the log must be the same.
//
// The Raft log itself (DATA/raft/log) is not damaged here: it is a badger
// store that drops a damaged tail silently (issue 9); node/raftlog has its
// own corruption tests.
func TestStateAndSnapshotCorruption(t *testing.T) {
	runs := 30
	switch v, err := strconv.Atoi(os.Getenv("VERBUND_CORRUPT_RUNS")); {
	case err == nil && v > 0:
		runs = v
	case os.Getenv("VERBUND_SOAK") != "":
		runs = 200
	case testing.Short():
		runs = 8
	}
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("VERBUND_CORRUPT_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (VERBUND_CORRUPT_SEED replays it), %d runs", seed, runs)
	rng := rand.New(rand.NewPCG(seed, 17))

	base := t.TempDir()
	cfg := quietConfig(t, base)
	want, applied := buildCorruptionImage(t, cfg)

	// The undamaged image, restarted, serves want (the reference).
	if got, err := startAndDump(t, cfg, copyTree(t, base), applied); err != nil || !sameState(want, got) {
		t.Fatalf("undamaged restart: err %v, diff %s", err, diffState(want, got))
	}
	var refused, same, different, recovered int
	msgs := map[string]int{}
	blank := regexp.MustCompile(`/[^ :"]*|[0-9]+`)
	for i := range runs {
		dir := copyTree(t, base)
		what, store := damageNodeStore(t, rng, dir, i%3 == 2)
		got, err := startAndDump(t, cfg, dir, applied)
		if err != nil {
			refused++
			msgs[store+": "+blank.ReplaceAllString(err.Error(), "#")]++
			if store != "state" {
				continue
			}
			// The documented recovery: move the state aside, restart.
			if !strings.Contains(err.Error(), "move "+filepath.Join(dir, "state")+" aside") {
				t.Errorf("run %d (%s): the refusal does not say how to recover: %v", i, what, err)
			}
			if err := os.Rename(filepath.Join(dir, "state"), filepath.Join(dir, "state.damaged")); err != nil {
				t.Fatal(err)
			}
			got, err = startAndDump(t, cfg, dir, applied)
			if err != nil || !sameState(want, got) {
				t.Errorf("run %d (%s): recovery (state moved aside) failed: err %v, diff %s", i, what, err, diffState(want, got))
				continue
			}
			recovered++
			continue
		}
		if sameState(want, got) {
			same++
			continue
		}
		different++
		t.Errorf("run %d (%s): DIFFERENT state served: %s", i, what, diffState(want, got))
	}
	t.Logf("corruption of state/snapshots: %d runs: %d refused to start (%d state refusals recovered by moving state aside), %d served the same state, %d served DIFFERENT state",
		runs, refused, recovered, same, different)
	var lines []string
	for m, n := range msgs {
		lines = append(lines, fmt.Sprintf("%3d× %s", n, m))
	}
	sort.Strings(lines)
	for _, l := range lines {
		t.Log("  refused: " + l)
	}
}

func quietConfig(t *testing.T, dir string) Config {
	cfg := testConfig(t, dir)
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

// buildCorruptionImage starts a node on cfg.DataDir, writes 60
// organisations with a snapshot after the first 40, and stops it.
func buildCorruptionImage(t *testing.T, cfg Config) (map[string]string, uint64) {
	t.Helper()
	n := startNode(t, cfg)
	f := &fixture{n: n}
	f.pub = registryv1connect.NewPublishServiceClient(h2cClient(), n.APIURL())
	for batch := range 3 {
		var cmds []string
		for i := range 20 {
			id := fmt.Sprintf("09162%07d", batch*20+i)
			cmds = append(cmds, sign(t, n.SigningKey(), "test-operator", &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
				Id: id, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: "Gemeinde " + id,
			}}}))
		}
		mustOK(t, f.publish(t, cmds...))
		if batch == 1 {
			if err := n.Raft().Snapshot().Error(); err != nil {
				t.Fatalf("snapshot: %v", err)
			}
		}
	}
	want, err := registryDump(n)
	if err != nil {
		t.Fatal(err)
	}
	applied := n.AppliedIndex()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	snaps, _ := filepath.Glob(filepath.Join(cfg.DataDir, "raft", "snapshots", "*", "state.bin"))
	if len(snaps) == 0 {
		t.Fatal("no snapshot written")
	}
	return want, applied
}

// startAndDump starts a node on dir; it returns the start-up error, or the
// registry state once the node has applied at least applied. A node that
// starts but then cannot reach that index or read its state fails the test.
func startAndDump(t *testing.T, cfg Config, dir string, applied uint64) (map[string]string, error) {
	t.Helper()
	cfg.DataDir = dir
	cfg.RaftAddr = freeAddr(t)
	n, err := New(cfg)
	if err != nil {
		return nil, err
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		return nil, err
	}
	if err := n.state.WaitApplied(ctx, applied); err != nil {
		t.Errorf("started on %s but did not reach index %d (at %d): %v", dir, applied, n.AppliedIndex(), err)
		return map[string]string{}, nil
	}
	d, err := registryDump(n)
	if err != nil {
		// Started, then failed a read: neither a refusal nor the same data.
		t.Errorf("started on %s but failed to read its state: %v", dir, err)
		return map[string]string{}, nil
	}
	return d, nil
}

// registryDump is the registry state a node serves: the replicated state
// through the Reader (what queries and members' copies read).
func registryDump(n *Node) (map[string]string, error) {
	out := map[string]string{}
	_, err := n.Reader().SnapshotWrites(context.Background(), 1000, func(ws []*registryv1.StateWrite) error {
		for _, w := range ws {
			out[string(w.GetKey())] = string(w.GetValue())
		}
		return nil
	})
	return out, err
}

func sameState(a, b map[string]string) bool {
	if a == nil || b == nil || len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func diffState(want, got map[string]string) string {
	var d []string
	for k, v := range want {
		if w, ok := got[k]; !ok {
			d = append(d, "missing "+strconv.Quote(k))
		} else if w != v {
			d = append(d, "changed "+strconv.Quote(k))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			d = append(d, "extra "+strconv.Quote(k))
		}
	}
	sort.Strings(d)
	if len(d) > 5 {
		d = append(d[:5], fmt.Sprintf("... %d more", len(d)-5))
	}
	return strings.Join(d, "; ")
}

// copyTree copies the data directory src to a new temp dir.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return copySparse(p, target)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// copySparse copies a file's data extents; holes (badger's preallocated,
// memory-mapped files) stay holes.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	defer out.Close()
	for off := int64(0); off < fi.Size(); {
		start, err := in.Seek(off, 3) // SEEK_DATA
		if err != nil {
			break
		}
		end, err := in.Seek(start, 4) // SEEK_HOLE
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.NewOffsetWriter(out, start), io.NewSectionReader(in, start, end-start)); err != nil {
			return err
		}
		off = end
	}
	return out.Truncate(fi.Size())
}

// damageNodeStore damages one file of the state DB or of a snapshot in the
// data directory dir; it returns what it did and which store.
func damageNodeStore(t *testing.T, rng *rand.Rand, dir string, truncate bool) (what, store string) {
	t.Helper()
	var files []string
	store = "state"
	if rng.IntN(2) == 0 {
		ents, err := os.ReadDir(filepath.Join(dir, "state"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.Type().IsRegular() && e.Name() != "LOCK" {
				files = append(files, filepath.Join(dir, "state", e.Name()))
			}
		}
	} else {
		store = "snapshot"
		files, _ = filepath.Glob(filepath.Join(dir, "raft", "snapshots", "*", "*"))
	}
	sort.Strings(files)
	path := files[rng.IntN(len(files))]
	rel, _ := filepath.Rel(dir, path)
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	fi, _ := fh.Stat()
	used := usedSize(t, fh, fi.Size())
	if used == 0 {
		return rel + " (empty, untouched)", store
	}
	if truncate {
		at := rng.Int64N(used)
		if err := fh.Truncate(at); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s truncated to %d of %d bytes", rel, at, fi.Size()), store
	}
	var offs []string
	for range 1 + rng.IntN(4) {
		off := rng.Int64N(used)
		b := []byte{0}
		if _, err := fh.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		b[0] ^= byte(1 + rng.IntN(255))
		if _, err := fh.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		offs = append(offs, strconv.FormatInt(off, 10))
	}
	return fmt.Sprintf("%s: bytes flipped at %s (used %d)", rel, strings.Join(offs, ","), used), store
}

// usedSize is the offset after the last non-zero byte of f (a
// preallocated file's zero tail carries nothing).
func usedSize(t *testing.T, f *os.File, size int64) int64 {
	t.Helper()
	var lastStart, lastEnd int64 = -1, -1
	for off := int64(0); off < size; {
		start, err := f.Seek(off, 3)
		if err != nil {
			break
		}
		end, err := f.Seek(start, 4)
		if err != nil {
			t.Fatal(err)
		}
		lastStart, lastEnd, off = start, end, end
	}
	if lastStart < 0 {
		return 0
	}
	b := make([]byte, lastEnd-lastStart)
	if _, err := f.ReadAt(b, lastStart); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	n := len(b)
	for n > 0 && b[n-1] == 0 {
		n--
	}
	return lastStart + int64(n)
}
