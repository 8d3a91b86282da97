package handover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// powerLoss models a machine that loses every write not yet synced when
// the power goes. badger has no file hook, so the store's durable state is
// modelled by a copy of its directory taken at each sync point of the
// commit path (fpSynced: a batch committed and synced, nothing answered
// yet). A power cut stops the node abruptly and replaces its badger files
// with the last copy. The high-water mark file is synced on its own (after
// the sync point), so the cut keeps the live one, as a disk would.
type powerLoss struct {
	t      testing.TB
	mu     sync.Mutex
	images map[*node]string // last sync-point copy per node ("" = empty store)
	copies atomic.Int64
	cuts   atomic.Int64
	missed atomic.Int64 // sync points hit before the node was attached
	// refused collects the start-up refusals after a cut.
	refused  []string
	firstErr error
}

func newPowerLoss(t testing.TB) *powerLoss {
	return &powerLoss{t: t, images: map[*node]string{}}
}

// attach starts modelling n's disk. Nothing is durable before the first
// sync point: a cut before it leaves an empty store.
func (p *powerLoss) attach(n *node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.images[n]; !ok {
		p.images[n] = ""
	}
	// Small files: the copy at each sync point reads them whole.
	n.dbOpts = func(o badger.Options) badger.Options {
		return o.WithValueLogFileSize(1 << 20)
	}
	n.onRefused = func(err error) bool {
		p.mu.Lock()
		p.refused = append(p.refused, fmt.Sprintf("%s: %v", n.org, err))
		if p.firstErr == nil {
			p.firstErr = err
		}
		p.mu.Unlock()
		return true // accept the store as it is, so the run goes on and the checker sees what is lost
	}
}

