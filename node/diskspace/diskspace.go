// Package diskspace keeps a node from filling its disk: a Guard measures
// the free space of the file system that holds the data directory and
// refuses new writes while it is below a reserve.
//
// Why a reserve and not the write's own ENOSPC: badger keeps its
// write-ahead log in memory-mapped files, and on a full disk the process
// dies with a fault on the mapped file instead of getting an error back
// (see /work/shared/PITFALLS.md). So new work (registry writes proposed by
// the leader, handovers and case steps, incoming deliveries, key rotation)
// is refused while there is still room, and the reserve is what the writes
// already under way and the node's own bookkeeping (Raft entries the
// leader replicates, the FSM applying them, receipts, audit entries) need
// to finish cleanly.
//
// A refusal is a *FullError, which matches ErrDiskFull with errors.Is; the
// node's error map (node/connecterr) answers it with Connect's
// resource_exhausted and marks it retryable. Nothing needs restarting when
// space returns: the next measurement after it admits writes again.
//
// # Cost
//
// Check is called on every write. It measures at most once per Interval
// (250 ms by default, a statfs(2) of about a microsecond) and otherwise
// answers from the last measurement with an atomic load: one caller
// refreshes, the others use the cached value meanwhile.
package diskspace

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// ErrDiskFull is matched (errors.Is) by every refusal of a Guard.
var ErrDiskFull = errors.New("disk full")

// DefaultInterval is how long a measurement is used before the next one.
const DefaultInterval = 250 * time.Millisecond

// FreeFunc returns the bytes an unprivileged process may still write on the
// file system that holds path. Statfs is the production one; tests inject
// their own to simulate a full disk.
type FreeFunc func(path string) (free uint64, err error)

// FullError is a write refused because the file system holding Path has
// Free bytes left, below Reserve (Check), or below Floor (CheckFloor, with
// Floor set). It matches ErrDiskFull.
type FullError struct {
	Path    string
	Free    uint64
	Reserve uint64
	// Floor is set when the refusal is CheckFloor's.
	Floor uint64
}

func (e *FullError) Error() string {
	if e.Floor > 0 {
		return fmt.Sprintf("disk full: the file system of data dir %s has %s free, below the floor of %s "+
			"(half the reserve): the Raft log takes no more entries until space is freed", e.Path, Bytes(e.Free), Bytes(e.Floor))
	}
	return fmt.Sprintf("disk full: the file system of data dir %s has %s free, below the reserve of %s; "+
		"new writes are refused until space is freed (reads continue)", e.Path, Bytes(e.Free), Bytes(e.Reserve))
}

// Is makes errors.Is(err, ErrDiskFull) true.
func (e *FullError) Is(target error) bool { return target == ErrDiskFull }

// Options configure a Guard. Path and Reserve are required.
type Options struct {
	// Path is the directory whose file system is measured (the data dir).
	Path string
	// Reserve: writes are refused while fewer bytes than this are free.
	Reserve uint64
	// Free measures; default Statfs.
	Free FreeFunc
	// Interval between measurements; default DefaultInterval.
	Interval time.Duration
	// Logger gets one line when writes start being refused and one when
	// they are admitted again (and when a measurement fails).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Guard answers whether new writes may proceed. It is safe for concurrent
// use. A nil *Guard admits everything (the guard turned off).
type Guard struct {
	opts       Options
	last       atomic.Pointer[sample]
	refreshing atomic.Bool
	mu         sync.Mutex // orders the transition log lines
	refusing   bool
	failing    bool
}

// sample is one measurement.
type sample struct {
	at   time.Time
	free uint64
	err  error
}

// New returns a Guard for opts. It measures once right away, so a node
// that starts on a full disk refuses writes from its first request.
func New(opts Options) (*Guard, error) {
	if opts.Path == "" {
		return nil, errors.New("diskspace: Path is required")
	}
	if opts.Reserve == 0 {
		return nil, errors.New("diskspace: Reserve must be > 0")
	}
	if opts.Free == nil {
		opts.Free = Statfs
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	g := &Guard{opts: opts}
	g.measure()
	return g, nil
}

// Check returns nil if a new write may proceed, or a *FullError if the
// free space was below the reserve at the last measurement (at most
// Interval ago). A failing measurement admits the write (logged once): the
// write itself then meets whatever is wrong with the file system, and the
// node does not stop taking writes because statfs broke.
func (g *Guard) Check() error {
	if g == nil {
		return nil
	}
	s := g.current()
	if s.err == nil && s.free < g.opts.Reserve {
		return &FullError{Path: g.opts.Path, Free: s.free, Reserve: g.opts.Reserve}
	}
	return nil
}

// CheckFloor is Check against the floor, half the reserve: the last line
// before the disk is really full, for writes that cannot wait for new work
// to stop (the Raft log entries a follower receives, which its state
// machine then applies). Above the floor they use the reserve; below it
// they are refused too, so that a node stops growing its stores instead of
// meeting ENOSPC in badger's memory-mapped files (a crash).
func (g *Guard) CheckFloor() error {
	if g == nil {
		return nil
	}
	s := g.current()
	if floor := g.opts.Reserve / 2; s.err == nil && s.free < floor {
		return &FullError{Path: g.opts.Path, Free: s.free, Reserve: g.opts.Reserve, Floor: floor}
	}
	return nil
}

// Free returns the free bytes at the last measurement (refreshing it if it
// is older than Interval) and the reserve.
func (g *Guard) Free() (free, reserve uint64, err error) {
	if g == nil {
		return 0, 0, errors.New("diskspace: guard off")
	}
	s := g.current()
	return s.free, g.opts.Reserve, s.err
}

// current returns the last measurement, first taking a new one if it is
// older than Interval and no other caller is taking one.
func (g *Guard) current() *sample {
	s := g.last.Load()
	if g.opts.Now().Sub(s.at) >= g.opts.Interval && g.refreshing.CompareAndSwap(false, true) {
		s = g.measure()
		g.refreshing.Store(false)
	}
	return s
}

// measure takes a measurement, stores it and logs transitions.
func (g *Guard) measure() *sample {
	free, err := g.opts.Free(g.opts.Path)
	s := &sample{at: g.opts.Now(), free: free, err: err}
	g.last.Store(s)
	g.mu.Lock()
	defer g.mu.Unlock()
	log := g.opts.Logger
	switch {
	case err != nil:
		if !g.failing {
			log.Warn("cannot measure free disk space; writes are admitted", "path", g.opts.Path, "err", err)
		}
		g.failing = true
		return s
	case g.failing:
		log.Info("free disk space measured again", "path", g.opts.Path)
		g.failing = false
	}
	refusing := free < g.opts.Reserve
	if refusing != g.refusing {
		g.refusing = refusing
		if refusing {
			log.Error("disk full: refusing new writes until space is freed", "path", g.opts.Path,
				"free", Bytes(free), "reserve", Bytes(g.opts.Reserve))
		} else {
			log.Warn("disk space back above the reserve: accepting writes again", "path", g.opts.Path,
				"free", Bytes(free), "reserve", Bytes(g.opts.Reserve))
		}
	}
	return s
}

// Bytes formats n for people: "12.5 MiB".
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
