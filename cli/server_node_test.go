package cli

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/verbund/verbund/node"
)

// TestNodeLimitFlags: the rate limit and expiry flags reach the node's
// configuration; nonsense is refused with the flag's name.
func TestNodeLimitFlags(t *testing.T) {
	f := defaultNodeFlags()
	f.Org = "verbund-operator"
	f.AdminAddr = "127.0.0.1:9090"
	f.RateLimitQuery, f.RateLimitSignIn = "7:14", "0.5:3"
	f.RateLimitScale = 2
	f.ExpiryWarnCerts, f.ExpiryWarnKeys = "240h", "48h"
	cfg, err := f.config(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d := node.DefaultRateLimits()
	if cfg.RateLimits.Off || cfg.RateLimits.Query != (node.Budget{PerSecond: 14, Burst: 28}) ||
		cfg.RateLimits.SignIn != (node.Budget{PerSecond: 1, Burst: 6}) ||
		cfg.RateLimits.Write != (node.Budget{PerSecond: 2 * d.Write.PerSecond, Burst: 2 * d.Write.Burst}) {
		t.Fatalf("rate limits %+v", cfg.RateLimits)
	}
	if cfg.ExpiryWarnCerts != 240*time.Hour || cfg.ExpiryWarnKeys != 48*time.Hour || cfg.AdminAddr != "127.0.0.1:9090" {
		t.Fatalf("expiry windows %v %v, admin %q", cfg.ExpiryWarnCerts, cfg.ExpiryWarnKeys, cfg.AdminAddr)
	}
	if def, _ := defaultNodeFlags().config(io.Discard); def.RateLimits != d {
		t.Fatalf("without flags: %+v, want the defaults %+v", def.RateLimits, d)
	}
	f = defaultNodeFlags()
	f.RateLimits = "off"
	if cfg, _ := f.config(io.Discard); !cfg.RateLimits.Off {
		t.Fatal("--rate-limits off left them on")
	}
	for flag, set := range map[string]func(*nodeFlags){
		"--rate-limit-query": func(f *nodeFlags) { f.RateLimitQuery = "fast" },
		"--rate-limits":      func(f *nodeFlags) { f.RateLimits = "maybe" },
		"--rate-limit-scale": func(f *nodeFlags) { f.RateLimitScale = -1 },
		"--expiry-warn-keys": func(f *nodeFlags) { f.ExpiryWarnKeys = "a week" },
	} {
		f := defaultNodeFlags()
		set(&f)
		if _, err := f.config(io.Discard); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%s: error %v", flag, err)
		}
	}
}
