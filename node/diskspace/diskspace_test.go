package diskspace

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeDisk is an injected file system: free bytes the test sets, and a
// count of measurements.
type fakeDisk struct {
	free  atomic.Uint64
	err   atomic.Pointer[error]
	calls atomic.Int64
}

func (d *fakeDisk) measure(string) (uint64, error) {
	d.calls.Add(1)
	if e := d.err.Load(); e != nil {
		return 0, *e
	}
	return d.free.Load(), nil
}

// clock is a manual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newGuard(t *testing.T, d *fakeDisk, c *clock) *Guard {
	t.Helper()
	g, err := New(Options{Path: "/data/n1", Reserve: 100 << 20, Free: d.measure, Interval: 250 * time.Millisecond, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestGuardRefusesBelowReserveAndResumes: below the reserve Check refuses
// with a *FullError naming the path, the free space and the reserve; once
// space returns the next measurement admits writes again.
func TestGuardRefusesBelowReserveAndResumes(t *testing.T) {
	d, c := &fakeDisk{}, &clock{t: time.Unix(1000, 0)}
	d.free.Store(1 << 30)
	g := newGuard(t, d, c)
	if err := g.Check(); err != nil {
		t.Fatalf("1 GiB free, reserve 100 MiB: %v", err)
	}
	d.free.Store(12 << 20)
	c.add(250 * time.Millisecond)
	err := g.Check()
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("12 MiB free: got %v, want ErrDiskFull", err)
	}
	var fe *FullError
	if !errors.As(err, &fe) || fe.Free != 12<<20 || fe.Reserve != 100<<20 || fe.Path != "/data/n1" {
		t.Fatalf("error %#v", err)
	}
	for _, want := range []string{"/data/n1", "12.0 MiB free", "reserve of 100.0 MiB"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	d.free.Store(101 << 20)
	if err := g.Check(); err == nil {
		t.Fatal("space returned, but within the interval the cached measurement must still refuse")
	}
	c.add(250 * time.Millisecond)
	if err := g.Check(); err != nil {
		t.Fatalf("space returned: %v", err)
	}
}

// TestGuardCachesMeasurements: Check measures at most once per interval,
// however often it is called.
func TestGuardCachesMeasurements(t *testing.T) {
	d, c := &fakeDisk{}, &clock{t: time.Unix(1000, 0)}
	d.free.Store(1 << 30)
	g := newGuard(t, d, c)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				_ = g.Check()
			}
		}()
	}
	wg.Wait()
	if n := d.calls.Load(); n != 1 {
		t.Fatalf("%d measurements within one interval, want 1 (the one in New)", n)
	}
	c.add(time.Second)
	_ = g.Check()
	_ = g.Check()
	if n := d.calls.Load(); n != 2 {
		t.Fatalf("%d measurements after the interval, want 2", n)
	}
}

// TestGuardFailingMeasurementAdmits: a statfs error admits writes (and the
// guard refuses again once a measurement shows a full disk).
func TestGuardFailingMeasurementAdmits(t *testing.T) {
	d, c := &fakeDisk{}, &clock{t: time.Unix(1000, 0)}
	boom := errors.New("statfs: input/output error")
	d.err.Store(&boom)
	g := newGuard(t, d, c)
	if err := g.Check(); err != nil {
		t.Fatalf("failing measurement: %v", err)
	}
	d.err.Store(nil)
	d.free.Store(1)
	c.add(time.Second)
	if err := g.Check(); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("got %v, want ErrDiskFull", err)
	}
}

func TestNilGuardAdmits(t *testing.T) {
	var g *Guard
	if err := g.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Options{Reserve: 1}); err == nil {
		t.Error("no path accepted")
	}
	if _, err := New(Options{Path: "/x"}); err == nil {
		t.Error("no reserve accepted")
	}
}

// TestStatfs measures a real directory.
func TestStatfs(t *testing.T) {
	free, err := Statfs(t.TempDir())
	if err != nil {
		t.Skipf("statfs: %v", err)
	}
	if free == 0 {
		t.Fatal("0 bytes free in the temp dir")
	}
	if _, err := Statfs("/does/not/exist"); err == nil {
		t.Fatal("statfs of a missing path succeeded")
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 256 << 20: "256.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestGuardFloor: between the floor (half the reserve) and the reserve,
// Check refuses and CheckFloor admits; below the floor both refuse.
func TestGuardFloor(t *testing.T) {
	d, c := &fakeDisk{}, &clock{t: time.Unix(1000, 0)}
	d.free.Store(60 << 20) // reserve 100 MiB, floor 50 MiB
	g := newGuard(t, d, c)
	if err := g.Check(); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Check at 60 MiB: %v", err)
	}
	if err := g.CheckFloor(); err != nil {
		t.Fatalf("CheckFloor at 60 MiB: %v", err)
	}
	d.free.Store(40 << 20)
	c.add(time.Second)
	err := g.CheckFloor()
	var fe *FullError
	if !errors.As(err, &fe) || fe.Floor != 50<<20 || !strings.Contains(err.Error(), "below the floor of 50.0 MiB") {
		t.Fatalf("CheckFloor at 40 MiB: %v", err)
	}
}
