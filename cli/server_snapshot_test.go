package cli

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSnapshotCommandUsage: the snapshot and recover quorum commands check
// their flags and refuse what is not a backup or not a data dir.
func TestSnapshotCommandUsage(t *testing.T) {
	newTestEnv(t)
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.snap")
	os.WriteFile(junk, []byte("not a backup at all"), 0o600)
	for _, tc := range []struct {
		name string
		args []string
		code int
		err  []string
	}{
		{"save without FILE", []string{"snapshot", "save"}, 2, []string{"usage: verbund snapshot save FILE"}},
		{"restore without flags", []string{"snapshot", "restore", junk}, 2, []string{"--data, --node-id and --raft-addr are required"}},
		{"restore --handovers without --data", []string{"snapshot", "restore", junk, "--handovers"}, 2, []string{"--data is required"}},
		{"inspect junk", []string{"snapshot", "inspect", junk}, 1, []string{"backup file corrupt: not a verbund backup"}},
		{"restore junk", []string{"snapshot", "restore", junk, "--data", filepath.Join(dir, "r"), "--node-id", "r0", "--raft-addr", "127.0.0.1:1"}, 1, []string{"not a verbund backup"}},
		{"restore handovers into a non-node dir", []string{"snapshot", "restore", junk, "--handovers", "--data", dir}, 1, []string{"does not look like a node's data dir"}},
		{"quorum without voters", []string{"recover", "quorum", "--data", dir}, 2, []string{"--data and --voters are required"}},
		{"quorum bad voters", []string{"recover", "quorum", "--data", dir, "--voters", "n0"}, 1, []string{"want ID=HOST:PORT"}},
		{"quorum on a non-node dir", []string{"recover", "quorum", "--data", dir, "--voters", "n0=127.0.0.1:1"}, 1, []string{"does not look like the data dir of a Raft server"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := cli(t, nil, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			contains(t, "stderr", stderr, tc.err)
		})
	}
}
