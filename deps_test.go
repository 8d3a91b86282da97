// Package verbund_test holds the architecture's import rules as a test.
//
// Imports point one way:
//
//	cmd -> cli -> node -> {registry, federation} -> keys -> proto
//
// and the demo data (sampledata) hangs off the command line only. The
// README's Layout section states the same rules; change both together.
package verbund_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/verbund/verbund"

// pkg is one package of this module and what it imports of this module,
// without its tests: paths relative to the module ("node", "federation/envelope").
type pkg struct {
	path    string
	imports []string // direct imports
	deps    []string // everything it links, transitively
}

// rule is one statement of the architecture: every package that from
// selects may import (directly, or with transitive everything it links)
// only what allowed admits.
type rule struct {
	name       string
	from       func(p string) bool
	allowed    func(p, imp string) bool
	transitive bool
}

// under reports whether p is one of the folders or inside one of them.
func under(folders ...string) func(p string) bool {
	return func(p string) bool {
		for _, f := range folders {
			if p == f || strings.HasPrefix(p, f+"/") {
				return true
			}
		}
		return false
	}
}

func not(f func(string) bool) func(string) bool { return func(p string) bool { return !f(p) } }

// only allows imports inside the folders.
func only(folders ...string) func(p, imp string) bool {
	in := under(folders...)
	return func(_, imp string) bool { return in(imp) }
}

// never forbids imports inside the folders.
func never(folders ...string) func(p, imp string) bool {
	in := under(folders...)
	return func(_, imp string) bool { return !in(imp) }
}

// rules are the architecture. proto/gen/... is the generated code of the
// .proto files: "registry" means the Go package registry (and its
// subpackages), not proto/gen/verbund/registry/v1.
var rules = []rule{
	{
		name:    "registry never imports node or federation",
		from:    under("registry"),
		allowed: never("node", "federation"),
	},
	{
		name:    "federation never imports node or registry",
		from:    under("federation"),
		allowed: never("node", "registry"),
	},
	{
		name: "the command line imports only node, registry (signing), keys, federation/envelope (limits), " +
			"federation/peertls (certificates), proto and sampledata",
		from:    func(p string) bool { return under("cli", "cmd")(p) && !under("cmd/verbund-bench")(p) },
		allowed: only("cli", "node", "registry", "keys", "federation/envelope", "federation/peertls", "proto", "sampledata"),
	},
	{
		name:    "the benchmark's command imports only the benchmark",
		from:    under("cmd/verbund-bench"),
		allowed: only("bench"),
	},
	{
		name:    "only the benchmark's command imports the benchmark",
		from:    not(under("bench", "cmd/verbund-bench")),
		allowed: never("bench"),
	},
	{
		name: "the benchmark drives nodes from outside: it imports only registry (signing), keys, " +
			"federation/envelope and federation/membership (crypto and gossip costs) and proto",
		from:    under("bench"),
		allowed: only("bench", "registry", "keys", "federation/envelope", "federation/membership", "proto"),
	},
	{
		name:    "only cmd imports the command line",
		from:    not(under("cmd", "cli")),
		allowed: never("cmd", "cli"),
	},
	{
		name:       "nothing but the command line links sampledata",
		from:       not(under("cli", "cmd", "sampledata")),
		allowed:    never("sampledata"),
		transitive: true,
	},
	{
		name:    "sampledata imports only registry, keys and proto",
		from:    under("sampledata"),
		allowed: only("sampledata", "registry", "keys", "proto"),
	},
	{
		name:    "keys imports only proto",
		from:    under("keys"),
		allowed: only("keys", "proto"),
	},
	{
		name:    "proto imports nothing of this module",
		from:    under("proto"),
		allowed: only("proto"),
	},
}

// violation is one import a rule forbids.
type violation struct {
	rule, from, imp string
	verb            string // "imports", or "links" for a transitive rule
}

func (v violation) String() string {
	return fmt.Sprintf("%s %s %s: breaks %q", v.from, v.verb, v.imp, v.rule)
}

