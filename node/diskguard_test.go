package node

import (
	"strings"
	"testing"
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
