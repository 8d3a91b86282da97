package node

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node/diskspace"
)

// TestDiskReserveConfig: 0 takes the default reserve, -1 turns the guard
// off, anything below 1 MiB (other than -1) is refused by Validate.
func TestDiskReserveConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reserve int64
		want    int64  // effective reserve
		err     string // Validate error, "" for none
	}{
		{name: "default", reserve: 0, want: DefaultDiskReserve},
		{name: "off", reserve: DiskGuardOff, want: DiskGuardOff},
		{name: "1 MiB", reserve: 1 << 20, want: 1 << 20},
		{name: "too small", reserve: 512 << 10, err: "disk reserve 524288 bytes: want at least"},
		{name: "negative", reserve: -2, err: "disk reserve -2 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir())
			cfg.DiskReserveBytes = tc.reserve
			cfg = cfg.withDefaults()
			err := cfg.Validate()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Validate: %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.DiskReserveBytes != tc.want {
				t.Fatalf("reserve %d, want %d", cfg.DiskReserveBytes, tc.want)
			}
			g, err := newDiskGuard(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if (g == nil) != (tc.want == DiskGuardOff) {
				t.Fatalf("guard %v for reserve %d", g, tc.want)
			}
			if err := g.Check(); err != nil { // the temp dir has room (or the guard is off)
				t.Fatal(err)
			}
		})
	}
}

// TestGuardedLogs: below the floor the Raft log refuses appends and tail
// truncations, and still reads and compacts its head; above it everything
// passes.
func TestGuardedLogs(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 30)
	g, err := diskspace.New(diskspace.Options{Path: "/data", Reserve: 100 << 20, Interval: time.Nanosecond,
		Free: func(string) (uint64, error) { return free.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	inner := raft.NewInmemStore()
	logs := guardLogs(inner, g)
	entries := func(from, to uint64) []*raft.Log {
		var out []*raft.Log
		for i := from; i <= to; i++ {
			out = append(out, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte("x")})
		}
		return out
	}
	if err := logs.StoreLogs(entries(1, 10)); err != nil {
		t.Fatal(err)
	}
	free.Store(60 << 20) // below the reserve, above the floor (50 MiB)
	time.Sleep(time.Millisecond)
	if err := logs.StoreLog(entries(11, 11)[0]); err != nil {
		t.Fatalf("above the floor: %v", err)
	}
	free.Store(10 << 20)
	time.Sleep(time.Millisecond)
	if err := logs.StoreLogs(entries(12, 13)); !errors.Is(err, diskspace.ErrDiskFull) {
		t.Fatalf("StoreLogs below the floor: %v", err)
	}
	if err := logs.StoreLog(entries(12, 12)[0]); !errors.Is(err, diskspace.ErrDiskFull) {
		t.Fatalf("StoreLog below the floor: %v", err)
	}
	if err := logs.DeleteRange(9, 11); !errors.Is(err, diskspace.ErrDiskFull) {
		t.Fatalf("tail truncation below the floor: %v", err)
	}
	if err := logs.DeleteRange(1, 4); err != nil {
		t.Fatalf("head compaction below the floor: %v", err)
	}
	first, _ := logs.FirstIndex()
	last, _ := logs.LastIndex()
	var l raft.Log
	if first != 5 || last != 11 || logs.GetLog(11, &l) != nil {
		t.Fatalf("log %d..%d after refusals and a compaction, want 5..11", first, last)
	}
	free.Store(1 << 30)
	time.Sleep(time.Millisecond)
	if err := logs.StoreLogs(entries(12, 13)); err != nil {
		t.Fatalf("space returned: %v", err)
	}
	if guardLogs(inner, nil) != raft.LogStore(inner) {
		t.Fatal("with the guard off the store is not used as it is")
	}
}
