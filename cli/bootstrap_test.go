package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/verbund/verbund/node"
)

// TestBootstrapThreeStates runs the README's bootstrap sequence as written,
// command by command: a new network from one operator key (with its offline
// recovery key), three state agencies registered by the operator, one
// municipality per state that joins and is approved by its own state's
// agency; an approval by a foreign state's agency and one with a wrong
// fingerprint are refused, naming the rule; finally the operator recovers
// its own keys with the offline recovery key, after which its old key signs
// nothing and the new one works.
func TestBootstrapThreeStates(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	newTestEnv(t)
	dir := t.TempDir()
	d := func(name string) string { return filepath.Join(dir, name) }

	// 1. The operator: keys, config, offline recovery key; genesis.
	out := mustRun(t, "init", "--org", "verbund-betrieb", "--kind", "network-operator", "--name", "Verbund-Betrieb", "--data", d("op"))
	contains(t, "init of the operator", out, []string{"Move it to offline storage NOW", node.RecoveryOfflineFile, "Recovery key:", "--bootstrap --genesis"})
	if _, err := os.Stat(filepath.Join(d("op"), node.RecoveryOfflineFile)); err != nil {
		t.Fatalf("offline recovery key: %v", err)
	}
	api := startNode(t, "--config", filepath.Join(d("op"), configFile), "--bootstrap", "--genesis",
		"--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--log-level", "warn")
	t.Setenv("VERBUND_ADDR", api)
	out = mustRun(t, "orgs", "get", "verbund-betrieb", "--linearizable")
	contains(t, "the operator's record", out, []string{"network-operator", "active", "verbund-betrieb-rec-"})
	op := []string{"--key", filepath.Join(d("op"), "keys", "signing.jwk"), "--as", "verbund-betrieb"}

	// 2. Three state agencies, registered by the operator with their keys.
	states := []struct{ id, name, code, dir, muni, muniName string }{
		{"land-09", "Bayern", "09", "by", "091620000000", "München"},
		{"land-08", "Baden-Württemberg", "08", "bw", "081110000000", "Stuttgart"},
		{"land-05", "Nordrhein-Westfalen", "05", "nw", "053150000000", "Köln"},
	}
	for _, s := range states {
		mustRun(t, "init", "--org", s.id, "--kind", "state-agency", "--name", s.name, "--state", s.code, "--data", d(s.dir))
		mustRun(t, append([]string{"org", "register", s.id, "--keys-from", d(s.dir), "--kind", "state-agency", "--name", s.name, "--state", s.code}, op...)...)
	}
	// A state agency may not register another state agency: that is the
	// operator's (federal level).
	mustRefuse(t, []string{"permission_denied", "organisation-approver"}, "org", "list", "land-16", "--kind", "state-agency", "--name", "Thüringen", "--state", "16",
		"--key", filepath.Join(d("by"), "keys", "signing.jwk"), "--as", "land-09")

	// 3. One municipality per state asks to join.
	fps := map[string]string{}
	for _, s := range states {
		out := mustRun(t, "init", "--org", s.muni, "--kind", "municipality", "--name", s.muniName, "--data", d(s.muni))
		initFP := fingerprint(t, out)
		out = mustRun(t, "join", "--network", api, "--data", d(s.muni))
		contains(t, "join of "+s.muni, out, []string{"pending", s.muni})
		if fps[s.muni] = fingerprint(t, out); fps[s.muni] != initFP {
			t.Errorf("%s: join shows fingerprint %s, init showed %s", s.muni, fps[s.muni], initFP)
		}
	}
	out = mustRun(t, "org", "pending", "--state", "09")
	contains(t, "Bayern's pending join requests", out, []string{"091620000000", fps["091620000000"]})
	if strings.Contains(out, "081110000000") {
		t.Errorf("Bayern's list shows Stuttgart:\n%s", out)
	}

	// 4. An approval by a foreign state's agency is refused, and so is one
	// with a fingerprint other than the pending keys'.
	by := []string{"--key", filepath.Join(d("by"), "keys", "signing.jwk"), "--as", "land-09"}
	mustRefuse(t, []string{"permission_denied", "rule organisation-approver", "081110000000"},
		append([]string{"org", "approve", "081110000000", "--fingerprint", fps["081110000000"], "--reason", "not mine"}, by...)...)
	mustRefuse(t, []string{"keys_sha256"},
		append([]string{"org", "approve", "091620000000", "--fingerprint", fps["081110000000"], "--reason", "wrong keys"}, by...)...)
	// The operator does not approve municipalities either.
	mustRefuse(t, []string{"permission_denied"},
		append([]string{"org", "approve", "091620000000", "--fingerprint", fps["091620000000"], "--reason", "operator"}, op...)...)
	for _, s := range states {
		out := mustRun(t, "orgs", "get", s.muni, "--linearizable")
		contains(t, s.muni+" after the refusals", out, []string{"pending"})
	}
	// Each state's agency approves its own.
	for _, s := range states {
		mustRun(t, "org", "approve", s.muni, "--fingerprint", fps[s.muni], "--reason", "keys compared by phone",
			"--key", filepath.Join(d(s.dir), "keys", "signing.jwk"), "--as", s.id, "--actor", "Erika Mustermann")
		out := mustRun(t, "orgs", "get", s.muni, "--linearizable")
		contains(t, s.muni+" after approval", out, []string{"active", "keys compared by phone", s.id})
	}
	out = mustRun(t, "history", "091620000000")
	contains(t, "München's history", out, []string{"verified (proof of possession)", "verified", "land-09", "Erika Mustermann"})

	// 5. The operator lost its signing key: its offline recovery key
	// re-binds it to new keys. The old key signs nothing after that.
	mustRun(t, "init", "--org", "verbund-betrieb", "--kind", "network-operator", "--name", "Verbund-Betrieb", "--data", d("op-new"))
	mustRun(t, "keys", "recover", "verbund-betrieb", "--new-keys", d("op-new"), "--reason", "signing key lost",
		"--key", filepath.Join(d("op"), node.RecoveryOfflineFile), "--as", "verbund-betrieb")
	mustRefuse(t, nil, append([]string{"org", "list", "fed-test", "--kind", "federal-agency", "--name", "Bundesamt (Test)"}, op...)...)
	mustRun(t, "org", "list", "fed-test", "--kind", "federal-agency", "--name", "Bundesamt (Test)",
		"--key", filepath.Join(d("op-new"), "keys", "signing.jwk"), "--as", "verbund-betrieb")
	// A recovery key that was replaced recovers nothing any more.
	mustRefuse(t, nil, "keys", "recover", "verbund-betrieb", "--new-keys", d("op"), "--reason", "again",
		"--key", filepath.Join(d("op"), node.RecoveryOfflineFile), "--as", "verbund-betrieb")
	out = mustRun(t, "history", "verbund-betrieb")
	contains(t, "the operator's history", out, []string{"verified (recovery key)"})
}
