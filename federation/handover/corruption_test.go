package handover

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protojson"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

// corruptionRuns is the number of damaged stores a corruption test opens:
// VERBUND_CORRUPT_RUNS, else 400 in the soak (VERBUND_SOAK=1), 24 with
// -short and 80 otherwise.
func corruptionRuns(short bool) int {
	if v, err := strconv.Atoi(os.Getenv("VERBUND_CORRUPT_RUNS")); err == nil && v > 0 {
		return v
	}
	switch {
	case os.Getenv("VERBUND_SOAK") != "":
		return 400
	case short:
		return 24
	}
	return 80
}

// storeImage is a copy of a stopped handover store and what it served.
type storeImage struct {
	name string // e.g. "org-b/crash"
	dir  string
	n    *node // keys and org
	dump map[string]string
}

// corruptionTally counts the outcomes of opening damaged stores.
type corruptionTally struct {
	runs, refused, readErr, same, different int
	messages                                map[string]int // refusal messages, paths and numbers blanked
	diffs                                   []string
}

var blankRE = regexp.MustCompile(`/[^ :]*|[0-9]+`)

func (c *corruptionTally) refuse(err error) {
	c.refused++
	c.messages[blankRE.ReplaceAllString(err.Error(), "#")]++
}

func (c *corruptionTally) report(t *testing.T) {
	t.Logf("corruption: %d runs: %d refused to start, %d served the same data, %d failed a read (error, no data), %d served DIFFERENT data",
		c.runs, c.refused, c.same, c.readErr, c.different)
	var msgs []string
	for m, n := range c.messages {
		msgs = append(msgs, fmt.Sprintf("%4d× %s", n, m))
	}
	sort.Strings(msgs)
	for _, m := range msgs {
		t.Log("  refused: " + m)
	}
	for _, d := range c.diffs {
		t.Error(d)
	}
}

// TestHandoverStoreCorruption flips bytes at random offsets (seeded, so a
// failing run replays with VERBUND_CORRUPT_SEED) in one file of a stopped
// handover store, or truncates one file, then opens the store as a node
// would (OpenDB, New). It must either refuse to start or serve exactly what
// it served before (every key and value, outbox, inbox, audit log):
// never different data. Two images per organisation: after a clean
// shutdown (data in tables) and after a crash (data in badger's
// write-ahead log).
func TestHandoverStoreCorruption(t *testing.T) {
	images := handoverImages(t)
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("VERBUND_CORRUPT_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (VERBUND_CORRUPT_SEED replays it)", seed)
	rng := rand.New(rand.NewPCG(seed, 9))
	tally := &corruptionTally{messages: map[string]int{}}
	runs := corruptionRuns(testing.Short())
	for i := range runs {
		img := images[i%len(images)]
		dir := filepath.Join(t.TempDir(), "store")
		if err := copyDir(img.dir, dir); err != nil {
			t.Fatal(err)
		}
		what, err := damage(rng, dir, i%3 == 2)
		if err != nil {
			t.Fatal(err)
		}
		tally.runs++
		s, db, err := openImage(t, img.n, dir)
		if err != nil {
			tally.refuse(err)
			continue
		}
		got, err := dumpService(s)
		s.Close()
		db.Close()
		switch {
		case err != nil:
			tally.readErr++
			tally.messages["read error: "+blankRE.ReplaceAllString(err.Error(), "#")]++
		case sameDump(img.dump, got):
			tally.same++
		default:
			tally.different++
			tally.diffs = append(tally.diffs, fmt.Sprintf("run %d (%s, %s): DIFFERENT data served: %s", i, img.name, what, describeDiff(img.dump, got)))
		}
	}
	tally.report(t)
	if tally.refused == 0 {
		t.Errorf("no damaged store was refused: the damage did not reach the data")
	}
}