// syncPoint copies n's badger files (the committer is blocked meanwhile, so
// no write of ours runs; a background flush of badger might, so the copy is
// retried until the directory did not change while it was copied).
func (p *powerLoss) syncPoint(n *node) error {
	if n == nil {
		p.missed.Add(1)
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.images[n]; !ok {
		p.missed.Add(1)
		return nil
	}
	dst := filepath.Join(os.TempDir(), fmt.Sprintf("powerloss-%p-%d", n, p.copies.Add(1)))
	for attempt := 0; ; attempt++ {
		_ = os.RemoveAll(dst)
		stable, err := copyStore(n.dir, dst)
		if err == nil && stable {
			break
		}
		if attempt > 50 {
			p.t.Errorf("power loss: cannot take a stable copy of %s: %v", n.dir, err)
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	if old := p.images[n]; old != "" {
		_ = os.RemoveAll(old)
	}
	p.images[n] = dst
	return nil
}

// cutThen returns the between-function of a restart that cuts the power
// (the node is stopped: badger files replaced by the last sync-point copy)
// and then runs next.
func (p *powerLoss) cutThen(n *node, next func()) func() {
	return func() {
		p.mu.Lock()
		img := p.images[n]
		p.mu.Unlock()
		if err := replaceStore(n.dir, img); err != nil {
			p.t.Errorf("power cut of %s: %v", n.org, err)
		}
		p.cuts.Add(1)
		if next != nil {
			next()
		}
	}
}

func (p *powerLoss) cleanup() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, img := range p.images {
		if img != "" {
			_ = os.RemoveAll(img)
		}
	}
}

type fileStamp struct {
	name string
	size int64
	mod  time.Time
}

func stamps(dir string) ([]fileStamp, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []fileStamp
	for _, e := range ents {
		if !e.Type().IsRegular() || e.Name() == HighWaterFile || e.Name() == HighWaterFile+".tmp" {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, err
		}
		out = append(out, fileStamp{e.Name(), fi.Size(), fi.ModTime()})
	}
	return out, nil
}

// copyStore copies the badger files of src (not the high-water mark) to a
// new directory dst and reports whether src was unchanged meanwhile.
func copyStore(src, dst string) (bool, error) {
	before, err := stamps(src)
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return false, err
	}
	for _, f := range before {
		if err := copyFile(filepath.Join(src, f.name), filepath.Join(dst, f.name)); err != nil {
			return false, err
		}
	}
	after, err := stamps(src)
	if err != nil {
		return false, err
	}
	return slices.Equal(before, after), nil
}

// copyFile copies src to dst, only its data extents (badger preallocates
// and memory-maps sparse files of up to 2 GiB): holes stay holes.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	exts, err := dataExtents(in, fi.Size())
	if err != nil {
		out.Close()
		return err
	}
	for _, e := range exts {
		if _, err := io.Copy(io.NewOffsetWriter(out, e[0]), io.NewSectionReader(in, e[0], e[1]-e[0])); err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Truncate(fi.Size()); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

// dataExtents lists the [start, end) ranges of f that hold data.
func dataExtents(f *os.File, size int64) ([][2]int64, error) {
	var out [][2]int64
	for off := int64(0); off < size; {
		start, err := f.Seek(off, seekData)
		if err != nil { // ENXIO: no data after off
			break
		}
		end, err := f.Seek(start, seekHole)
		if err != nil {
			return nil, err
		}
		out = append(out, [2]int64{start, end})
		off = end
	}
	return out, nil
}

// replaceStore removes dir's badger files (keeping the high-water mark)
// and copies img's files in ("" = an empty store).
func replaceStore(dir, img string) error {
	cur, err := stamps(dir)
	if err != nil {
		return err
	}
	for _, f := range cur {
		if err := os.Remove(filepath.Join(dir, f.name)); err != nil {
			return err
		}
	}
	if img == "" {
		return nil
	}
	files, err := stamps(img)
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := copyFile(filepath.Join(img, f.name), filepath.Join(dir, f.name)); err != nil {
			return err
		}
	}
	return nil
}

// powerLossChaos: 120 handovers with -short, 300 in make test, 2000 with
// VERBUND_SOAK=1 (make soak).
func powerLossChaos(short bool) chaosConfig {
	cc := defaultChaos(os.Getenv("VERBUND_SOAK") == "")
	cc.rotate = false
	switch {
	case os.Getenv("VERBUND_SOAK") != "":
		cc.n = 2000
	case short:
		cc.n = 120
	default:
		cc.n = 300
	}
	return cc
}

// TestPowerLossHandover runs the handover chaos test with every restart a
// power cut of the store: whatever was written after the last sync point
// of the commit path is gone. No acknowledged send may be lost, every
// handover must arrive exactly once, every receipt must verify, and no
// store may be refused at start (the high-water mark never runs ahead of a
// synced store).
func TestPowerLossHandover(t *testing.T) {
	pl := newPowerLoss(t)
	t.Cleanup(pl.cleanup)
	cc := powerLossChaos(testing.Short())
	cc.powerLoss = pl
	r := runChaos(t, cc)
	t.Logf("power loss: %d handovers acknowledged, %d events in %v; power cuts %d (A %d, B %d restarts); sync-point copies %d; crash points hit %d; %s",
		r.acknowledged, r.events, r.elapsed.Round(time.Millisecond), pl.cuts.Load(), r.restarts[0], r.restarts[1], pl.copies.Load(), r.crashes, r.net)
	for _, v := range r.violations {
		t.Error(v)
	}
	for _, msg := range pl.refused {
		t.Errorf("store refused after a power cut of a synced store: %s", msg)
	}
	if n := pl.missed.Load(); n > 0 {
		t.Errorf("%d sync points were not copied (the model is incomplete)", n)
	}
	if pl.cuts.Load() == 0 || pl.copies.Load() == 0 || r.statsA.Retries == 0 {
		t.Errorf("the run did not exercise power cuts: cuts %d, copies %d, retries %d", pl.cuts.Load(), pl.copies.Load(), r.statsA.Retries)
	}
}

// TestPowerLossControlNoSync is the control: both stores opened with
// SyncWrites(false) and the DB.Sync after each group commit left out, so
// no sync point is ever reached after a write and a power cut loses
// acknowledged work. It must be caught on every run: by the high-water
// mark (the store refuses to start) and by the exactly-once checker.
func TestPowerLossControlNoSync(t *testing.T) {
	pl := newPowerLoss(t)
	t.Cleanup(pl.cleanup)
	cc := powerLossChaos(true)
	// Sending lasts longer (>= 125 ms) than the longest first wait for a
	// restart (80 ms), so every run has power cuts after acknowledged sends.
	cc.n, cc.senders, cc.sendPause, cc.restartEvery, cc.onlyRestartA = 100, 4, 5*time.Millisecond, 40*time.Millisecond, true
	cc.powerLoss = pl
	cc.brokenA = func(h *testHooks) { h.skipSync = true }
	cc.brokenB = func(h *testHooks) { h.skipSync = true }
	r := runChaos(t, cc)
	if len(pl.refused) == 0 {
		t.Fatalf("no-fsync store not refused after %d power cuts (violations %d)", pl.cuts.Load(), len(r.violations))
	}
	if !errors.Is(pl.firstErr, ErrStoreBehind) {
		t.Errorf("refusal is not ErrStoreBehind: %v", pl.firstErr)
	}
	t.Logf("caught: %d refused starts after %d power cuts, e.g. %q; checker found %d violations", len(pl.refused), pl.cuts.Load(), pl.refused[0], len(r.violations))
	if len(r.violations) == 0 {
		t.Errorf("the exactly-once checker did not see the lost sends")
	}
}

// TestStartRefusesStoreBehindPublishedHead: a store older than the audit
// head the registry holds for its organisation (here: replaced by an empty
// store, high-water mark file gone too) is refused at start, with both
// positions in the error.
func TestStartRefusesStoreBehindPublishedHead(t *testing.T) {
	reg := newRegistry()
	a := newNodeSync(t, reg, orgA, nil, true)
	newNodeSync(t, reg, orgB, nil, true) // the recipient
	if _, err := a.s().SendHandover(context.Background(), caseRequest(orgB, 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "delivery and publication", func() bool {
		return pendingCount(t, a.s()) == 0 && a.s().Stats().AuditHead.Seq > 0 && published(reg, a)
	})
	a.stop()
	if err := replaceStore(a.dir, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(a.dir, HighWaterFile)); err != nil {
		t.Fatal(err)
	}
	db, err := OpenDB(a.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = New(Config{OrgID: a.org, Keys: a, DB: db, Resolver: reg, Directory: reg, Dialer: &dialer{},
		AuditHeads: auditFor{reg, a.org}})
	if !errors.Is(err, ErrStoreBehind) || !strings.Contains(err.Error(), "published head") {
		t.Fatalf("store behind the published audit head not refused: %v", err)
	}
	t.Logf("refused: %v", err)
}
