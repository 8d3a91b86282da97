package node

import (
	"runtime/debug"
	"testing"
)

// TestBuildVersion: a binary built from a git checkout reports its short
// revision (and whether the tree was modified), so that the nodes of a
// rolling upgrade tell apart in "verbund members"; without VCS
// information it reports the release alone.
func TestBuildVersion(t *testing.T) {
	bi := func(kv ...string) *debug.BuildInfo {
		b := &debug.BuildInfo{}
		for i := 0; i+1 < len(kv); i += 2 {
			b.Settings = append(b.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return b
	}
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"no build info", nil, "1.2.3"},
		{"no VCS", bi(), "1.2.3"},
		{"clean checkout", bi("vcs.revision", "a982a7a2f4ee5b3a", "vcs.modified", "false"), "1.2.3+a982a7a"},
		{"modified tree", bi("vcs.revision", "a982a7a2f4ee5b3a", "vcs.modified", "true"), "1.2.3+a982a7a-dirty"},
		{"short revision", bi("vcs.revision", "abc"), "1.2.3+abc"},
	} {
		if got := buildVersion("1.2.3", tc.bi); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