// handoverImages builds the stores to damage: A sends handovers to B, B
// accepts some (events back to A), everything is delivered and the audit
// heads published; then each store is copied while its DB is still open
// (the crash image: data in the write-ahead log) and after a clean close.
func handoverImages(t *testing.T) []*storeImage {
	t.Helper()
	reg := newRegistry()
	a := newNodeSync(t, reg, orgA, nil, true)
	b := newNodeSync(t, reg, orgB, nil, true)
	ctx := context.Background()
	for i := range 12 {
		if _, err := a.s().SendHandover(ctx, caseRequest(orgB, i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "deliveries", func() bool { return pendingCount(t, a.s()) == 0 && len(inbox(t, b.s())) == 12 })
	for _, c := range inbox(t, b.s())[:4] {
		if _, err := b.s().AcceptCase(ctx, &federationv1.AcceptCaseRequest{HandoverId: c.HandoverId}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "events", func() bool { return pendingCount(t, b.s()) == 0 })
	waitFor(t, 10*time.Second, "audit publication", func() bool { return published(reg, a) && published(reg, b) })
	var out []*storeImage
	for _, n := range []*node{a, b} {
		n.mu.Lock()
		n.handler.Store(nil)
		s := n.svc.Swap(nil)
		n.cancel()
		s.Close()
		<-n.runDone
		crash := filepath.Join(t.TempDir(), "crash")
		if err := copyDir(n.dir, crash); err != nil {
			t.Fatal(err)
		}
		if err := n.db.Close(); err != nil {
			t.Fatal(err)
		}
		clean := filepath.Join(t.TempDir(), "clean")
		if err := copyDir(n.dir, clean); err != nil {
			t.Fatal(err)
		}
		n.mu.Unlock()
		var dumps []map[string]string
		for _, dir := range []string{crash, clean} {
			tmp := filepath.Join(t.TempDir(), "ref")
			if err := copyDir(dir, tmp); err != nil {
				t.Fatal(err)
			}
			s, db, err := openImage(t, n, tmp)
			if err != nil {
				t.Fatalf("undamaged image of %s refused: %v", n.org, err)
			}
			d, err := dumpService(s)
			s.Close()
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			dumps = append(dumps, d)
		}
		if !sameDump(dumps[0], dumps[1]) {
			t.Fatalf("crash and clean image of %s differ: %s", n.org, describeDiff(dumps[0], dumps[1]))
		}
		if len(dumps[0]) < 50 {
			t.Fatalf("image of %s too small: %d keys", n.org, len(dumps[0]))
		}
		out = append(out, &storeImage{name: n.org + "/crash", dir: crash, n: n, dump: dumps[0]},
			&storeImage{name: n.org + "/clean", dir: clean, n: n, dump: dumps[1]})
	}
	return out
}

// openImage opens a store as the node does: OpenDB, then New with the
// start-up checks (high-water mark, published audit head).
func openImage(t *testing.T, n *node, dir string) (*Service, *badger.DB, error) {
	db, err := OpenDB(dir, nil)
	if err != nil {
		return nil, nil, err
	}
	s, err := New(Config{
		OrgID: n.org, Keys: n, DB: db, Resolver: n.reg, Directory: n.reg, Dialer: &dialer{hc: nil},
		Audit: auditFor{n.reg, n.org}, AuditHeads: auditFor{n.reg, n.org}, Logger: quietLogger(),
	})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return s, db, nil
}

// dumpService is everything the store serves: every key and value, the
// outbox and inbox as listed, the audit log and whether it verifies
// against the published heads.
func dumpService(s *Service) (map[string]string, error) {
	out := map[string]string{}
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out["kv:"+string(it.Item().Key())] = string(v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	ob, err := s.ListOutbox(ctx, &federationv1.ListOutboxRequest{PageSize: 1000})
	if err != nil {
		return nil, err
	}
	out["api:outbox"] = protojson.Format(ob)
	ib, err := s.ListInbox(ctx, &federationv1.ListInboxRequest{PageSize: 1000})
	if err != nil {
		return nil, err
	}
	out["api:inbox"] = protojson.Format(ib)
	audit, err := s.AuditLog(0, 0)
	if err != nil {
		return nil, err
	}
	out["api:audit"] = fmt.Sprint(audit)
	// A chain shorter than the published head fails here: that is data
	// served differently (entries missing), not a read error.
	out["api:verify-audit"] = "ok"
	if _, err := s.VerifyAudit(ctx); err != nil {
		out["api:verify-audit"] = err.Error()
	}
	return out, nil
}

func sameDump(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func describeDiff(want, got map[string]string) string {
	var d []string
	for k, v := range want {
		if w, ok := got[k]; !ok {
			d = append(d, "missing "+k)
		} else if w != v {
			d = append(d, "changed "+k)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			d = append(d, "extra "+k)
		}
	}
	sort.Strings(d)
	if len(d) > 5 {
		d = append(d[:5], fmt.Sprintf("... %d more", len(d)-5))
	}
	return strings.Join(d, "; ")
}

// copyDir copies every regular file of src (a badger directory, flat).
func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// damage picks one file of dir (not badger's LOCK) and flips 1-4 bytes at
// random offsets within its used part (up to the last non-zero byte; a
// preallocated file's zero tail carries nothing) or, if truncate, cuts it
// at a random length within the used part. It describes what it did.
func damage(rng *rand.Rand, dir string, truncate bool) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var files []string
	for _, e := range ents {
		if e.Type().IsRegular() && e.Name() != "LOCK" {
			files = append(files, e.Name())
		}
	}
	sort.Strings(files)
	name := files[rng.IntN(len(files))]
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	exts, err := dataExtents(f, fi.Size())
	if err != nil {
		return "", err
	}
	// The used part: up to the last non-zero byte of the last extent.
	var used int64
	if len(exts) > 0 {
		last := exts[len(exts)-1]
		b := make([]byte, last[1]-last[0])
		if _, err := f.ReadAt(b, last[0]); err != nil && err != io.EOF {
			return "", err
		}
		n := len(b)
		for n > 0 && b[n-1] == 0 {
			n--
		}
		used = last[0] + int64(n)
	}
	if used == 0 {
		return name + " (empty, untouched)", nil
	}
	if truncate {
		at := rng.Int64N(used)
		return fmt.Sprintf("%s truncated to %d of %d bytes", name, at, fi.Size()), f.Truncate(at)
	}
	var offs []string
	for range 1 + rng.IntN(4) {
		off := rng.Int64N(used)
		b := []byte{0}
		if _, err := f.ReadAt(b, off); err != nil {
			return "", err
		}
		b[0] ^= byte(1 + rng.IntN(255))
		if _, err := f.WriteAt(b, off); err != nil {
			return "", err
		}
		offs = append(offs, strconv.FormatInt(off, 10))
	}
	return fmt.Sprintf("%s: bytes flipped at %s (used %d)", name, strings.Join(offs, ","), used), nil
}
