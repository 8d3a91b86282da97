package cli

import (
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/verbund/verbund/node"
)

// TestExampleConfig: docs/verbund.example.yaml loads as "verbund node
// --config" reads it, lists every key the node takes, and (apart from the
// organisation) gives a node the defaults.
func TestExampleConfig(t *testing.T) {
	const path = "../docs/verbund.example.yaml"
	f := defaultNodeFlags()
	if err := readConfigFile(path, &f); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.config(io.Discard)
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	// A node accepts it (New validates it and opens the storage; nothing
	// listens before Start).
	withDir := cfg
	withDir.DataDir = t.TempDir()
	n, err := node.New(withDir)
	if err != nil {
		t.Fatalf("a node refuses the example config: %v", err)
	}
	n.Close()
	d := node.DefaultConfig()
	if cfg.HTTPAddr != d.HTTPAddr || cfg.RaftAddr != d.RaftAddr || cfg.DataDir != d.DataDir || cfg.Role != d.Role || cfg.Voters != d.Voters ||
		cfg.DeadServerGrace != d.DeadServerGrace || cfg.DiskReserveBytes != d.DiskReserveBytes || cfg.ReadyMaxLag != d.ReadyMaxLag ||
		cfg.ExpiryWarnCerts != d.ExpiryWarnCerts || cfg.ExpiryWarnKeys != d.ExpiryWarnKeys {
		t.Errorf("the example's values differ from the defaults it claims:\n%+v", cfg)
	}
	if cfg.RateLimits != node.DefaultRateLimits() {
		t.Errorf("example rate limits %+v, defaults %+v", cfg.RateLimits, node.DefaultRateLimits())
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(raw, &keys); err != nil {
		t.Fatal(err)
	}
	ty := reflect.TypeFor[nodeFlags]()
	for i := range ty.NumField() {
		key, _, _ := strings.Cut(ty.Field(i).Tag.Get("yaml"), ",")
		if _, ok := keys[key]; !ok {
			t.Errorf("the example config does not list %q", key)
		}
	}
}