// check returns every import of pkgs that breaks one of rules.
func check(rules []rule, pkgs []pkg) []violation {
	var out []violation
	for _, r := range rules {
		for _, p := range pkgs {
			if !r.from(p.path) {
				continue
			}
			imps, verb := p.imports, "imports"
			if r.transitive {
				imps, verb = p.deps, "links"
			}
			for _, imp := range imps {
				if !r.allowed(p.path, imp) {
					out = append(out, violation{rule: r.name, from: p.path, imp: imp, verb: verb})
				}
			}
		}
	}
	return out
}

// listPackages runs go list on the whole module and returns its packages
// with their non-test imports and dependencies inside the module.
func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	rel := func(paths []string) []string {
		var r []string
		for _, p := range paths {
			if p == module || strings.HasPrefix(p, module+"/") {
				r = append(r, strings.TrimPrefix(strings.TrimPrefix(p, module), "/"))
			}
		}
		return r
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath    string
			Imports, Deps []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, pkg{path: rel([]string{p.ImportPath})[0], imports: rel(p.Imports), deps: rel(p.Deps)})
	}
	return pkgs
}

// TestDependencyRules fails on every import of the module's non-test code
// that the architecture forbids, naming the rule and the import.
func TestDependencyRules(t *testing.T) {
	pkgs := listPackages(t)
	// The rules must see the packages they are about.
	for _, want := range []string{"cli", "cmd/verbund", "node", "registry", "federation/handover", "keys", "sampledata", "proto/gen/verbund/registry/v1"} {
		if !slices.ContainsFunc(pkgs, func(p pkg) bool { return p.path == want }) {
			t.Fatalf("go list did not report package %s", want)
		}
	}
	for _, v := range check(rules, pkgs) {
		t.Error(v)
	}
}

// TestDependencyRulesCatch feeds the rules a made-up module with one
// forbidden import per rule next to allowed ones: each rule must catch its
// import and nothing else.
func TestDependencyRulesCatch(t *testing.T) {
	pkgs := []pkg{
		{path: "cmd/verbund", imports: []string{"cli"}, deps: []string{"cli", "node", "sampledata"}},
		{path: "cli", imports: []string{"node", "registry", "keys", "federation/envelope", "federation/peertls", "proto/gen/verbund/registry/v1", "sampledata", "federation/handover"}},
		{path: "node", imports: []string{"registry", "federation/handover", "keys", "cli"}},
		{path: "node/nodetest", imports: []string{"node"}, deps: []string{"node", "sampledata"}},
		{path: "registry", imports: []string{"keys", "proto/gen/verbund/registry/v1", "registry/textsearch", "federation/envelope"}},
		{path: "registry/textsearch", imports: []string{"node/raftbadger"}},
		{path: "federation/membership", imports: []string{"registry", "proto/gen/verbund/registry/v1"}},
		{path: "federation/handover", imports: []string{"federation/envelope", "keys", "node"}},
		{path: "sampledata", imports: []string{"registry", "keys", "sampledata/internal/dldb", "federation/envelope"}},
		{path: "keys", imports: []string{"proto/gen/verbund/registry/v1", "registry"}},
		{path: "proto/gen/verbund/node/v1", imports: []string{"proto/gen/verbund/registry/v1", "keys"}},
		{path: "cmd/verbund-bench", imports: []string{"bench", "cli"}},
		{path: "bench", imports: []string{"registry", "keys", "federation/envelope", "federation/membership", "proto/gen/verbund/registry/v1", "node"}},
		{path: "e2e", imports: []string{"bench"}},
	}
	want := []string{
		"bench imports node",
		"cli imports federation/handover",
		"cmd/verbund-bench imports cli",
		"e2e imports bench",
		"federation/handover imports node",
		"federation/membership imports registry",
		"keys imports registry",
		"node imports cli",
		"node/nodetest links sampledata",
		"proto/gen/verbund/node/v1 imports keys",
		"registry imports federation/envelope",
		"registry/textsearch imports node/raftbadger",
		"sampledata imports federation/envelope",
	}
	var got []string
	rulesHit := map[string]bool{}
	for _, v := range check(rules, pkgs) {
		got = append(got, v.from+" "+v.verb+" "+v.imp)
		rulesHit[v.rule] = true
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("violations\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	for _, r := range rules {
		if !rulesHit[r.name] {
			t.Errorf("rule %q caught nothing", r.name)
		}
	}
}
